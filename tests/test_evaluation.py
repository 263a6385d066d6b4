"""Evaluation rollouts on a tiny hand-made environment whose outcomes are known."""

import gymnasium as gym
import numpy as np
import pytest

from iql_tf.envs import check_env_fits
from iql_tf.errors import UserError
from iql_tf.evaluation import evaluate, make_envs, normalized_score


class Corridor(gym.Env):
    """Position on a line, start drawn from the reset seed in [0, 0.5); reaching 1 is success.

    Reward 1 on arrival (terminal); `success` is reported in info at every step; the observation is a
    dict, so the policy must receive it flattened in sorted key order.
    """

    observation_space = gym.spaces.Dict({
        "position": gym.spaces.Box(-10, 10, (1,), np.float32),
        "a_bias": gym.spaces.Box(-10, 10, (1,), np.float32),
    })
    action_space = gym.spaces.Box(-1, 1, (1,), np.float32)

    def __init__(self, flicker=False):
        self.flicker = flicker  # report success only at the step of arrival, then leave again
        self.resets = []

    def _observation(self):
        return {"position": np.array([self.position], np.float32), "a_bias": np.array([7.0], np.float32)}

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.resets.append(seed)
        self.position = float(self.np_random.uniform(0, 0.5))
        return self._observation(), {"success": False}

    def step(self, action):
        self.position += 0.25 * float(action[0])
        arrived = self.position >= 1.0
        if self.flicker and arrived:
            self.position = 0.0
            return self._observation(), 0.0, False, False, {"success": True}
        return self._observation(), float(arrived), arrived, False, {"success": arrived}


def corridor_factory(max_steps=20, **kwargs):
    made = []

    def make():
        env = gym.wrappers.TimeLimit(Corridor(**kwargs), max_episode_steps=max_steps)
        made.append(env)
        return env

    return make, made


def forward(observations):
    # Keys in sorted order: a_bias (always 7) first, then position.
    assert observations.dtype == np.float32 and np.all(observations[:, 0] == 7.0)
    return np.ones((len(observations), 1), np.float32)


def test_successful_policy_returns_one_per_episode_and_counts_every_episode_once():
    make, made = corridor_factory()
    results = evaluate(forward, make_envs(make, 9, num_envs=4), ["a_bias", "position"], num_episodes=9, seed=3)
    assert results == {"return_mean": 1.0, "return_std": 0.0, "success_rate": 1.0}
    seeds = sorted(seed for env in made for seed in env.unwrapped.resets)
    assert seeds == [3 * 100003 + i for i in range(9)]  # one reset per episode, seeded from the run seed
    assert len(made) == 4


def test_idle_policy_is_truncated_by_the_time_limit_and_never_succeeds():
    make, _ = corridor_factory()
    idle = lambda observations: np.zeros((len(observations), 1), np.float32)  # noqa: E731
    results = evaluate(idle, make_envs(make, 3), ["a_bias", "position"], num_episodes=3, seed=0, ref_min_score=0.0,
                       ref_max_score=2.0)
    assert results == {"return_mean": 0.0, "return_std": 0.0, "normalized_score": 0.0, "normalized_score_std": 0.0,
                       "success_rate": 0.0}


def test_success_at_any_step_counts_and_results_do_not_depend_on_the_envs_or_their_reuse():
    def slow(observations):
        return np.full((len(observations), 1), 0.5, np.float32)

    make, _ = corridor_factory(max_steps=12, flicker=True)
    one = evaluate(slow, make_envs(make, 10, num_envs=1), ["a_bias", "position"], num_episodes=10, seed=1)
    many_envs = make_envs(make, 10, num_envs=10)
    many = evaluate(slow, many_envs, ["a_bias", "position"], num_episodes=10, seed=1)
    assert one == many
    # Reused environments give the same result again: every episode is reset with its own seed.
    assert evaluate(slow, many_envs, ["a_bias", "position"], num_episodes=10, seed=1) == many
    # Starts in [0, 0.5) at 0.125 per step reach 1 within 8 steps; the return stays 0 (no terminal reward).
    assert one["success_rate"] == 1.0 and one["return_mean"] == 0.0


def test_normalized_scores_of_hand_picked_returns():
    # D4RL's hopper constants (infos.py): its random policy scores 0, its expert 100, the return half way
    # between them (1607.013848, worked out by hand) 50, and a return below random is negative.
    scores = normalized_score(np.array([-20.272305, 3234.3, 1607.013848, -345.729536]), -20.272305, 3234.3)
    np.testing.assert_allclose(scores, [0.0, 100.0, 50.0, -10.0], atol=1e-4)
    assert normalized_score(np.array([1.0]), None, 1.0) is None


def test_dataset_that_does_not_fit_the_environment_is_named():
    env = Corridor()
    check_env_fits(env, ["a_bias", "position"], 2, 1, "corridor-data")
    with pytest.raises(UserError, match="corridor-data has observations of size 3 .* has 2 and 1"):
        check_env_fits(env, ["a_bias", "position"], 3, 1, "corridor-data")
