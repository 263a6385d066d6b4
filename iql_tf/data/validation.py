"""Checks of source arrays and spaces. Each check records what it finds in a `Report` instead of stopping,
so the converter can refuse a source with its first problem while `iql-validate` lists all of them.

`where` is the file (and, for Minari, the episode) the arrays came from; rows are those of the source, so
the user can find them.
"""

import dataclasses
import difflib
from typing import List, Mapping, Optional, Sequence

import gymnasium as gym
import numpy as np

from iql_tf.data.transitions import is_image
from iql_tf.errors import UserError

# Actions beyond their bounds by more than this fraction of the half-range are in other units, not rounding
# noise (for [-1, 1]: 1e-3).
ACTION_TOLERANCE = 1e-3
_SHOWN_ROWS = 5
# Frames [h, w, c] of at most this many rows, and fewer rows than columns and channels, are taken for
# channels-first [c, h, w] (4 stacked RGB frames are 12 channels; no camera gives images a dozen pixels high).
_MAX_CHANNELS = 12
REQUIRED_ROW_FIELDS = ("observations", "actions", "rewards", "terminals", "timeouts")

# What other loggers (gymnasium, Minari, RLlib, D4RL's infos) call the D4RL fields: a missing field is looked
# for among these before a close spelling.
FIELD_ALIASES = {
    "observations": ("observation", "obs", "states", "state", "s"),
    "actions": ("action", "act", "acts", "a"),
    "rewards": ("reward", "rew", "rews", "r"),
    "terminals": ("terminal", "terminations", "termination", "terminated", "dones", "done"),
    "timeouts": ("timeout", "truncations", "truncation", "truncated", "time_limits"),
    "next_observations": ("next_observation", "next_obs", "next_states", "next_state", "new_obs", "obs_next"),
    "episode_id": ("episode_ids", "episode", "episodes", "episode_index", "episode_idx", "ep_id", "trajectory_id",
                   "traj_id", "trajectory"),
}
FIELD_MEANINGS = {
    "terminals": "1 where the environment terminated, with no bootstrap: a time limit is a timeout, not a terminal",
    "timeouts": "1 on the last row of each episode that ends without terminating: a time limit, or the end of the "
                "log",
}


@dataclasses.dataclass(frozen=True)
class Problem:
    """One thing wrong with a source: where, which field, what, how to fix it, and the rows it affects."""

    where: str
    field: Optional[str]
    what: str
    fix: str
    rows: Sequence[int] = ()  # the first offending rows
    count: int = 0  # how many rows in all

    def line(self) -> str:
        field = f" field {self.field!r}" if self.field else ""
        row = f" row {self.rows[0]}" if self.rows else ""
        more = ""
        if self.count > 1:
            shown = ", ".join(str(r) for r in self.rows) + (", ..." if self.count > len(self.rows) else "")
            more = f" ({self.count} rows in all: {shown})"
        return f"{self.where}:{field}{row} {self.what}; {self.fix}{more}"


