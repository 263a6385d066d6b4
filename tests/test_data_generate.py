"""Offline generation: the PointMaze stitching recipe (SPEC.md section 2), random and policy rollouts,
settings and environments refused up front, atomic writes into the Minari root."""

import functools
import json
import os
import subprocess
import sys

import minari
import numpy as np
import pytest
import tensorflow as tf
from conftest import REPO_ROOT

from iql_tf import envs, evaluation
from iql_tf.data import convert as convert_lib
from iql_tf.data import generate, pointmaze, rollouts, sources
from iql_tf.data.minari_root import STAGING_PREFIX
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
    dataset = generate.generate_random("tt/hopper/random-v0", "Hopper-v5", num_steps=300, seed=0,
                                       num_reference_episodes=3)
    episodes = list(dataset.iterate_episodes())
    assert dataset.total_steps == 300 and episodes[-1].truncations[-1]
    # The random policy scored as a trained policy is: evaluation.evaluate, episodes reset with seed * 100003 + i.
    space = envs.make_env("Hopper-v5").action_space
    expected = evaluation.evaluate(rollouts.random_policy(space, 0),
                                   evaluation.make_envs(lambda: envs.make_env("Hopper-v5"), 3), None, 3, 0)
    assert dataset.storage.metadata["ref_min_score"] == pytest.approx(expected["return_mean"])
    assert json.loads(dataset.storage.metadata["env_spec"])["id"] == "Hopper-v5"
    data = sources.read_source("tt/hopper/random-v0")
    assert data.env_id == "Hopper-v5" and data.transitions["terminals"].sum() == len(episodes) - 1


def _fail_after_writing(monkeypatch, error: BaseException):
    """minari's writer writes the whole dataset, then `error` strikes (a full disk, a kill) before it returns."""
    create = minari.create_dataset_from_buffers

    def broken(*args, **kwargs):
        create(*args, **kwargs)
        raise error

    monkeypatch.setattr(minari, "create_dataset_from_buffers", broken)


def _root_entries(root):
    return sorted(str(path.relative_to(root)) for path in root.rglob("*"))


@pytest.mark.parametrize("error", [OSError("disk full"), KeyboardInterrupt()])
def test_a_failed_write_leaves_nothing_at_the_id(minari_root, monkeypatch, error):
    _fail_after_writing(monkeypatch, error)
    with pytest.raises(type(error)):
        generate.generate_random("tt/hopper/broken-v0", "Hopper-v5", num_steps=50, num_reference_episodes=1)
    assert _root_entries(minari_root) == []  # no dataset, no namespace, no staging folder
    assert os.environ["MINARI_DATASETS_PATH"] == str(minari_root)  # restored after the staging write


def test_an_existing_dataset_survives_a_failed_overwrite(minari_root, monkeypatch):
    generate.generate_random("tt/hopper/keep-v0", "Hopper-v5", num_steps=60, num_reference_episodes=1)
    before = _root_entries(minari_root)
    _fail_after_writing(monkeypatch, OSError("disk full"))
    with pytest.raises(OSError, match="disk full"):
        generate.generate_random("tt/hopper/keep-v0", "Hopper-v5", num_steps=90, overwrite=True,
                                 num_reference_episodes=1)
    assert _root_entries(minari_root) == before
    assert minari.load_dataset("tt/hopper/keep-v0").total_steps == 60


def test_a_dataset_created_meanwhile_by_another_process_is_kept(minari_root, monkeypatch):
    create = minari.create_dataset_from_buffers
    other = minari_root / "tt/hopper/race-v0/data"

    def racing(*args, **kwargs):
        other.mkdir(parents=True)  # the other process's dataset appears during this write
        return create(*args, **kwargs)

    monkeypatch.setattr(minari, "create_dataset_from_buffers", racing)
    with pytest.raises(UserError, match=r"race-v0: Minari dataset was created by another process during the "
                                        r"generation; pass --overwrite"):
        generate.generate_random("tt/hopper/race-v0", "Hopper-v5", num_steps=20, num_reference_episodes=1)
    assert [entry for entry in _root_entries(minari_root) if "race-v0" in entry] == [
        "tt/hopper/race-v0", "tt/hopper/race-v0/data"]  # the other dataset, untouched; no staging folder
    assert not any(entry.startswith(STAGING_PREFIX) for entry in _root_entries(minari_root))


def test_a_written_dataset_loads_and_lists_beside_a_stale_staging_folder(minari_root):
    # What a killed run leaves: a hidden staging root holding a half-written dataset.
    stale = minari_root / f"{STAGING_PREFIX}killed"
    (stale / "tt/hopper/random-v0/data").mkdir(parents=True)
    (stale / "tt/hopper/random-v0/data/main_data.hdf5").write_bytes(b"half")
    generate.generate_random("tt/hopper/random-v0", "Hopper-v5", num_steps=40, num_reference_episodes=1)
    assert list(minari.list_local_datasets()) == ["tt/hopper/random-v0"]
    assert minari.load_dataset("tt/hopper/random-v0").total_steps == 40
    # minari's own namespace metadata, as if minari had written the dataset in place.
    from minari.namespace import list_local_namespaces

    assert list_local_namespaces() == ["tt", "tt/hopper"]
    generate.generate_random("tt/hopper/random-v0", "Hopper-v5", num_steps=30, overwrite=True,
                             num_reference_episodes=1)
    assert minari.load_dataset("tt/hopper/random-v0").total_steps == 30
    assert sorted(path.name for path in minari_root.iterdir()) == [stale.name, "tt"]


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


