"""Running a policy in a gymnasium env into Minari `EpisodeBuffer`s, and mean returns for reference scores.

A policy is any callable from one (unflattened) observation to one action.
"""

import pathlib
from typing import Any, Callable, List, Optional, Tuple

import gymnasium as gym
import numpy as np
from minari.data_collector import EpisodeBuffer

from iql_tf import envs
from iql_tf.data.metadata import parse_json_object
from iql_tf.errors import UserError

Policy = Callable[[Any], np.ndarray]


def random_policy(space: gym.Space, seed: int) -> Policy:
    """Uniform random actions, seeded."""
    space.seed(seed)
    return lambda observation: space.sample()


def with_noise(policy: Policy, std: float, rng: np.random.Generator) -> Policy:
    """Gaussian action noise N(0, std^2), clipped to [-1, 1]."""

    def noisy(observation: Any) -> np.ndarray:
        action = np.asarray(policy(observation), np.float64)
        return np.clip(action + rng.normal(0.0, std, action.shape), -1.0, 1.0).astype(np.float32)

    return noisy


def saved_model_policy(directory: "str | pathlib.Path") -> Tuple[Policy, dict]:
    """The deterministic policy of an exported SavedModel (`serving_default`) and its assets/metadata.json."""
    import tensorflow as tf  # only policy rollouts need TensorFlow

    directory = pathlib.Path(directory).expanduser()
    metadata_path = directory / "assets" / "metadata.json"
    if not metadata_path.is_file():
        raise UserError(f"{metadata_path}: not found; --policy must be an exported policy (DIR/export/policy)")
    metadata = parse_json_object(metadata_path.read_text(), str(metadata_path), "re-export the policy")
    for field in ("env_id", "env_kwargs", "max_episode_steps", "observation_keys"):
        if field not in metadata:
            raise UserError(f"{metadata_path}: missing field {field!r}; re-export the policy")
    serve = tf.saved_model.load(str(directory)).signatures["serving_default"]
    keys = metadata["observation_keys"]

    def policy(observation: Any) -> np.ndarray:
        batch = envs.flatten_observation(observation, keys)[None]
        return serve(observations=tf.constant(batch))["actions"].numpy()[0]

    return policy, metadata


def run_episode(env: gym.Env, policy: Policy, seed: Optional[int], max_steps: Optional[int] = None) -> EpisodeBuffer:
    """One episode until termination, truncation or `max_steps` (then marked truncated)."""
    observation, _ = env.reset(seed=seed)
    observations, actions, rewards, terminations, truncations = [observation], [], [], [], []
    while True:
        action = policy(observation)
        observation, reward, terminated, truncated, _ = env.step(action)
        observations.append(observation)
        actions.append(action)
        rewards.append(float(reward))
        terminations.append(bool(terminated))
        truncations.append(bool(truncated) or (not terminated and len(actions) == max_steps))
        if terminations[-1] or truncations[-1]:
            break
    return EpisodeBuffer(
        observations=_stack(observations),
        actions=np.asarray(actions, np.float32),
        rewards=np.asarray(rewards),
        terminations=np.asarray(terminations),
        truncations=np.asarray(truncations),
    )


def _stack(observations: List[Any]) -> Any:
    if isinstance(observations[0], dict):
        return {key: np.stack([o[key] for o in observations]) for key in observations[0]}
    return np.stack(observations)


def collect(env: gym.Env, policy: Policy, num_steps: int, seed: int) -> List[EpisodeBuffer]:
    """Episodes totalling exactly `num_steps` steps; only the first reset is seeded (the env's RNG follows)."""
    episodes: List[EpisodeBuffer] = []
    total = 0
    while total < num_steps:
        episodes.append(run_episode(env, policy, seed if not episodes else None, num_steps - total))
        total += len(episodes[-1])
    return episodes


def mean_return(env: gym.Env, policy: Policy, num_episodes: int, seed: int) -> float:
    """Average undiscounted return of full episodes, reset with seeds seed, seed + 1, ..."""
    return float(np.mean([np.sum(run_episode(env, policy, seed + k).rewards) for k in range(num_episodes)]))


def reference_scores(env: gym.Env, policy: Policy, num_episodes: int, seed: int) -> Tuple[float, float]:
    """(ref_min_score, ref_max_score): mean returns of a random policy and of `policy` (noiseless)."""
    random_return = mean_return(env, random_policy(env.action_space, seed), num_episodes, seed)
    return random_return, mean_return(env, policy, num_episodes, seed)
