"""Checks of source arrays and spaces. Each check records what it finds in a `Report` instead of stopping,
so the converter can refuse a source with its first problem while `iql-validate` lists all of them.

`where` is the file (and, for Minari, the episode) the arrays came from; rows are those of the source, so
the user can find them.
"""

import dataclasses
from typing import List, Mapping, Optional, Sequence

import gymnasium as gym
import numpy as np

from iql_tf.errors import UserError

# Actions beyond their bounds by more than this fraction of the half-range are in other units, not rounding
# noise (for [-1, 1]: 1e-3).
ACTION_TOLERANCE = 1e-3
_SHOWN_ROWS = 5


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

    def check_keys(self, where: str, arrays: Mapping[str, object], required: Sequence[str]) -> bool:
        missing = [key for key in required if key not in arrays]
        for key in missing:
            self.add(where, None, f"missing field {key!r} (found {sorted(arrays)})",
                     f"a D4RL-style source needs {', '.join(required)} (next_observations optional)")
        return not missing

    def check_array(self, where: str, field: str, array: np.ndarray, shape: Sequence[Optional[int]]
                    ) -> Optional[np.ndarray]:
        """Numeric dtype, shape (None = any size) and finite values; the array as float32, or None when its
        dtype or shape make it unusable."""
        if array.dtype.kind not in "biuf":
            self.add(where, field, f"has dtype {array.dtype}, expected numbers (float, int or bool)",
                     "store it as a numeric array")
            return None
        if array.ndim != len(shape) or any(want not in (None, got) for want, got in zip(shape, array.shape)):
            expected = ", ".join("N" if i == 0 and want is None else "dim" if want is None else str(want)
                                 for i, want in enumerate(shape))
            self.add(where, field, f"has shape {list(array.shape)}, expected [{expected}]",
                     "one row per step, matching the other fields")
            return None
        with np.errstate(over="ignore"):  # overflow to inf is reported below
            values = array.astype(np.float32, copy=False)
        bad = ~np.isfinite(values)
        if bad.any():
            row = _first_row(bad)
            self.add(where, field, f"holds {_first_value(array, bad, row)} (non-finite as float32)",
                     "remove or repair that row", bad)
        return values

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
    """The policy needs a bounded Box: its tanh output in [-1, 1] is rescaled to the bounds."""
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


def format_bounds(low: np.ndarray, high: np.ndarray) -> str:
    """[-2, 2] when every dimension shares its bounds, else the per-dimension lists."""
    if np.all(low == low.flat[0]) and np.all(high == high.flat[0]):
        return f"[{low.flat[0]:g}, {high.flat[0]:g}]"
    return f"[{list(map(float, low))}, {list(map(float, high))}]"


def _first_row(bad: np.ndarray) -> int:
    return int(np.argmax(bad.reshape(len(bad), -1).any(axis=1)))


def _first_value(array: np.ndarray, bad: np.ndarray, row: int) -> str:
    return f"{np.asarray(array[row])[np.asarray(bad[row])].flat[0]:.6g}"
