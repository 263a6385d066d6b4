"""Checks of source arrays and action spaces, each failing with one UserError that names the file, field and row.

`where` is the file (and, for Minari, the episode) the arrays came from; rows are those of the source, so
the user can find them.
"""

from typing import Mapping, Optional, Sequence

import gymnasium as gym
import numpy as np

from iql_tf.errors import UserError

# SPEC.md section 2: actions beyond [-1, 1] by more than this are in the wrong units, not rounding noise.
ACTION_TOLERANCE = 1e-3


def check_keys(where: str, arrays: Mapping[str, object], required: Sequence[str]) -> None:
    for key in required:
        if key not in arrays:
            raise UserError(
                f"{where}: missing field {key!r} (found {sorted(arrays)}); a D4RL-style source needs "
                f"{', '.join(required)} (next_observations optional)"
            )


def check_array(where: str, field: str, array: np.ndarray, shape: Sequence[Optional[int]]) -> np.ndarray:
    """Numeric dtype, shape (None = any size) and finite values; returns the array as float32."""
    if array.dtype.kind not in "biuf":
        raise UserError(
            f"{where}: field {field!r} has dtype {array.dtype}, expected numbers (float, int or bool); "
            "store it as a numeric array"
        )
    if array.ndim != len(shape) or any(want not in (None, got) for want, got in zip(shape, array.shape)):
        expected = ", ".join("N" if i == 0 and want is None else "dim" if want is None else str(want)
                             for i, want in enumerate(shape))
        raise UserError(
            f"{where}: field {field!r} has shape {list(array.shape)}, expected [{expected}] "
            "(one row per step, matching the other fields)"
        )
    with np.errstate(over="ignore"):  # overflow to inf is reported below
        values = array.astype(np.float32, copy=False)
    bad = ~np.isfinite(values)
    if bad.any():
        row = _first_row(bad)
        raise UserError(
            f"{where}: field {field!r} row {row} holds {_first_value(array, bad, row)} (non-finite as float32); "
            "remove or repair that row"
        )
    return values


def check_flags(where: str, field: str, values: np.ndarray) -> None:
    bad = (values != 0) & (values != 1)
    if bad.any():
        row = _first_row(bad)
        raise UserError(f"{where}: field {field!r} row {row} has value {values[row]}, expected 0 or 1")


def check_actions(where: str, field: str, actions: np.ndarray) -> None:
    bad = np.abs(actions) > 1.0 + ACTION_TOLERANCE
    if bad.any():
        row = _first_row(bad)
        raise UserError(
            f"{where}: field {field!r} row {row} has value {_first_value(actions, bad, row)} outside [-1, 1] "
            f"(by more than {ACTION_TOLERANCE:g}): the actions look unnormalised; rescale them to the action space"
        )


def check_action_space(where: str, space: gym.Space) -> None:
    """The policy acts in [-1, 1] (tanh), so data and environments must too: a Box within [-1, 1]."""
    is_box = isinstance(space, gym.spaces.Box)
    if not is_box or np.any(np.abs([space.low, space.high]) > 1.0 + ACTION_TOLERANCE):
        raise UserError(
            f"{where}: action space {space} is not a Box within [-1, 1]; iql-tf learns continuous actions in "
            "[-1, 1] only: rescale the environment's actions (gymnasium.wrappers.RescaleAction) and register it "
            "under a new id, or choose another environment"
        )


def check_not_empty(where: str, num_transitions: int) -> None:
    if num_transitions == 0:
        raise UserError(f"{where}: the dataset is empty (no transitions once episodes are split); check the source")


def _first_row(bad: np.ndarray) -> int:
    return int(np.argmax(bad.reshape(len(bad), -1).any(axis=1)))


def _first_value(array: np.ndarray, bad: np.ndarray, row: int) -> str:
    return f"{np.asarray(array[row])[np.asarray(bad[row])].flat[0]:.6g}"
