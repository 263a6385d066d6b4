"""What preprocessing needs from the whole dataset, recorded in its metadata (so that a streamed dataset is
read once, in training): the observations' mean and std per dimension (none for images, which the networks
scale by 1/255 themselves) and the range of trajectory returns.

`of` computes them from transitions held in memory (a conversion); `Gathered` from parts seen one at a time
(an RLDS dataset scanned once to be streamed as it is, which is never held whole), merging each part's mean
and sum of squared deviations (Chan, Golub & LeVeque's pairwise update), so the figures agree with `of`'s
to float64 rounding.
"""

from typing import Any, Dict

import numpy as np

from iql_tf.data import rewards
from iql_tf.data.transitions import Transitions, holds_frames


def of(transitions: Transitions) -> Dict[str, Any]:
    """The statistics of transitions held whole."""
    observations = transitions["observations"]
    returns = rewards.trajectory_returns(transitions["rewards"], transitions["dones"])
    image = holds_frames(observations)  # (parts: none either, as their vectors are not normalised)
    return {
        "observation_mean": [] if image else observations.mean(axis=0, dtype=np.float64).tolist(),
        "observation_std": [] if image else observations.std(axis=0, dtype=np.float64).tolist(),
        "trajectory_return_min": float(returns.min()),
        "trajectory_return_max": float(returns.max()),
        "trajectory_length_max": int(rewards.trajectory_lengths(transitions["dones"]).max()),
    }


class Gathered:
    """The statistics of whole trajectories added one part at a time, with the counts a dataset's metadata
    records (`num_transitions`, `num_episodes`)."""

    def __init__(self):
        self.num_transitions = self.num_episodes = 0
        self._mean = self._squares = None
        self._return_min, self._return_max = np.inf, -np.inf
        self._length_max = 0

    def add(self, part: Transitions) -> None:
        """One or more whole trajectories (the last row of `part` ends one)."""
        count = len(part["rewards"])
        if not count:
            return
        # Images have no statistics (`of`): none of their values are read.
        observations = np.zeros((count, 0)) if holds_frames(part["observations"]) else \
            part["observations"].astype(np.float64)
        mean = observations.mean(axis=0)
        squares = ((observations - mean) ** 2).sum(axis=0)
        if self._mean is None:
            self._mean, self._squares = mean, squares
        else:
            total = self.num_transitions + count
            delta = mean - self._mean
            self._squares = self._squares + squares + delta ** 2 * self.num_transitions * count / total
            self._mean = self._mean + delta * count / total
        self.num_transitions += count
        returns = rewards.trajectory_returns(part["rewards"], part["dones"])
        self.num_episodes += len(returns)
        self._return_min = min(self._return_min, float(returns.min()))
        self._return_max = max(self._return_max, float(returns.max()))
        self._length_max = max(self._length_max, int(rewards.trajectory_lengths(part["dones"]).max()))

    def statistics(self) -> Dict[str, Any]:
        return {"observation_mean": self._mean.tolist(),
                "observation_std": np.sqrt(self._squares / self.num_transitions).tolist(),
                "trajectory_return_min": self._return_min, "trajectory_return_max": self._return_max,
                "trajectory_length_max": self._length_max}
