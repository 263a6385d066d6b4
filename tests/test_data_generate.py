"""Offline generation: the PointMaze stitching recipe (SPEC.md section 2), random and policy rollouts."""

import json
import os
import subprocess
import sys

import minari
import numpy as np
import pytest
import tensorflow as tf
from conftest import REPO_ROOT

from iql_tf import envs
from iql_tf.data import generate, pointmaze, rollouts, sources
from iql_tf.data.pipeline import make_dataset
from iql_tf.errors import UserError

PLANNER = pointmaze.Planner(pointmaze.U_MAZE)


def test_planner_follows_the_u_from_start_to_goal():
    path = [pointmaze.START_CELL]
    while path[-1] != pointmaze.GOAL_CELL:
        path.append(PLANNER.next_cell(path[-1], pointmaze.GOAL_CELL))
    assert path == [(3, 1), (3, 2), (3, 3), (2, 3), (1, 3), (1, 2), (1, 1)]
    assert PLANNER.neighbours((1, 1)) == [(1, 2)] and PLANNER.neighbours((1, 3)) == [(1, 2), (2, 3)]
    np.testing.assert_array_equal(PLANNER.centre((3, 1)), [-1.0, -1.0])
    assert PLANNER.cell(-1.2, -0.7) == (3, 1)


def test_an_episode_from_the_start_cell_to_the_goal_is_split_by_a_truncation():
    positions = [(0.0, -1.0), (-1.0, -1.0), (-1.2, -1.1), (0.0, -1.0), (1.0, 0.0), (-1.0, 1.0)]
    states = [np.array([x, y, 0.0, 0.0]) for x, y in positions]
    actions = [np.full(2, k, np.float32) for k in range(5)]
    episode = [(states[k], actions[k], states[k + 1]) for k in range(5)]
    goal = np.array([-1.0, 1.0])
    whole = pointmaze._episode_buffer(np.stack(states), np.stack(actions), goal, True)
    assert pointmaze.visits_start_then_goal(PLANNER, whole.observations)

    first, second = pointmaze.split_for_stitching(PLANNER, episode, goal, arrived=True)
    # The cut follows the last step in the start cell (state 2); no transition is lost.
    np.testing.assert_array_equal(first.observations["observation"], np.stack(states[:4]))
    np.testing.assert_array_equal(second.observations["observation"], np.stack(states[3:]))
    np.testing.assert_array_equal(np.concatenate([first.actions, second.actions]), np.stack(actions))
    assert list(first.truncations) == [False, False, True] and not first.terminations.any()
    assert list(second.terminations) == [False, True] and list(second.rewards) == [0.0, 1.0]
    assert not any(pointmaze.visits_start_then_goal(PLANNER, e.observations) for e in (first, second))
    # Without an arrival there is nothing to split.
    assert len(pointmaze.split_for_stitching(PLANNER, episode, goal, arrived=False)) == 1


def test_pointmaze_dataset_follows_the_recipe(minari_root):
    dataset = generate.generate_pointmaze("tt/pointmaze/small-v0", num_steps=3000, seed=0, num_reference_episodes=2)
    assert dataset.total_steps == 3000
    goal_centre = PLANNER.centre(pointmaze.GOAL_CELL)
    for episode in dataset.iterate_episodes():
        observations = episode.observations
        assert 1 <= len(episode) <= pointmaze.EPISODE_STEPS
        assert not pointmaze.visits_start_then_goal(PLANNER, observations)
        goals = observations["desired_goal"]
        assert np.all(goals == goals[0]) and np.all(np.abs(goals[0] - goal_centre) <= pointmaze.POSITION_NOISE)
        np.testing.assert_array_equal(observations["achieved_goal"], observations["observation"][:, :2])
        distances = np.linalg.norm(observations["achieved_goal"] - goals, axis=-1)
        assert distances[0] > pointmaze.GOAL_RADIUS  # lingering steps are skipped
        reached = bool(distances[-1] <= pointmaze.GOAL_RADIUS)
        assert not np.any(distances[1:-1] <= pointmaze.GOAL_RADIUS)  # the first arrival ends the episode
        assert episode.terminations[-1] == reached and episode.truncations[-1] != reached
        assert not episode.terminations[:-1].any() and not episode.truncations[:-1].any()
        np.testing.assert_array_equal(episode.rewards, episode.terminations.astype(float))
    assert np.all(np.abs(episode.actions) <= 1.0)

    metadata = dataset.storage.metadata
    eval_spec = json.loads(metadata["eval_env_spec"])
    assert eval_spec["id"] == "PointMaze_UMaze-v3" and eval_spec["max_episode_steps"] == 300
    assert eval_spec["kwargs"]["continuing_task"] is False
    assert eval_spec["kwargs"]["maze_map"][3][1] == "r" and eval_spec["kwargs"]["maze_map"][1][1] == "g"
    # Success-based reference scores: random never succeeds, the noiseless planner always does.
    assert (metadata["ref_min_score"], metadata["ref_max_score"]) == (0.0, 1.0)

    with pytest.raises(UserError, match="tt/pointmaze/small-v0 already exists; pass --overwrite"):
        generate.generate_pointmaze("tt/pointmaze/small-v0", num_steps=100)
    generate.generate_pointmaze("tt/pointmaze/small-v0", num_steps=100, overwrite=True, num_reference_episodes=1)
    assert minari.load_dataset("tt/pointmaze/small-v0").total_steps == 100