class Report:
    """The problems found so far, in the order found."""

    def __init__(self):
        self.problems: List[Problem] = []

    def add(self, where: str, field: Optional[str], what: str, fix: str, bad: Optional[np.ndarray] = None) -> None:
        rows, count = (), 0
        if bad is not None:
            flat = bad.reshape(len(bad), -1).any(axis=1)
            rows, count = tuple(int(r) for r in np.flatnonzero(flat)[:_SHOWN_ROWS]), int(flat.sum())
        self.problems.append(Problem(where, field, what, fix, rows, count))

    def raise_first(self, source: str) -> None:
        """A UserError with the first problem, saying how many more there are."""
        if not self.problems:
            return
        message = self.problems[0].line()
        if len(self.problems) > 1:
            message += f" (and {len(self.problems) - 1} more problem(s): `iql-validate {source}` lists them all)"
        raise UserError(message)

    def check_keys(self, where: str, arrays: Mapping[str, object], required: Sequence[str],
                   names: Optional[Sequence[str]] = None) -> bool:
        """Every field of `required` in `arrays`; `names`: all that the source holds (default: `arrays`' keys),
        shown and searched for the likely match of a missing field."""
        names = sorted(arrays if names is None else names)
        missing = [key for key in required if key not in arrays]
        for key in missing:
            self.add(where, None, f"missing field {key!r} (the source has {names})",
                     f"{_missing_field_fix(key, names)}; a D4RL-style source needs {', '.join(REQUIRED_ROW_FIELDS)} "
                     "(next_observations optional)")
        return not missing

    def check_not_misnamed(self, where: str, field: str, arrays: Mapping[str, object], names: Sequence[str]
                           ) -> None:
        """An optional `field` that the source holds under another name would be silently left out."""
        alias = _alias_in(field, names)
        if field not in arrays and alias is not None:
            self.add(where, None, f"holds {alias!r}, which is not read: the field's name is {field!r}",
                     f"store it as {field!r} to use it, or drop it")

    def check_array(self, where: str, field: str, array: np.ndarray, shape: Sequence[Optional[int]]
                    ) -> Optional[np.ndarray]:
        """Numeric dtype, shape (None = any size, but no width of 0) and finite values; the array as float32, or
        None when its dtype or shape make it unusable."""
        if not self._check_dtype_and_shape(where, field, array, shape, "biuf", "numbers (float, int or bool)"):
            return None
        with np.errstate(over="ignore"):  # overflow to inf is reported below
            values = array.astype(np.float32, copy=False)
        self._check_finite(where, field, array, values)
        return values

    def check_observations(self, where: str, field: str, array: np.ndarray, rows: Optional[int] = None,
                           row_shape: Optional[Sequence[int]] = None) -> Optional[np.ndarray]:
        """Observations of `rows` rows (None: any) shaped `row_shape` (None: any): images (`is_image`, kept as
        uint8: the networks scale them) or vectors (`check_array`'s float32); None when unusable."""
        if array.ndim == 4 and not is_image(array) and array.dtype.kind in "biuf":
            scale = "they look like 0-1: (frames * 255).round().astype(np.uint8)" if array.size and np.nanmax(
                array) <= 1.0 else "0-255: frames.astype(np.uint8)"
            self.add(where, field, f"holds frames [N, h, w, c] of dtype {array.dtype}",
                     f"image observations are uint8 pixels 0-255, which the networks scale by 1/255 themselves; "
                     f"convert them ({scale})")
            return None
        if not is_image(array):
            return self.check_array(where, field, array, (rows, None if row_shape is None else row_shape[0]))
        if array.shape[1] <= _MAX_CHANNELS and array.shape[1] < min(array.shape[2:]):
            self.add(where, field, f"holds frames of shape {list(array.shape[1:])}, channels first by the look of "
                     "them", "give images as [N, height, width, channels]: np.moveaxis(frames, 1, -1)")
            return None
        shape = (rows, *(row_shape or (None, None, None)))
        return np.asarray(array) if self._check_dtype_and_shape(where, field, array, shape, "u", "uint8") else None

    def check_episode_ids(self, where: str, field: str, ids: np.ndarray, rows: int) -> Optional[np.ndarray]:
        """One id per row (numbers or strings), each episode's rows together; the last row of each episode
        (True), or None when the ids are unusable."""
        if not self._check_dtype_and_shape(where, field, ids, (rows,), "biufUS", "numbers or strings"):
            return None
        if ids.dtype.kind == "f" and not self._check_finite(where, field, ids, ids):
            return None
        starts = np.ones(rows, bool)
        starts[1:] = ids[1:] != ids[:-1]
        start_rows = np.flatnonzero(starts)
        _, first_starts = np.unique(ids[start_rows], return_index=True)
        again = np.zeros(rows, bool)
        again[np.delete(start_rows, first_starts)] = True
        if again.any():
            row = _first_row(again)
            self.add(where, field, f"starts episode {ids[row].item()!r} again after other episodes",
                     "the rows of an episode must be together: sort them by episode, keeping their order (e.g. "
                     "frame.sort_values('episode_id', kind='stable'))", again)
            return None
        return np.roll(starts, -1)  # an episode ends where the next starts, and at the last row

    def _check_dtype_and_shape(self, where: str, field: str, array: np.ndarray, shape: Sequence[Optional[int]],
                               kinds: str, expected_kind: str) -> bool:
        if array.dtype.kind not in kinds:
            self.add(where, field, f"has dtype {array.dtype}, expected {expected_kind}",
                     "store it as a numeric array" if kinds == "biuf" else f"store it as {expected_kind}")
            return False
        if array.ndim != len(shape) or any(want not in (None, got) for want, got in zip(shape, array.shape)):
            expected = ", ".join("N" if i == 0 and want is None else "dim" if want is None else str(want)
                                 for i, want in enumerate(shape))
            self.add(where, field, f"has shape {list(array.shape)}, expected [{expected}]",
                     "one row per step, matching the other fields")
            return False
        if 0 in array.shape[1:]:
            self.add(where, field, f"has shape {list(array.shape)}: no values in a row",
                     "store at least one value per row (the networks need an observation and an action of "
                     "one number at least)")
            return False
        return True

    def _check_finite(self, where: str, field: str, array: np.ndarray, values: np.ndarray) -> bool:
        bad = ~np.isfinite(values)
        if bad.any():
            row = _first_row(bad)
            self.add(where, field, f"holds {_first_value(array, bad, row)} (non-finite as float32)",
                     "remove or repair that row", bad)
        return not bad.any()

    def check_flags(self, where: str, field: str, values: np.ndarray) -> None:
        bad = (values != 0) & (values != 1)
        if bad.any():
            self.add(where, field, f"has value {values[_first_row(bad)]:g}, expected 0 or 1",
                     "store terminals and timeouts as booleans", bad)

    def check_actions(self, where: str, actions: np.ndarray, low: np.ndarray, high: np.ndarray,
                      bounds_from: Optional[str]) -> None:
        """Actions within the action space's bounds (in the dataset's own units), up to a small tolerance."""
        slack = ACTION_TOLERANCE * (high - low) / 2
        bad = (actions < low - slack) | (actions > high + slack)
        if not bad.any():
            return
        row = _first_row(bad)
        value = _first_value(actions, bad, row)
        if bounds_from is None:
            self.add(where, "actions", f"has value {value} outside [-1, 1] (by more than {ACTION_TOLERANCE:g})",
                     "no environment gives this dataset's action bounds, so they are taken as [-1, 1]: name the "
                     "environment it was collected in (make_dataset.env_id, the converter's --env_id) or give the "
                     "bounds (make_dataset.action_bounds, --action_bounds)", bad)
        else:
            self.add(where, "actions", f"has value {value} outside the action space {format_bounds(low, high)} of "
                     f"{bounds_from}", "the actions are in other units than the environment's; store them in its "
                     "units, or name the environment they were collected in", bad)

    def check_not_empty(self, where: str, num_transitions: int) -> None:
        if num_transitions == 0:
            self.add(where, None, "the dataset is empty (no transitions once episodes are split)", "check the source")


