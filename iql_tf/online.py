"""Online fine-tuning after the offline phase (paper Section 5.3, Appendix C).

Each environment step samples an action from the policy (temperature 1) plus optional Gaussian noise, clipped
to the action bounds, stores the transition in the replay buffer (which starts with the whole offline
dataset) and makes exactly one gradient update. Online transitions go through the offline data's
preprocessing (the same reward shift and scale, the same observation statistics, not recomputed); they are
terminal only on a true termination, so a time-limit truncation keeps its bootstrap.

Crash safety: at each checkpoint the online transitions collected since the previous one are written to
`DIR/checkpoints/online-FIRST-LAST.npz` (only those: the offline data is never saved again), and the
checkpoint records how many there are, with the episode count and the random generators. A resumed run puts
them back into the buffer; the interrupted episode starts again.
"""

import json
from typing import Any, Callable, Dict, List, Optional, Sequence

import gymnasium as gym
import numpy as np
import tensorflow as tf

from iql_tf import envs, files
from iql_tf.data import checksums
from iql_tf.agent import IQLAgent
from iql_tf.checkpoints import Checkpoints
from iql_tf.data.preprocessing import ACTION_LIMIT, Preprocessing
from iql_tf.errors import UserError
from iql_tf.replay_buffer import ReplayBuffer

_RESET_SEED_STRIDE = 1_000_003  # episode e of seed s resets with s * stride + e (evaluation uses 100003)


