"""Policies for the generators, data collection into Minari `EpisodeBuffer`s, and reference scores.

A policy is an `iql_tf.policy.Policy`: a float32 batch [B, obs_dim] of flattened observations
(`envs.flatten_observation` in `observation_keys` order; uint8 images as they are) -> actions [B, act_dim] in the
environment's units, like the exported SavedModel. Reference
scores come from `evaluation.evaluate`, the code (and seeding) that scores a trained policy, so a normalised
score of 100 means "as good as the reference policy under the same evaluation".
"""

from typing import Any, Callable, List, Optional, Sequence, Tuple

import gymnasium as gym
import numpy as np
from minari.data_collector import EpisodeBuffer

from iql_tf import envs, evaluation
from iql_tf.data.parts import map_parts
from iql_tf.policy import Policy


def random_policy(space: gym.Space, seed: int) -> Policy:
    """Uniform random actions, one per row of the batch, seeded."""
    space.seed(seed)
    return lambda observations: np.stack([space.sample() for _ in observations]).astype(np.float32)


def with_noise(policy: Policy, std: float, space: gym.spaces.Box, rng: np.random.Generator) -> Policy:
    """Gaussian action noise of std `std` times the half-range of each action dimension (std in units of
    the policy's [-1, 1]), clipped to the action bounds."""
    scale = (space.high - space.low) / 2.0

    def noisy(observations: np.ndarray) -> np.ndarray:
        actions = np.asarray(policy(observations), np.float64)
        noise = rng.normal(0.0, std, actions.shape) * scale
        return np.clip(actions + noise, space.low, space.high).astype(np.float32)

    return noisy


def collect(env: gym.Env, policy: Policy, observation_keys: Optional[Sequence[str]], num_steps: int, seed: int
            ) -> List[EpisodeBuffer]:
    """Episodes totalling exactly `num_steps` steps (raw observations, as Minari stores them); only the first
    reset is seeded (the env's RNG follows), and the last episode is truncated by the budget."""

    def act(observation: Any) -> np.ndarray:
        one = map_parts(lambda values: values[None], envs.flatten_observation(observation, observation_keys))
        return np.asarray(policy(one))[0]

    episodes: List[EpisodeBuffer] = []
    total = 0
    while total < num_steps:
        episodes.append(_run_episode(env, act, seed if not episodes else None, num_steps - total))
        total += len(episodes[-1])
    return episodes


def _run_episode(env: gym.Env, act: Callable[[Any], np.ndarray], seed: Optional[int], max_steps: int
                 ) -> EpisodeBuffer:
    """One episode until termination, truncation or `max_steps` (then marked truncated)."""
    observation, _ = env.reset(seed=seed)
    observations, actions, rewards, terminations, truncations = [observation], [], [], [], []
    while True:
        action = act(observation)
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


def mean_returns(policies: Sequence[Policy], make_env: Callable[[], gym.Env],
                 observation_keys: Optional[Sequence[str]], num_episodes: int, seed: int) -> List[float]:
    """Each policy's mean return under `evaluation.evaluate` (episode i reset with `evaluation.episode_seed`),
    all in the same environments, built once."""
    eval_envs = evaluation.make_envs(make_env, num_episodes)
    try:
        return [evaluation.evaluate(policy, eval_envs, observation_keys, num_episodes, seed)["return_mean"]
                for policy in policies]
    finally:
        for env in eval_envs:
            env.close()


def reference_scores(policy: Policy, action_space: gym.Space, make_env: Callable[[], gym.Env],
                     observation_keys: Optional[Sequence[str]], num_episodes: int, seed: int) -> Tuple[float, float]:
    """(ref_min_score, ref_max_score): mean returns of a uniform random policy and of `policy` (noiseless)."""
    random_return, policy_return = mean_returns(
        [random_policy(action_space, seed), policy], make_env, observation_keys, num_episodes, seed
    )
    return random_return, policy_return