def test_policy_rollouts_add_noise_and_are_scored_as_evaluation_scores(minari_root, tmp_path):
    _tiny_policy(tmp_path / "policy")
    dataset = generate.generate_policy("tt/hopper/policy-v0", str(tmp_path / "policy"), noise_std=0.1,
                                       num_steps=200, seed=0, num_reference_episodes=2)
    assert dataset.total_steps == 200
    policy, _ = rollouts.saved_model_policy(tmp_path / "policy")
    observations = np.concatenate([e.observations[:-1] for e in dataset.iterate_episodes()])
    actions = np.concatenate([e.actions for e in dataset.iterate_episodes()])
    noise = actions - policy(observations)
    assert np.all(np.abs(actions) <= 1.0) and 0.05 < noise.std() < 0.15
    # The reference scores are what the trainer's evaluation (same function, same seeding) reports.
    make_env = functools.partial(envs.make_env, "Hopper-v5", {}, 1000)
    metadata = dataset.storage.metadata
    policy_return = evaluation.evaluate(policy, evaluation.make_envs(make_env, 2), None, 2, 0)["return_mean"]
    assert metadata["ref_max_score"] == pytest.approx(policy_return)
    random_policy = rollouts.random_policy(make_env().action_space, 0)
    random_return = evaluation.evaluate(random_policy, evaluation.make_envs(make_env, 2), None, 2, 0)["return_mean"]
    assert metadata["ref_min_score"] == pytest.approx(random_return)


def test_the_planner_reads_state_and_goal_from_flattened_observations():
    env = envs.make_env(pointmaze.ENV_ID, pointmaze.eval_env_kwargs(), pointmaze.EVAL_EPISODE_STEPS)
    observation, _ = env.reset(seed=5)
    flat = envs.flatten_observation(observation, envs.observation_keys(env.observation_space))
    np.testing.assert_array_equal(flat[pointmaze.STATE], np.float32(observation["observation"]))
    np.testing.assert_array_equal(flat[pointmaze.DESIRED_GOAL], np.float32(observation["desired_goal"]))
    expected = PLANNER.action(observation["observation"], observation["desired_goal"])
    np.testing.assert_allclose(pointmaze.planner_policy()(np.stack([flat, flat])), [expected] * 2, atol=1e-5)


@pytest.fixture
def small_project_dataset(minari_root, monkeypatch):
    """The project's id generated at 1000 steps instead of 100k, so the hook runs in a test."""
    small = functools.partial(generate.generate_pointmaze, num_steps=1000, num_reference_episodes=1)
    monkeypatch.setitem(generate.GENERATED_DATASETS, generate.POINTMAZE_DATASET_ID, small)
    return minari_root / generate.POINTMAZE_DATASET_ID


def test_make_dataset_generates_the_project_dataset_when_missing(small_project_dataset, tmp_path):
    dataset = make_dataset(generate.POINTMAZE_DATASET_ID, reward_preprocessing="antmaze", cache_dir=str(tmp_path))
    assert dataset.tensors["rewards"].shape == (1000,)
    assert dataset.metadata.env_kwargs["continuing_task"] is False
    assert (small_project_dataset / "data").is_dir()
    assert minari.load_dataset(generate.POINTMAZE_DATASET_ID).total_steps == 1000


def test_the_converter_generates_the_project_dataset_when_missing(small_project_dataset, tmp_path):
    metadata = convert_lib.convert(generate.POINTMAZE_DATASET_ID, tmp_path / "converted")
    assert metadata.num_transitions == 1000 and (small_project_dataset / "data").is_dir()


def test_generate_if_missing_leaves_other_and_present_ids_alone(small_project_dataset, monkeypatch):
    generate.generate_if_missing("D4RL/door/human-v2")  # not the project's: reading it reports it missing
    assert not small_project_dataset.exists()
    generate.generate_if_missing(generate.POINTMAZE_DATASET_ID)
    monkeypatch.setitem(generate.GENERATED_DATASETS, generate.POINTMAZE_DATASET_ID, pytest.fail)
    generate.generate_if_missing(generate.POINTMAZE_DATASET_ID)  # present: not generated again


