"""Deterministic rollouts in the dataset's environment: returns, normalised score, success; of a trained
policy in this process (`evaluate`) or of an export (`evaluate_export`, what `iql-evaluate` runs).

A separate environment instance from any exploration, seeded per episode from the run seed, deterministic
actions (the policy mean, clipped to the bounds), full episodes up to the environment's time limit.
"""

import concurrent.futures
import contextlib
import os
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence

import gymnasium as gym
import numpy as np

from iql_tf.data.parts import map_parts
from iql_tf.envs import flatten_observation
from iql_tf.errors import UserError
from iql_tf.policy import Policy
_EPISODE_SEED_STRIDE = 100003
RECORDED_EPISODES = 10  # episodes whose paths evaluate_export draws


def episode_seed(seed: int, episode: int) -> int:
    """The reset seed of evaluation episode `episode` under run seed `seed`."""
    return seed * _EPISODE_SEED_STRIDE + episode


def normalized_score(returns: np.ndarray, ref_min_score: Optional[float],
                     ref_max_score: Optional[float]) -> Optional[np.ndarray]:
    """100 * (R - ref_min) / (ref_max - ref_min), or None when the dataset has no reference scores."""
    if ref_min_score is None or ref_max_score is None:
        return None
    return 100.0 * (np.asarray(returns) - ref_min_score) / (ref_max_score - ref_min_score)


def make_envs(make_env: Callable[[], gym.Env], num_episodes: int, num_envs: int = 25) -> List[gym.Env]:
    """The environments `evaluate` steps in lockstep: one per episode, at most `num_envs`.

    Building them costs about as much as a short evaluation (60 ms each for PointMaze), so callers
    that evaluate repeatedly build them once and pass them to every `evaluate`. Environments in processes of
    their own (`env_process.ProcessEnv`: rendered frames) are stepped side by side, one per core at most (each
    process holds its simulator and renderer).
    """
    if num_episodes <= 0:
        return []
    built = [make_env()]
    try:
        while len(built) < min(num_envs, num_episodes, _cores() if _in_processes(built) else num_envs):
            built.append(make_env())
    except BaseException:
        for env in built:
            env.close()
        raise
    return built


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@contextlib.contextmanager
def _stepping(envs: Sequence[gym.Env]) -> Iterator[Callable[[List[tuple]], List[tuple]]]:
    """A function that steps envs[i] with each (action, i) and returns their steps in order: side by side, a
    thread waiting on each pipe, for environments in processes of their own; one after the other here."""
    if len(envs) > 1 and _in_processes(envs):
        with concurrent.futures.ThreadPoolExecutor(len(envs)) as pool:
            yield lambda pairs: list(pool.map(lambda pair: envs[pair[1]].step(pair[0]), pairs))
    else:
        yield lambda pairs: [envs[i].step(action) for action, i in pairs]


def _in_processes(envs: Sequence[gym.Env]) -> bool:
    from iql_tf.env_process import ProcessEnv

    return all(isinstance(env.unwrapped, ProcessEnv) for env in envs)


def evaluate(
    policy: Policy,
    envs: Sequence[gym.Env],
    observation_keys: Optional[Sequence[str]],
    num_episodes: int,
    seed: int,
    ref_min_score: Optional[float] = None,
    ref_max_score: Optional[float] = None,
) -> Dict[str, float]:
    """Runs `num_episodes` full episodes in `envs` (see `make_envs`), stepped in lockstep so that the
    policy sees one batch per step; episode i is reset with `episode_seed(seed, i)`, so the result
    does not depend on how many environments there are or what they ran before.

    Returns mean/std of the return and of the normalised score, and the success rate where the
    environment reports `info["success"]` (counted as success at any step).
    """
    returns, successes = [], []
    next_episode = 0

    def start(env: gym.Env):
        nonlocal next_episode
        if next_episode >= num_episodes:
            return None
        observation, info = env.reset(seed=episode_seed(seed, next_episode))
        next_episode += 1
        return [0.0, bool(info.get("success", False)), observation]

    # Per env: [episode return, success so far, observation], or None once it has no episode left.
    slots = [start(env) for env in envs]
    reports_success = False
    with _stepping(envs) as step:
        while any(slot is not None for slot in slots):
            active = [i for i, slot in enumerate(slots) if slot is not None]
            observations = map_parts(lambda *rows: np.stack(rows),
                                     *[flatten_observation(slots[i][2], observation_keys) for i in active])
            actions = np.asarray(policy(observations))
            for (observation, reward, terminated, truncated, info), i in zip(step(list(zip(actions, active))), active):
                slot = slots[i]
                slot[0] += float(reward)
                if "success" in info:
                    reports_success = True
                    slot[1] = slot[1] or bool(info["success"])
                slot[2] = observation
                if terminated or truncated:
                    returns.append(slot[0])
                    successes.append(slot[1])
                    slots[i] = start(envs[i])

    returns = np.asarray(returns)
    results = {"return_mean": float(returns.mean()), "return_std": float(returns.std())}
    scores = normalized_score(returns, ref_min_score, ref_max_score)
    if scores is not None:
        results["normalized_score"] = float(scores.mean())
        results["normalized_score_std"] = float(scores.std())
    if reports_success:
        results["success_rate"] = float(np.mean(successes))
    return results


def evaluate_export(export_dir: str, episodes: int, seed: int = 0, env_id: Optional[str] = None,
                    env_kwargs: Optional[Dict[str, Any]] = None, record: Optional[str] = None,
                    trust_export: bool = False) -> Dict[str, float]:
    """`evaluate` of an exported policy (checked and loaded by `policy.loading`) in the environment its metadata
    records, or in `env_id` / `env_kwargs` (data collected without a simulator, or another variant of the task);
    `record`: also draw the first episodes' paths on the maze to this PNG (`maze_paths`)."""
    from iql_tf import envs, maze_paths
    from iql_tf.policy import loading

    if episodes <= 0:
        raise UserError(f"--episodes={episodes} must be positive")
    policy, metadata = loading.load_policy(export_dir, trust_export)
    if env_id is None:
        env_id = loading.require_environment(export_dir, metadata)
        kwargs, steps = metadata.env_kwargs if env_kwargs is None else env_kwargs, metadata.max_episode_steps
    else:
        kwargs, steps = env_kwargs or {}, None
    make_env = lambda: envs.make_env(env_id, kwargs, steps)  # noqa: E731
    eval_envs = make_envs(make_env, episodes)
    try:
        envs.check_env_fits(eval_envs[0], metadata.observation_keys, metadata.observation_dim, metadata.action_dim,
                            f"of the policy {export_dir}", metadata.image_shape, metadata.observation_parts)
        eval_envs = [envs.stack_frames(env, metadata.frame_stack) for env in eval_envs]
        results = evaluate(policy, eval_envs, metadata.observation_keys, episodes, seed, metadata.ref_min_score,
                           metadata.ref_max_score)
        if record:
            reset_seeds = [episode_seed(seed, episode) for episode in range(min(episodes, RECORDED_EPISODES))]
            maze_paths.draw_trajectories(eval_envs[0], policy, metadata.observation_keys, reset_seeds, record)
    finally:
        for env in eval_envs:
            env.close()
    return results
