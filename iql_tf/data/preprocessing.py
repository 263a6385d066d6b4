"""How the networks see an environment: observations (optionally normalised), actions in [-1, 1], rewards
preprocessed per domain. One `Preprocessing` is fixed when the offline dataset is loaded and applied alike to
the offline data, to online transitions, in evaluation and inside the exported policy, so that deployment
code feeds raw observations and receives actions in the environment's units.
"""

import dataclasses
from typing import Any, Callable, Dict, Optional

import numpy as np

from iql_tf.data import rewards as rewards_lib

# Added to the observation std, as TD3+BC's normalisation does: constant features must not divide by ~0.
STD_EPSILON = 1e-3
# Dataset actions are clipped to this in [-1, 1] units, as the reference's loader does (1 - 1e-5).
ACTION_LIMIT = 1.0 - 1e-5


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """Observation normalisation (mean 0 / std 1 when off), action bounds and the reward transform."""

    observation_mean: np.ndarray
    observation_std: np.ndarray
    action_low: np.ndarray
    action_high: np.ndarray
    reward: rewards_lib.RewardTransform
    normalize_observations: bool = False

    @classmethod
    def fit(cls, observations: np.ndarray, action_low: np.ndarray, action_high: np.ndarray,
            reward: rewards_lib.RewardTransform, normalize_observations: bool) -> "Preprocessing":
        """Observation statistics from the dataset when asked for; identity otherwise."""
        return cls.from_statistics(observations.mean(axis=0, dtype=np.float64), observations.std(axis=0, dtype=np.float64),
                                   action_low, action_high, reward, normalize_observations)

    @classmethod
    def from_statistics(cls, observation_mean: np.ndarray, observation_std: np.ndarray, action_low: np.ndarray,
                        action_high: np.ndarray, reward: rewards_lib.RewardTransform,
                        normalize_observations: bool) -> "Preprocessing":
        """From the dataset's observation mean and std (a converted dataset's metadata records them)."""
        size = np.size(observation_mean)
        if normalize_observations:
            mean = np.asarray(observation_mean, np.float64).astype(np.float32)
            std = (np.asarray(observation_std, np.float64) + STD_EPSILON).astype(np.float32)
        else:
            mean, std = np.zeros(size, np.float32), np.ones(size, np.float32)
        return cls(mean, std, np.asarray(action_low, np.float32), np.asarray(action_high, np.float32), reward,
                   normalize_observations)

    def observations(self, observations: Any) -> Any:
        """Raw -> network observations (numpy or TensorFlow alike)."""
        if not self.normalize_observations:
            return observations
        return (observations - self.observation_mean) / self.observation_std

    # Written so that bounds of [-1, 1] map every action exactly onto itself.
    def actions_to_unit(self, actions: Any) -> Any:
        """Environment units -> [-1, 1]."""
        return (2.0 * actions - (self.action_low + self.action_high)) / (self.action_high - self.action_low)

    def actions_from_unit(self, actions: Any) -> Any:
        """[-1, 1] -> environment units."""
        return (actions * (self.action_high - self.action_low) + (self.action_low + self.action_high)) / 2.0

    def actions_to_env(self, unit_actions: Any, clip: Callable[[Any, float, float], Any]) -> Any:
        """The policy's output -> the action the environment is given: clipped to [-1, 1] with `clip` (np.clip,
        or tf.clip_by_value inside the export), in the environment's units."""
        return self.actions_from_unit(clip(unit_actions, -1.0, 1.0))

    def rewards(self, rewards: Any) -> Any:
        return rewards * self.reward.scale + self.reward.shift

    def transitions(self, batch: Dict[str, Any], clip: Callable[[Any, float, float], Any]) -> Dict[str, Any]:
        """Raw transitions as the networks see them: observations and next observations normalised (if asked),
        actions in [-1, 1] clipped to ACTION_LIMIT with `clip` (np.clip for arrays, tf.clip_by_value inside a
        tf.data pipeline), rewards transformed."""
        prepared = {
            "observations": self.observations(batch["observations"]),
            "actions": clip(self.actions_to_unit(batch["actions"]), -ACTION_LIMIT, ACTION_LIMIT),
            "rewards": self.rewards(batch["rewards"]),
        }
        if "next_observations" in batch:  # (images held once have none: `shards.read_shards`)
            prepared["next_observations"] = self.observations(batch["next_observations"])
        return prepared

    def describe(self) -> Dict[str, Any]:
        """JSON-ready summary for the run's records and fingerprint."""
        statistics: Optional[Dict[str, list]] = None
        if self.normalize_observations:
            statistics = {"mean": self.observation_mean.tolist(), "std": self.observation_std.tolist()}
        return {
            "reward": dataclasses.asdict(self.reward),
            "observation_normalization": statistics,
            "action_low": self.action_low.tolist(),
            "action_high": self.action_high.tolist(),
        }