def test_generation_is_deterministic_in_the_seed():
    def arrays(seed):
        episodes, _ = pointmaze.generate_episodes(1500, seed)
        return np.concatenate([e.observations["observation"] for e in episodes]), [len(e) for e in episodes]

    (first, lengths), (again, lengths_again), (other, _) = arrays(3), arrays(3), arrays(4)
    np.testing.assert_array_equal(first, again)
    assert lengths == lengths_again and sum(lengths) == 1500
    assert first.shape != other.shape or not np.array_equal(first, other)


def test_random_generation_records_the_random_return(minari_root):
    dataset = generate.generate_random("tt/hopper/random-v0", "Hopper-v5", num_steps=300, seed=0)
    episodes = list(dataset.iterate_episodes())
    assert dataset.total_steps == 300 and episodes[-1].truncations[-1]
    expected = np.mean([e.rewards.sum() for e in episodes[:-1]])
    assert dataset.storage.metadata["ref_min_score"] == pytest.approx(expected)
    assert json.loads(dataset.storage.metadata["env_spec"])["id"] == "Hopper-v5"
    data = sources.read_source("tt/hopper/random-v0")
    assert data.env_id == "Hopper-v5" and data.transitions["terminals"].sum() == len(episodes) - 1


def test_a_failed_write_leaves_no_dataset(minari_root, monkeypatch):
    def broken(dataset_id, *args, **kwargs):
        (minari_root / dataset_id / "data").mkdir(parents=True)
        raise OSError("disk full")

    monkeypatch.setattr(minari, "create_dataset_from_buffers", broken)
    with pytest.raises(OSError, match="disk full"):
        generate.generate_random("tt/hopper/broken-v0", "Hopper-v5", num_steps=50)
    assert not (minari_root / "tt/hopper/broken-v0").exists()


def _tiny_policy(directory, observation_dim=11, action_dim=3):
    """A stand-in for an exported policy: the same signature and assets/metadata.json as the export."""

    class Policy(tf.Module):
        def __init__(self):
            super().__init__()
            rng = np.random.default_rng(0)
            self.kernel = tf.Variable(0.3 * rng.standard_normal((observation_dim, action_dim)).astype(np.float32))

        @tf.function(input_signature=[tf.TensorSpec([None, observation_dim], tf.float32, name="observations")])
        def serve(self, observations):
            return {"actions": tf.tanh(observations @ self.kernel)}

    module = Policy()
    tf.saved_model.save(module, str(directory), signatures={"serving_default": module.serve})
    (directory / "assets").mkdir(exist_ok=True)
    (directory / "assets" / "metadata.json").write_text(json.dumps({
        "env_id": "Hopper-v5", "env_kwargs": {}, "max_episode_steps": 1000, "observation_keys": None,
        "dataset": "tt/hopper/random-v0",
    }))


def test_policy_rollouts_add_noise_and_score_the_noiseless_policy(minari_root, tmp_path):
    _tiny_policy(tmp_path / "policy")
    dataset = generate.generate_policy("tt/hopper/policy-v0", str(tmp_path / "policy"), noise_std=0.1,
                                       num_steps=200, seed=0, num_reference_episodes=2)
    assert dataset.total_steps == 200
    policy, _ = rollouts.saved_model_policy(tmp_path / "policy")
    observations = np.concatenate([e.observations[:-1] for e in dataset.iterate_episodes()])
    actions = np.concatenate([e.actions for e in dataset.iterate_episodes()])
    noise = actions - np.stack([policy(o) for o in observations])
    assert np.all(np.abs(actions) <= 1.0) and 0.05 < noise.std() < 0.15
    env = envs.make_env("Hopper-v5", {}, 1000)
    metadata = dataset.storage.metadata
    assert metadata["ref_max_score"] == pytest.approx(rollouts.mean_return(env, policy, 2, 0))
    random_return = rollouts.mean_return(env, rollouts.random_policy(env.action_space, 0), 2, 0)
    assert metadata["ref_min_score"] == pytest.approx(random_return)


def test_make_dataset_generates_the_project_dataset_when_missing(minari_root, tmp_path, monkeypatch):
    small = lambda dataset_id: generate.generate_pointmaze(dataset_id, num_steps=1000, num_reference_episodes=1)
    monkeypatch.setitem(generate.GENERATED_DATASETS, generate.POINTMAZE_DATASET_ID, small)
    dataset = make_dataset(generate.POINTMAZE_DATASET_ID, reward_preprocessing="antmaze", cache_dir=str(tmp_path))
    assert dataset.tensors["rewards"].shape == (1000,)
    assert dataset.metadata.env_kwargs["continuing_task"] is False
    assert (minari_root / generate.POINTMAZE_DATASET_ID / "data").is_dir()


def _cli(*args, root):
    return subprocess.run([sys.executable, "-m", "iql_tf.data.generate", *args], cwd=REPO_ROOT,
                          capture_output=True, text=True, env={**os.environ, "MINARI_DATASETS_PATH": str(root)})


def test_cli_generates_and_refuses_to_overwrite(minari_root):
    args = ["--num_steps=400", "--dataset_id=tt/pointmaze/cli-v0", "--reference_episodes=1"]
    assert _cli(*args, root=minari_root).returncode == 0
    again = _cli(*args, root=minari_root)
    assert again.returncode == 2
    assert [line for line in again.stderr.splitlines() if line.startswith("error:")] == [
        f"error: {minari_root / 'tt/pointmaze/cli-v0'}: Minari dataset tt/pointmaze/cli-v0 already exists; "
        "pass --overwrite to replace it or choose another --dataset_id"
    ]
    missing = _cli("--kind=random", "--env_id=Hopper-v5", root=minari_root)
    assert missing.returncode == 2 and "error: --kind=random needs --dataset_id" in missing.stderr
