"""Small example datasets the tests make for themselves (nothing outside the repository is read).

- `hopper_random_rows`: D4RL-style arrays from `Hopper-v5` with uniform random actions: every row a step,
  `next_observations` the observation `env.step` returned, `terminals` where the hopper fell, `timeouts` where
  an episode was cut (the end of the collection).
- `write_pointmaze_minari`: a Minari dataset of PointMaze episodes in the layout minari writes (dict
  observations, T + 1 observations for T actions, an evaluation env spec with a fixed goal cell).
- `read_source`: a source resolved and read as conversion reads it, its first problem raised.
"""

import copy
from typing import Dict

import gymnasium as gym
import minari
import numpy as np
from minari.data_collector import EpisodeBuffer

from iql_tf import envs
from iql_tf.data import sources, validation
from iql_tf.generation import pointmaze


def read_source(source, download=False, env_id=None, env_kwargs=None, action_bounds=None,
                columns=None) -> sources.SourceData:
    """The transitions and facts conversion would read from `source`; its first problem is a UserError."""
    report = validation.Report()
    resolved = sources.resolve(source, download, columns=columns)
    data = sources.read(resolved, report, env_id, env_kwargs, action_bounds)
    report.raise_first(resolved.name)
    return data


def hopper_random_rows(num_steps: int = 2000, seed: int = 0) -> Dict[str, np.ndarray]:
    env = envs.make_env("Hopper-v5")
    env.action_space.seed(seed)
    rows = {key: [] for key in ("observations", "actions", "rewards", "terminals", "timeouts", "next_observations")}
    observation, _ = env.reset(seed=seed)
    episode = 0
    for step in range(num_steps):
        action = env.action_space.sample()
        next_observation, reward, terminated, truncated, _ = env.step(action)
        last = step == num_steps - 1
        for key, value in zip(rows, (observation, action, reward, terminated, (truncated or last) and not terminated,
                                     next_observation)):
            rows[key].append(value)
        observation = next_observation
        if terminated or truncated:
            episode += 1
            observation, _ = env.reset(seed=seed + episode)
    env.close()
    arrays = {key: np.asarray(value) for key, value in rows.items()}
    for key in ("observations", "actions", "rewards", "next_observations"):
        arrays[key] = arrays[key].astype(np.float32)
    return arrays


def write_pointmaze_minari(dataset_id: str, num_episodes: int = 4, steps: int = 100, seed: int = 0,
                           ref_scores=(15.6, 227.7)) -> minari.MinariDataset:
    """Noisy planner episodes in PointMaze UMaze (continuing task, random start and goal per episode); the
    evaluation env has its goal fixed at cell (1, 1)."""
    make = lambda **kwargs: envs.make_env(pointmaze.UMAZE.env_id, {"continuing_task": True, "reset_target": False, **kwargs},  # noqa: E731
                                          steps)
    env = make()
    planner = pointmaze.UMAZE.planner()
    rng = np.random.default_rng(seed)
    episodes = []
    for index in range(num_episodes):
        observation, info = env.reset(seed=seed + index)
        observations, actions, rewards, terminations, truncations = [observation], [], [], [], []
        for step in range(steps):
            action = planner.action(observation["observation"], observation["desired_goal"])
            action = np.clip(action + rng.normal(0.0, 0.5, 2), -1.0, 1.0).astype(np.float32)
            observation, reward, terminated, truncated, info = env.step(action)
            observations.append(observation)
            actions.append(action)
            rewards.append(reward)
            terminations.append(terminated)
            truncations.append(truncated or step == steps - 1)
        episodes.append(EpisodeBuffer(
            observations={key: np.stack([o[key] for o in observations]) for key in observation},
            actions=np.stack(actions), rewards=np.asarray(rewards), terminations=np.asarray(terminations),
            truncations=np.asarray(truncations)))
    maze_map = copy.deepcopy(pointmaze.U_MAZE)
    maze_map[1][1] = "g"
    return minari.create_dataset_from_buffers(
        dataset_id, episodes, env=env, eval_env=make(maze_map=maze_map), algorithm_name="planner+noise",
        author="tests", author_email="n/a", code_permalink="tests/datasets.py", description="test data",
        ref_min_score=ref_scores[0], ref_max_score=ref_scores[1], num_episodes_average_score=1)


def box(size: int, bound: float = np.inf) -> gym.spaces.Box:
    return gym.spaces.Box(-bound, bound, (size,), np.float32)