class OnlinePhase:
    """The exploration environment, the current episode and the online part of the replay buffer."""

    def __init__(self, env: gym.Env, observation_keys: Optional[Sequence[str]], preprocessing: Preprocessing,
                 agent: IQLAgent, buffer: ReplayBuffer, seed: int, exploration_noise: float, checkpoints: Checkpoints):
        """`env` is its own instance (evaluation never steps it), already checked to fit the data."""
        self.env, self.keys, self.preprocessing = env, observation_keys, preprocessing
        self.agent, self.buffer, self.seed, self.checkpoints = agent, buffer, seed, checkpoints
        self.noise = tf.constant(float(exploration_noise))
        self.episodes = tf.Variable(0, dtype=tf.int64, trainable=False, name="online_episodes")
        # How many online transitions the checkpoint's chunks hold, and each chunk's sha256 (saved with it).
        self.saved_count = tf.Variable(0, dtype=tf.int64, trainable=False, name="online_rows")
        self.chunk_digests = tf.Variable("{}", trainable=False, name="online_chunk_digests")
        self.observation: Optional[np.ndarray] = None  # the current network observation; None between episodes
        self.action: Optional[np.ndarray] = None  # the exploration action for it, in [-1, 1]
        self.finished: List[Dict[str, float]] = []  # episodes ended since the last summary
        self.on_episode: Callable[[int, Dict[str, float]], None] = lambda step, episode: None
        self._update_fn: Optional[Callable] = None  # IQLAgent.online_update_fn bound to the buffer

    def trackables(self) -> Dict[str, tf.Variable]:
        return {"online_episodes": self.episodes, "online_rows": self.saved_count,
                "online_chunk_digests": self.chunk_digests}

    def _reset(self) -> None:
        seed = self.seed * _RESET_SEED_STRIDE + int(self.episodes.numpy())
        observation, info = self.env.reset(seed=seed)
        self.episodes.assign_add(1)
        self.observation = self._prepared(observation)
        self.episode = {"return": 0.0, "success": float(bool(info.get("success", False))), "length": 0.0}

    def _prepared(self, observation: Any) -> np.ndarray:
        return np.asarray(self.preprocessing.observations(envs.flatten_observation(observation, self.keys)),
                          np.float32)

    def env_step(self) -> Dict[str, np.ndarray]:
        """One environment step and one gradient update; returns the update's metrics."""
        if self.observation is None:
            self._reset()
            self.action = self.agent.explore(self.observation[None, None], self.noise).numpy()[0, 0]
        unit_action = self.action
        observation, reward, terminated, truncated, info = self.env.step(
            self.preprocessing.actions_from_unit(unit_action))
        next_observation = self._prepared(observation)
        if self._update_fn is None:  # bound once the agent has chosen how to compile its update
            self._update_fn = self.agent.online_update_fn(self.buffer)
        # The update and the next step's action in one call (the action is wasted when the episode ends here).
        row = self.buffer.pack({
            "observations": self.observation,
            "actions": np.clip(unit_action, -ACTION_LIMIT, ACTION_LIMIT),
            "rewards": self.preprocessing.rewards(float(reward)),
            "masks": 0.0 if terminated else 1.0,
            "next_observations": next_observation,
        })
        metrics, next_actions = self._update_fn(row, next_observation[None, None], self.noise)
        self.action = next_actions[0, 0]
        self.episode["return"] += float(reward)
        self.episode["length"] += 1
        self.episode["success"] = max(self.episode["success"], float(bool(info.get("success", False))))
        self.observation = next_observation
        if terminated or truncated:
            self.finished.append(self.episode)
            self.on_episode(int(self.agent.step), self.episode)
            self.observation = None
        return metrics

    def summary(self) -> Dict[str, float]:
        """For TensorBoard's online/* series: steps, buffer size and the episodes ended since the last call."""
        values = {"env_steps": float(int(self.buffer.size) - self.buffer.offline_size),
                  "buffer_size": float(int(self.buffer.size)), "episodes": float(int(self.episodes.numpy()))}
        if self.finished:
            for name in ("return", "success", "length"):
                values[f"episode_{name}_mean"] = float(np.mean([episode[name] for episode in self.finished]))
            self.finished = []
        return values

    # --- crash safety ------------------------------------------------------------------------------------

    def save_transitions(self) -> None:
        """Writes the online transitions collected since the last checkpoint; the checkpoint then records them."""
        first, last = int(self.saved_count.numpy()), int(self.buffer.size) - self.buffer.offline_size
        if last > first:
            path = self.checkpoints.online_chunk(first, last)
            path.parent.mkdir(parents=True, exist_ok=True)
            with files.atomic_file(path) as temporary, open(temporary, "wb") as f:
                np.savez(f, **self.buffer.online_transitions(first, last))
            digests = json.loads(self.chunk_digests.numpy().decode())
            digests[path.name] = checksums.file_sha256(path)
            self.chunk_digests.assign(json.dumps(digests, sort_keys=True))
        self.saved_count.assign(last)

    def restore(self) -> None:
        """Puts the online transitions of the restored checkpoint back into the buffer (after the offline data)
        and deletes those of newer, lost checkpoints; the interrupted episode starts again."""
        rows = int(self.saved_count.numpy())
        digests = json.loads(self.chunk_digests.numpy().decode())
        parts, expected = [], 0
        for first, last, path in self.checkpoints.online_chunks():
            if first >= rows:
                path.unlink()
                continue
            if first != expected or last > rows:
                raise UserError(f"{path}: online transitions {first}-{last} do not continue those before ({expected}) "
                                f"up to the checkpoint's {rows}; the run directory was edited: start it again in a "
                                "new --workdir")
            if checksums.file_sha256(path) != digests.get(path.name):
                raise UserError(f"{path}: damaged (its sha256 does not match the checkpoint's record), and every later "
                                "checkpoint needs it: restore the file from a copy, or start the run again in a new "
                                "--workdir")
            with np.load(path) as data:
                parts.append({key: data[key] for key in data.files})
            expected = last
        if expected != rows:
            raise UserError(f"{self.checkpoints.folder}: the checkpoint holds {rows} online transitions but the "
                            f"online-*.npz files only {expected}; start the run again in a new --workdir")
        if parts:
            self.buffer.restore_online({key: np.concatenate([part[key] for part in parts]) for key in parts[0]})
        self.observation = None

    def close(self) -> None:
        self.env.close()