SETTINGS = {
    "pointmaze num_steps=0": (lambda: generate.generate_pointmaze("tt/p/zero-v0", num_steps=0),
                              r"num_steps must be > 0, got 0 \(--num_steps"),
    "random num_steps=0": (lambda: generate.generate_random("tt/r/zero-v0", "Hopper-v5", num_steps=0),
                           r"num_steps must be > 0, got 0"),
    "pointmaze reference_episodes=0": (
        lambda: generate.generate_pointmaze("tt/p/zero-v0", num_steps=10, num_reference_episodes=0),
        r"num_reference_episodes must be > 0, got 0 \(--reference_episodes\)"),
    "policy noise_std<0": (lambda: generate.generate_policy("tt/p/noise-v0", "nowhere", noise_std=-0.1),
                           r"noise_std must be >= 0, got -0.1 \(--noise_std\)"),
    "policy noise_std=nan": (lambda: generate.generate_policy("tt/p/noise-v0", "nowhere", noise_std=float("nan")),
                             r"noise_std must be >= 0, got nan"),
}


@pytest.mark.parametrize("case", sorted(SETTINGS))
def test_settings_that_generate_nothing_are_refused_before_any_work(case, minari_root):
    generator, message = SETTINGS[case]
    with pytest.raises(UserError, match=message):
        generator()
    assert list(minari_root.iterdir()) == []


@pytest.mark.parametrize("env_id, space", [("Pendulum-v1", r"Box\(-2.0, 2.0"), ("CartPole-v1", r"Discrete\(2\)")])
def test_random_generation_needs_actions_in_minus_one_one(env_id, space, minari_root):
    with pytest.raises(UserError, match=rf"^environment {env_id}: action space {space}.* is not a Box within "
                                        r"\[-1, 1\]; .*RescaleAction"):
        generate.generate_random(f"tt/{env_id.lower()}/random-v0", env_id, num_steps=10)
    assert list(minari_root.iterdir()) == []


def test_a_policy_directory_that_is_not_an_export(minari_root, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "file.txt").write_text("not a policy")
    for path in (tmp_path / "empty", tmp_path / "file.txt", tmp_path / "missing"):
        with pytest.raises(UserError, match=rf"^{path}: no SavedModel there \(saved_model.pb not found\); --policy "
                                            r"must be the exported policy of a training run, RUN_DIR/export/policy"):
            generate.generate_policy("tt/hopper/policy-v0", str(path), noise_std=0.1, num_steps=10)
    (tmp_path / "empty" / "saved_model.pb").write_bytes(b"")
    (tmp_path / "empty" / "assets").mkdir()
    (tmp_path / "empty" / "assets" / "metadata.json").write_text(json.dumps(
        {"env_id": "Hopper-v5", "env_kwargs": {}, "max_episode_steps": 1000, "observation_keys": None}))
    with pytest.raises(UserError, match=r"empty: cannot load the SavedModel's serving_default signature"):
        generate.generate_policy("tt/hopper/policy-v0", str(tmp_path / "empty"), noise_std=0.1, num_steps=10)
    assert list(minari_root.iterdir()) == []


def test_a_policy_trained_without_an_environment_cannot_be_rolled_out(minari_root, tmp_path):
    _tiny_policy(tmp_path / "policy")
    path = tmp_path / "policy" / "assets" / "metadata.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "env_id": None}))
    with pytest.raises(UserError, match=rf"^{path}: field 'env_id' is None: the policy was trained on a dataset "
                                        r"that names no environment.*bind make_dataset.env_id"):
        generate.generate_policy("tt/hopper/policy-v0", str(tmp_path / "policy"), noise_std=0.1, num_steps=10)


def _cli(*args, root):
    return subprocess.run([sys.executable, "-m", "iql_tf.data.generate", *args], cwd=REPO_ROOT,
                          capture_output=True, text=True, env={**os.environ, "MINARI_DATASETS_PATH": str(root)})


def _cli_error(*args, root):
    """The one `error:` line of a CLI run that must fail with status 2."""
    result = _cli(*args, root=root)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(errors) == 1, result.stderr
    return errors[0]


def test_cli_generates_and_refuses_to_overwrite(minari_root):
    args = ["--num_steps=400", "--dataset_id=tt/pointmaze/cli-v0", "--reference_episodes=1"]
    assert _cli(*args, root=minari_root).returncode == 0
    assert _cli_error(*args, root=minari_root) == (
        f"error: {minari_root / 'tt/pointmaze/cli-v0'}: Minari dataset tt/pointmaze/cli-v0 already exists; "
        "pass --overwrite to replace it or choose another --dataset_id"
    )
    assert _cli_error("--kind=random", "--env_id=Hopper-v5", root=minari_root).startswith(
        "error: --kind=random needs --dataset_id")


def test_cli_mistakes_are_one_error_line_and_write_nothing(minari_root, tmp_path):
    assert _cli_error("--num_steps=0", root=minari_root) == (
        "error: num_steps must be > 0, got 0 (--num_steps: transitions to generate)")
    assert _cli_error("--kind=random", "--env_id=Pendulum-v1", "--dataset_id=tt/pendulum/random-v0",
                      root=minari_root).startswith("error: environment Pendulum-v1: action space Box(-2.0, 2.0")
    assert _cli_error("--kind=policy", f"--policy={tmp_path}", "--dataset_id=tt/hopper/policy-v0",
                      root=minari_root).startswith(f"error: {tmp_path}: no SavedModel there")
    assert list(minari_root.iterdir()) == []
