"""Per-domain reward preprocessing (paper appendix B), applied once at load time.

  'locomotion'  r * 1000 / (max - min trajectory return)   (the reference's `normalize`)
  'antmaze'     r - 1
  'none'        r
Each mode is an affine map r * scale + shift, returned so the trainer can log what was applied.
"""

import dataclasses

import numpy as np

from iql_tf.errors import UserError
from iql_tf.options import check_reward_preprocessing


@dataclasses.dataclass(frozen=True)
class RewardTransform:
    """r -> r * scale + shift."""

    mode: str
    scale: float = 1.0
    shift: float = 0.0


def trajectory_starts(dones: np.ndarray) -> np.ndarray:
    """Index of the first transition of each trajectory; `dones` marks the last of each (and the last row)."""
    return np.flatnonzero(np.concatenate([[1.0], dones[:-1]]))


def trajectory_lengths(dones: np.ndarray) -> np.ndarray:
    """Number of transitions of each trajectory; `dones` marks the last of each (and the last row)."""
    return np.diff(np.append(trajectory_starts(dones), len(dones)))


def trajectory_returns(rewards: np.ndarray, dones: np.ndarray) -> np.ndarray:
    """Undiscounted return of each trajectory; `dones` marks the last transition of each (and the last row)."""
    return np.add.reduceat(rewards.astype(np.float64), trajectory_starts(dones))


def transform_from_returns(mode: str, return_min: float, return_max: float, trajectories: int) -> RewardTransform:
    """The transform `mode` means for a dataset whose trajectory returns span [return_min, return_max] (what
    a converted dataset's metadata records, so a streamed dataset is never read twice to start)."""
    check_reward_preprocessing(mode)
    if mode == "antmaze":
        return RewardTransform(mode, shift=-1.0)
    if mode == "locomotion":
        spread = return_max - return_min
        if spread <= 0.0:
            raise UserError(
                f"reward_preprocessing='locomotion' divides by the spread of trajectory returns, which is 0 here "
                f"({trajectories} trajectories); use reward_preprocessing='none'"
            )
        return RewardTransform(mode, scale=1000.0 / spread)
    return RewardTransform(mode)
