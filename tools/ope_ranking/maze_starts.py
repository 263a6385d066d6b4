"""The truth of what FQE estimates on the quickstart's data: a policy's discounted return in PointMaze from every
trajectory start of the data.

FQE's value is the policy's expected discounted return from the data's initial states (`iql_tf/ope`), while the
quickstart's score is its success from the evaluation's one start cell. The stitching data's trajectories start
all over the maze, each with its own goal position in the goal cell, so the two are different quantities; this
scores the first one in the simulator: the ball placed at each start's position and velocity, the goal at the
start's goal, the policy run (deterministically, as FQE evaluates it) until it arrives or `horizon` steps pass
(0.99 ** 1000 < 5e-5 of a reward: the rest is negligible at discount 0.99).
"""

import pathlib
from typing import Any, List

import numpy as np

# PointMaze environments alive at once: each holds its own MuJoCo model and data (tens of MB apiece).
CHUNK = 64


def data_starts(observations: np.ndarray, dones: np.ndarray, where: str) -> np.ndarray:
    """The raw observations of the first transition of every trajectory (rows of a dataset `where`): the states
    FQE reads its value out at."""
    from iql_tf.ope.estimation import initial_states

    return observations[initial_states(dones, where)]


def discounted_returns(policy_path: "str | pathlib.Path", starts: np.ndarray, discount: float,
                       horizon: int = 1000) -> np.ndarray:
    """The export's discounted return from each row of `starts` (raw observations of its PointMaze task)."""
    from iql_tf import envs
    from iql_tf.policy.loading import load_policy

    policy, metadata = load_policy(policy_path)
    returns: List[np.ndarray] = []
    for first in range(0, len(starts), CHUNK):
        chunk = starts[first:first + CHUNK]
        environments = [envs.make_env(metadata.env_id, metadata.env_kwargs, horizon) for _ in chunk]
        observations = np.stack([_place(env, start, metadata.observation_keys)
                                 for env, start in zip(environments, chunk)])
        chunk_returns, running = np.zeros(len(chunk)), np.ones(len(chunk), bool)
        for t in range(horizon):
            actions = policy(observations)
            for i in np.flatnonzero(running):
                observation, reward, terminated, truncated, _ = environments[i].step(actions[i])
                chunk_returns[i] += discount ** t * reward
                observations[i] = envs.flatten_observation(observation, metadata.observation_keys)
                running[i] = not (terminated or truncated)
            if not running.any():
                break
        for env in environments:
            env.close()
        returns.append(chunk_returns)
    return np.concatenate(returns)


def _place(env: Any, start: np.ndarray, keys: List[str]) -> np.ndarray:
    """Resets `env` with the ball at `start`'s position and velocity and the goal at its goal; the observation
    it then gives (equal to `start`, which is checked)."""
    from iql_tf import envs

    env.reset(seed=0)
    maze = env.unwrapped
    sizes = [int(np.prod(maze.observation_space[key].shape)) for key in keys]
    fields = dict(zip(keys, np.split(start.astype(np.float64), np.cumsum(sizes)[:-1])))
    maze.goal = fields["desired_goal"]
    maze.update_target_site_pos()
    position, velocity = np.split(fields["observation"], 2)
    maze.point_env.set_state(position, velocity)
    observation = envs.flatten_observation(maze._get_obs(maze.point_env._get_obs()[0]), keys)
    if not np.allclose(observation, start, atol=1e-5):
        raise ValueError(f"placing the ball at {start} gave the observation {observation}")
    return observation
