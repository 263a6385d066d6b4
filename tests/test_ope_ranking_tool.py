"""tools.ope_ranking's truth of what FQE estimates on the quickstart: a ball placed at a logged state (position,
velocity and goal, as a trajectory start of the data holds them) moves on as the log did."""

import numpy as np
import pytest

from iql_tf import envs
from iql_tf.generation import pointmaze
from tools.ope_ranking import maze_starts


def make_task_env():
    return envs.make_env(pointmaze.UMAZE.env_id, pointmaze.UMAZE.eval_env_kwargs(), 200)


def test_a_ball_placed_at_a_logged_state_follows_the_log():
    env = make_task_env()
    keys = envs.observation_keys(env.observation_space)
    rng = np.random.default_rng(0)
    observation, _ = env.reset(seed=3)
    env.unwrapped.goal = env.unwrapped.goal + np.array([0.2, -0.1])  # a goal of its own, as each start has
    env.unwrapped.update_target_site_pos()
    observation = env.unwrapped._get_obs(env.unwrapped.point_env._get_obs()[0])
    actions = rng.uniform(-1.0, 1.0, size=(40, 2)).astype(np.float32)
    logged = [envs.flatten_observation(observation, keys)]
    for action in actions:
        logged.append(envs.flatten_observation(env.step(action)[0], keys))
    start = 10  # moving: a velocity to place as well
    assert np.abs(logged[start][-2:]).max() > 0.1

    placed = make_task_env()
    assert np.allclose(maze_starts._place(placed, logged[start], keys), logged[start], atol=1e-6)
    followed = [envs.flatten_observation(placed.step(action)[0], keys) for action in actions[start:]]
    np.testing.assert_allclose(followed, logged[start + 1:], atol=1e-5)


def test_a_start_the_ball_cannot_be_placed_at_is_refused():
    env = make_task_env()
    keys = envs.observation_keys(env.observation_space)
    start = envs.flatten_observation(env.reset(seed=0)[0], keys)
    assert keys[0] == "achieved_goal"
    start[0] += 0.5  # the achieved goal no longer the ball's position
    with pytest.raises(ValueError, match="placing the ball"):
        maze_starts._place(make_task_env(), start, keys)
