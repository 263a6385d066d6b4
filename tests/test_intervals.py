"""Intervals: rliable's stratified bootstrap, drawn from a generator of its own, the same on every call."""

import numpy as np
import pytest
from rliable import metrics

from iql_tf import intervals

IQM = lambda scores: np.array([metrics.aggregate_iqm(scores)])  # noqa: E731


def test_an_interval_is_the_same_whatever_was_drawn_from_numpys_global_state_before():
    # rliable's own bootstrap draws its indices from np.random's global state, so that these two calls differed.
    scores = {"x": np.array([[0.4], [0.6], [0.8], [0.1], [0.9]])}
    np.random.seed(1)
    first = intervals.interval(scores, IQM, reps=500, seed=3)
    np.random.seed(2)
    np.random.random(7)
    assert intervals.interval(scores, IQM, reps=500, seed=3) == first
    assert intervals.interval(scores, IQM, reps=500, seed=4) != first  # the seed is what it depends on


def test_each_interval_depends_on_its_own_scores_only_not_on_what_else_is_asked():
    x, y = np.arange(10.0).reshape(-1, 1) ** 2, np.array([[3.0], [3.5], [9.0]])
    alone = intervals.interval({"x": x}, IQM, reps=300, seed=0)["x"]
    assert intervals.interval({"y": y, "x": x}, IQM, reps=300, seed=0)["x"] == alone
    assert intervals.interval({"x": x}, IQM, reps=300, seed=1)["x"] != alone


def test_the_probability_of_improvement_is_seeded_too():
    pair = {"a > b": (np.array([[1.0], [2.0], [3.0], [0.0]]), np.array([[0.5], [2.5], [1.0]]))}
    np.random.seed(1)
    first = intervals.interval(pair, metrics.probability_of_improvement, reps=300, seed=0)
    np.random.seed(2)
    assert intervals.interval(pair, metrics.probability_of_improvement, reps=300, seed=0) == first
    point, low, high = first["a > b"]
    assert 0.0 <= low <= point <= high <= 1.0


def test_the_interval_of_a_mean_lies_within_the_runs():
    mean, low, high = intervals.mean_interval([0.4, 0.6, 0.8])
    assert mean == pytest.approx(0.6) and 0.4 - 1e-9 <= low < mean < high <= 0.8 + 1e-9
    assert intervals.mean_interval([0.2, 0.2]) == pytest.approx((0.2, 0.2, 0.2))
