"""Confidence intervals by rliable's stratified bootstrap, drawn from a random generator that is really used.

rliable 1.2.0's `StratifiedBootstrap` and `StratifiedIndependentBootstrap` take a `random_state`, but draw
their resampling indices from numpy's global random state (`np.random.choice` in `update_indices`): the same
scores and seed gave another interval whenever anything had drawn from the global state before (a test, a
library, an earlier interval in the same process). The two subclasses here draw the same indices from the
bootstrap's own numpy `Generator` (arch's `generator`, seeded with `seed`), and every interval gets a
generator of its own, so an interval depends only on the scores, the statistic, `reps` and `seed`: the same
on every call, in every process, on every machine. Everything else is rliable's and arch's: the strata, the
statistics (`rliable.metrics`: IQM, mean, optimality gap, probability of improvement) and arch's percentile
intervals.
"""

from typing import Callable, Dict, Mapping, Sequence, Tuple, Union

import numpy as np
from rliable import library as rly

Scores = Union[np.ndarray, Sequence[np.ndarray]]  # [runs, tasks, ...], or a list of such (independent samples)
Statistic = Callable[..., np.ndarray]
CONFIDENCE = 0.95


class StratifiedBootstrap(rly.StratifiedBootstrap):
    """rliable's stratified bootstrap (runs resampled within each task) on its own generator."""

    def update_indices(self) -> Tuple[np.ndarray, ...]:
        indices = self.generator.choice(self._num_items, self._args_shape, replace=True)
        return (indices, *self._strata_indices)


class StratifiedIndependentBootstrap(rly.StratifiedIndependentBootstrap):
    """rliable's independent-samples stratified bootstrap (each input resampled on its own, for statistics of
    several score arrays such as the probability of improvement) on its own generator."""

    def _get_indices(self, num_runs: int, array_shape: Tuple[int, ...],
                     strata_indices: Sequence[np.ndarray]) -> Tuple[np.ndarray, ...]:
        return (self.generator.choice(num_runs, array_shape, replace=True), *strata_indices)


def estimates(scores: Mapping[str, Scores], statistic: Statistic, reps: int, seed: int
              ) -> Tuple[Dict[str, np.ndarray], Dict[str, np.ndarray]]:
    """rliable's `get_interval_estimates` (percentile method, 95 %): ({name: point}, {name: [low, high]}), each
    interval drawn from a generator seeded with `seed`, whatever else the mapping holds."""
    points, intervals = {}, {}
    for name, value in scores.items():
        if isinstance(value, np.ndarray):
            bootstrap = StratifiedBootstrap(value, seed=np.random.default_rng(seed))
            points[name] = statistic(value)
        else:
            bootstrap = StratifiedIndependentBootstrap(*value, seed=np.random.default_rng(seed))
            points[name] = statistic(*value)
        intervals[name] = bootstrap.conf_int(statistic, reps=reps, size=CONFIDENCE, method="percentile")
    return points, intervals


def interval(scores: Mapping[str, Scores], statistic: Statistic, reps: int, seed: int
             ) -> Dict[str, Tuple[float, float, float]]:
    """{name: (point, low, high)} of a statistic that returns one number."""
    points, intervals = estimates(scores, statistic, reps, seed)
    return {name: (float(np.squeeze(points[name])), float(np.squeeze(intervals[name][0])),
                   float(np.squeeze(intervals[name][1]))) for name in scores}


def mean_interval(values: Sequence[float], reps: int = 2000, seed: int = 0) -> Tuple[float, float, float]:
    """(mean, low, high): the mean of one task's runs and its interval."""
    scores = np.asarray(values, np.float64).reshape(-1, 1)  # [runs, tasks]
    return interval({"x": scores}, lambda x: np.array([np.mean(x)]), reps, seed)["x"]