def check_action_space(where: str, space: gym.Space) -> None:
    """The policy needs a bounded Box: its output, in or clipped to [-1, 1], is rescaled to the bounds."""
    if not isinstance(space, gym.spaces.Box):
        raise UserError(f"{where}: action space {space} is not a Box; iql-tf learns continuous actions only: "
                        "choose an environment with a Box action space")
    unbounded = np.flatnonzero(~(np.isfinite(space.low) & np.isfinite(space.high)).ravel())
    if unbounded.size:
        raise UserError(
            f"{where}: action space {space} is unbounded in dimension(s) {unbounded.tolist()}; iql-tf maps its "
            "policy's [-1, 1] onto the action bounds, so they must be finite: use an environment whose action "
            "space is bounded (e.g. wrapped in gymnasium.wrappers.RescaleAction) and data collected in it"
        )


def likely_name(field: str, names: Sequence[str]) -> Optional[str]:
    """The name in `names` most likely to hold `field`: a known alias (any case), else a close spelling that is
    not itself another field's name."""
    alias = _alias_in(field, names)
    if alias is not None:
        return alias
    close = difflib.get_close_matches(field, [name for name in names if name not in FIELD_ALIASES], n=1)
    return close[0] if close else None


def _alias_in(field: str, names: Sequence[str]) -> Optional[str]:
    by_lower = {name.lower(): name for name in names}
    return next((by_lower[alias] for alias in FIELD_ALIASES.get(field, ()) if alias in by_lower), None)


def _missing_field_fix(field: str, names: Sequence[str]) -> str:
    meaning = f" ({FIELD_MEANINGS[field]})" if field in FIELD_MEANINGS else ""
    guess = likely_name(field, names)
    fix = f"did you mean {guess!r}? store it as {field!r}{meaning}" if guess else f"add it{meaning}"
    if field == "timeouts":
        fix += (", e.g. from the episode ends: timeouts = np.zeros(N, bool); timeouts[last_rows] = True; "
                "timeouts &= ~terminals; or store 'episode_id' (one id per row) instead and they are made from it")
    return fix


def format_bounds(low: np.ndarray, high: np.ndarray) -> str:
    """[-2, 2] when every dimension shares its bounds, else the per-dimension lists."""
    if np.all(low == low.flat[0]) and np.all(high == high.flat[0]):
        return f"[{low.flat[0]:g}, {high.flat[0]:g}]"
    return f"[{list(map(float, low))}, {list(map(float, high))}]"


def _first_row(bad: np.ndarray) -> int:
    return int(np.argmax(bad.reshape(len(bad), -1).any(axis=1)))


def _first_value(array: np.ndarray, bad: np.ndarray, row: int) -> str:
    return f"{np.asarray(array[row])[np.asarray(bad[row])].flat[0]:.6g}"
