"""Offline generation: the PointMaze stitching recipe (docs/data.md), random and policy rollouts,
settings and environments refused up front, atomic writes into the Minari root."""

import functools
import json
import os
import socket
import subprocess
import sys

import minari
import numpy as np
import pytest
import tensorflow as tf
from conftest import REPO_ROOT

import datasets
from iql_tf import envs, evaluation
from iql_tf.data import conversion, generated, sources
from iql_tf.data.pipeline import make_dataset
from iql_tf.settings import DataSettings
from iql_tf.errors import UserError
from iql_tf import generate as generate_command
from iql_tf.generation import generators, pointmaze, rollouts
from iql_tf.policy import loading
from iql_tf.policy.metadata import METADATA_PATH, PolicyMetadata

TASK = pointmaze.UMAZE
PLANNER = TASK.planner()


def test_planner_follows_the_u_from_start_to_goal():
    path = [TASK.start_cell]
    while path[-1] != TASK.goal_cell:
        path.append(PLANNER.next_cell(path[-1], TASK.goal_cell))
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
    assert pointmaze.visits_start_then_goal(TASK, PLANNER, whole.observations)

    first, second = pointmaze.split_for_stitching(TASK, PLANNER, episode, goal, arrived=True)
    # The cut follows the last step in the start cell (state 2); no transition is lost.
    np.testing.assert_array_equal(first.observations["observation"], np.stack(states[:4]))
    np.testing.assert_array_equal(second.observations["observation"], np.stack(states[3:]))
    np.testing.assert_array_equal(np.concatenate([first.actions, second.actions]), np.stack(actions))
    assert list(first.truncations) == [False, False, True] and not first.terminations.any()
    assert list(second.terminations) == [False, True] and list(second.rewards) == [0.0, 1.0]
    assert not any(pointmaze.visits_start_then_goal(TASK, PLANNER, e.observations) for e in (first, second))
    # Without an arrival there is nothing to split.
    assert len(pointmaze.split_for_stitching(TASK, PLANNER, episode, goal, arrived=False)) == 1


def test_pointmaze_dataset_follows_the_recipe(minari_root):
    dataset = generators.generate_pointmaze("tt/pointmaze/small-v0", num_steps=3000, seed=0, num_reference_episodes=2)
    assert dataset.total_steps == 3000
    goal_centre = PLANNER.centre(TASK.goal_cell)
    for episode in dataset.iterate_episodes():
        observations = episode.observations
        assert 1 <= len(episode) <= TASK.episode_steps
        assert not pointmaze.visits_start_then_goal(TASK, PLANNER, observations)
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
        generators.generate_pointmaze("tt/pointmaze/small-v0", num_steps=100)
    generators.generate_pointmaze("tt/pointmaze/small-v0", num_steps=100, overwrite=True, num_reference_episodes=1)
    assert minari.load_dataset("tt/pointmaze/small-v0").total_steps == 100


def test_generation_is_deterministic_in_the_seed():
    def arrays(seed):
        episodes, _ = pointmaze.generate_episodes(TASK, 1500, seed)
        return np.concatenate([e.observations["observation"] for e in episodes]), [len(e) for e in episodes]

    (first, lengths), (again, lengths_again), (other, _) = arrays(3), arrays(3), arrays(4)
    np.testing.assert_array_equal(first, again)
    assert lengths == lengths_again and sum(lengths) == 1500
    assert first.shape != other.shape or not np.array_equal(first, other)


def test_random_generation_records_the_random_return(minari_root):
    dataset = generators.generate_random("tt/hopper/random-v0", "Hopper-v5", num_steps=300, seed=0,
                                       num_reference_episodes=3)
    episodes = list(dataset.iterate_episodes())
    assert dataset.total_steps == 300 and episodes[-1].truncations[-1]
    # The random policy scored as a trained policy is: evaluation.evaluate, episodes reset with seed * 100003 + i.
    space = envs.make_env("Hopper-v5").action_space
    expected = evaluation.evaluate(rollouts.random_policy(space, 0),
                                   evaluation.make_envs(lambda: envs.make_env("Hopper-v5"), 3), None, 3, 0)
    assert dataset.storage.metadata["ref_min_score"] == pytest.approx(expected["return_mean"])
    assert json.loads(dataset.storage.metadata["env_spec"])["id"] == "Hopper-v5"
    data = datasets.read_source("tt/hopper/random-v0")
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
        generators.generate_random("tt/hopper/broken-v0", "Hopper-v5", num_steps=50, num_reference_episodes=1)
    assert not any("broken" in entry or ".partial-" in entry for entry in _root_entries(minari_root))
    assert minari.list_local_datasets() == {}  # no dataset, no staging folder
    assert os.environ["MINARI_DATASETS_PATH"] == str(minari_root)  # restored after the staging write


def test_an_existing_dataset_survives_a_failed_overwrite(minari_root, monkeypatch):
    generators.generate_random("tt/hopper/keep-v0", "Hopper-v5", num_steps=60, num_reference_episodes=1)
    before = _root_entries(minari_root)
    _fail_after_writing(monkeypatch, OSError("disk full"))
    with pytest.raises(OSError, match="disk full"):
        generators.generate_random("tt/hopper/keep-v0", "Hopper-v5", num_steps=90, overwrite=True,
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
        generators.generate_random("tt/hopper/race-v0", "Hopper-v5", num_steps=20, num_reference_episodes=1)
    assert [entry for entry in _root_entries(minari_root) if "race-v0" in entry] == [
        "tt/hopper/race-v0", "tt/hopper/race-v0/data"]  # the other dataset, untouched; no staging folder
    assert not any(".partial-" in entry for entry in _root_entries(minari_root))


def test_a_written_dataset_loads_and_lists_and_sweeps_a_stale_staging_folder(minari_root):
    # What a killed run leaves: a hidden staging folder of a process that no longer exists.
    (minari_root / "tt/hopper").mkdir(parents=True)
    stale = minari_root / f"tt/hopper/.random-v0.partial-{socket.gethostname()}-999999999-abc"
    (stale / "minari-root/tt/hopper/random-v0/data").mkdir(parents=True)
    generators.generate_random("tt/hopper/random-v0", "Hopper-v5", num_steps=40, num_reference_episodes=1)
    assert list(minari.list_local_datasets()) == ["tt/hopper/random-v0"]
    assert minari.load_dataset("tt/hopper/random-v0").total_steps == 40
    assert not stale.exists()
    # minari's own namespace metadata, as if minari had written the dataset in place.
    from minari.namespace import list_local_namespaces

    assert list_local_namespaces() == ["tt", "tt/hopper"]
    generators.generate_random("tt/hopper/random-v0", "Hopper-v5", num_steps=30, overwrite=True,
                             num_reference_episodes=1)
    assert minari.load_dataset("tt/hopper/random-v0").total_steps == 30
    assert sorted(path.name for path in (minari_root / "tt/hopper").iterdir()) == [
        "namespace_metadata.json", "random-v0"]


def _tiny_policy(directory, observation_dim=11, action_dim=3, env_id="Hopper-v5"):
    """A stand-in for an exported policy: the same signature and assets/metadata.json as the export, its
    weights constants as in the export (so it passes the export check)."""

    class Policy(tf.Module):
        def __init__(self):
            super().__init__()
            rng = np.random.default_rng(0)
            self.kernel = tf.constant(0.3 * rng.standard_normal((observation_dim, action_dim)).astype(np.float32))

        @tf.function(input_signature=[tf.TensorSpec([None, observation_dim], tf.float32, name="observations")])
        def serve(self, observations):
            return {"actions": tf.tanh(observations @ self.kernel)}

    module = Policy()
    tf.saved_model.save(module, str(directory), signatures={"serving_default": module.serve})
    (directory / METADATA_PATH).parent.mkdir(exist_ok=True)
    (directory / METADATA_PATH).write_text(PolicyMetadata(
        env_id=env_id, env_kwargs={}, max_episode_steps=1000, observation_keys=None, observation_dim=observation_dim,
        action_dim=action_dim, action_low=[-1.0] * action_dim, action_high=[1.0] * action_dim,
        observation_normalization=None, ref_min_score=None, ref_max_score=None, dataset="tt/hopper/random-v0",
        dataset_checksum="0", seed=0, step=1, evaluation={}, gin_config="").to_json())


def test_policy_rollouts_add_noise_and_are_scored_as_evaluation_scores(minari_root, tmp_path):
    _tiny_policy(tmp_path / "policy")
    dataset = generators.generate_policy("tt/hopper/policy-v0", str(tmp_path / "policy"), noise_std=0.1,
                                       num_steps=200, seed=0, num_reference_episodes=2)
    assert dataset.total_steps == 200
    policy, _ = loading.load_policy(tmp_path / "policy")
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
    env = envs.make_env(TASK.env_id, TASK.eval_env_kwargs(), TASK.eval_episode_steps)
    observation, _ = env.reset(seed=5)
    flat = envs.flatten_observation(observation, envs.observation_keys(env.observation_space))
    np.testing.assert_array_equal(flat[pointmaze.STATE], np.float32(observation["observation"]))
    np.testing.assert_array_equal(flat[pointmaze.DESIRED_GOAL], np.float32(observation["desired_goal"]))
    expected = PLANNER.action(observation["observation"], observation["desired_goal"])
    np.testing.assert_allclose(pointmaze.planner_policy(TASK)(np.stack([flat, flat])), [expected] * 2, atol=1e-5)


@pytest.fixture
def small_project_dataset(minari_root, monkeypatch):
    """The project's id generated at 1000 steps instead of 100k, so the generation runs in a test."""
    small = functools.partial(generators.generate_pointmaze, num_steps=1000, num_reference_episodes=1)
    monkeypatch.setitem(generated._GENERATORS, generators.POINTMAZE_DATASET_IDS["umaze"], small)
    return minari_root / generators.POINTMAZE_DATASET_IDS["umaze"]


def test_make_dataset_generates_the_project_dataset_when_missing(small_project_dataset, tmp_path):
    dataset = make_dataset(DataSettings(generators.POINTMAZE_DATASET_IDS["umaze"], reward_preprocessing="antmaze", cache_dir=str(tmp_path)))
    assert dataset.tensors["rewards"].shape == (1000,)
    assert dataset.metadata.env_kwargs["continuing_task"] is False
    assert (small_project_dataset / "data").is_dir()
    assert minari.load_dataset(generators.POINTMAZE_DATASET_IDS["umaze"]).total_steps == 1000


def test_the_converter_generates_the_project_dataset_when_missing(small_project_dataset, tmp_path, monkeypatch):
    source = sources.resolve(generators.POINTMAZE_DATASET_IDS["umaze"], generate=True)
    assert source.kind == sources.MINARI and (small_project_dataset / "data").is_dir()
    assert conversion.convert(source, tmp_path / "converted").num_transitions == 1000
    # Present now: not generated again.
    monkeypatch.setitem(generated._GENERATORS, generators.POINTMAZE_DATASET_IDS["umaze"], pytest.fail)
    assert sources.resolve(generators.POINTMAZE_DATASET_IDS["umaze"], generate=True).kind == sources.MINARI


SETTINGS = {
    "pointmaze num_steps=0": (lambda: generators.generate_pointmaze("tt/p/zero-v0", num_steps=0),
                              r"num_steps must be > 0, got 0 \(--num_steps"),
    "pointmaze unknown maze": (lambda: generators.generate_pointmaze(maze="octagon"),
                               r"--maze='octagon' is unknown; mazes: umaze, medium, large"),
    "random num_steps=0": (lambda: generators.generate_random("tt/r/zero-v0", "Hopper-v5", num_steps=0),
                           r"num_steps must be > 0, got 0"),
    "pointmaze reference_episodes=0": (
        lambda: generators.generate_pointmaze("tt/p/zero-v0", num_steps=10, num_reference_episodes=0),
        r"num_reference_episodes must be > 0, got 0 \(--reference_episodes\)"),
    "policy noise_std<0": (lambda: generators.generate_policy("tt/p/noise-v0", "nowhere", noise_std=-0.1),
                           r"noise_std must be >= 0, got -0.1 \(--noise_std\)"),
    "policy noise_std=nan": (lambda: generators.generate_policy("tt/p/noise-v0", "nowhere", noise_std=float("nan")),
                             r"noise_std must be >= 0, got nan"),
}


@pytest.mark.parametrize("case", sorted(SETTINGS))
def test_settings_that_generate_nothing_are_refused_before_any_work(case, minari_root):
    generator, message = SETTINGS[case]
    with pytest.raises(UserError, match=message):
        generator()
    assert list(minari_root.iterdir()) == []


def test_random_generation_needs_a_box_action_space_and_keeps_other_bounds(minari_root):
    with pytest.raises(UserError, match=r"^environment CartPole-v1: action space Discrete\(2\) is not a Box"):
        generators.generate_random("tt/cartpole/random-v0", "CartPole-v1", num_steps=10)
    assert list(minari_root.iterdir()) == []
    dataset = generators.generate_random("tt/pendulum/random-v0", "Pendulum-v1", num_steps=50, num_reference_episodes=1)
    actions = np.concatenate([episode.actions for episode in dataset.iterate_episodes()])
    assert np.abs(actions).max() > 1.0 and np.abs(actions).max() <= 2.0  # Pendulum's own units


def test_a_policy_directory_that_is_not_an_export(minari_root, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "file.txt").write_text("not a policy")
    for path in (tmp_path / "empty", tmp_path / "file.txt", tmp_path / "missing"):
        with pytest.raises(UserError, match=rf"^{path}: no SavedModel there \(saved_model.pb not found\); give the "
                                            r"exported policy of a training run, RUN_DIR/export/policy"):
            generators.generate_policy("tt/hopper/policy-v0", str(path), noise_std=0.1, num_steps=10)
    _tiny_policy(tmp_path / "broken")
    (tmp_path / "broken" / "saved_model.pb").write_bytes(b"")
    with pytest.raises(UserError, match=r"broken: cannot load the SavedModel's serving_default signature"):
        generators.generate_policy("tt/hopper/policy-v0", str(tmp_path / "broken"), noise_std=0.1, num_steps=10)
    (tmp_path / "broken" / METADATA_PATH).write_text("{}")
    with pytest.raises(UserError, match=r"metadata.json: missing field 'env_id'; export the policy again"):
        generators.generate_policy("tt/hopper/policy-v0", str(tmp_path / "broken"), noise_std=0.1, num_steps=10)
    assert list(minari_root.iterdir()) == []


def test_a_policy_trained_without_an_environment_cannot_be_rolled_out(minari_root, tmp_path):
    _tiny_policy(tmp_path / "policy", env_id=None)
    with pytest.raises(UserError, match=rf"^{tmp_path / 'policy'}: the policy's dataset named no environment.*"
                                        rf"`iql-evaluate {tmp_path / 'policy'} --env_id=ENV` \(no retraining needed\)"):
        generators.generate_policy("tt/hopper/policy-v0", str(tmp_path / "policy"), noise_std=0.1, num_steps=10)


def _cli(*args, root):
    return subprocess.run([sys.executable, "-m", "iql_tf.generate", *args], cwd=REPO_ROOT,
                          capture_output=True, text=True, env={**os.environ, "MINARI_DATASETS_PATH": str(root)})


def test_cli_generates_and_refuses_mistakes_in_one_line(minari_root):
    args = ["--num_steps=400", "--dataset_id=tt/pointmaze/cli-v0", "--reference_episodes=1"]
    assert _cli(*args, root=minari_root).returncode == 0
    result = _cli(*args, root=minari_root)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and "Traceback" not in result.stderr and errors == [
        f"error: {minari_root / 'tt/pointmaze/cli-v0'}: Minari dataset tt/pointmaze/cli-v0 already exists; "
        "pass --overwrite to replace it or choose another --dataset_id"]
    assert minari.list_local_datasets().keys() == {"tt/pointmaze/cli-v0"}


def test_mistakes_of_the_command_line_are_user_errors(minari_root, tmp_path):
    flags = {"kind": "random", "env_id": "Hopper-v5", "dataset_id": None, "num_steps": 10, "seed": 0,
             "overwrite": False, "env_kwargs": "{}", "policy": None, "noise_std": 0.1, "reference_episodes": 1}
    with pytest.raises(UserError, match="--kind=random needs --dataset_id"):
        generate_command.generate_from_flags(**flags)
    with pytest.raises(UserError, match="--kind=policy needs --policy"):
        generate_command.generate_from_flags(**dict(flags, kind="policy", dataset_id="tt/x/policy-v0"))
    with pytest.raises(UserError, match="num_steps must be > 0, got 0 \\(--num_steps: transitions to generate\\)"):
        generate_command.generate_from_flags(**dict(flags, kind="pointmaze", num_steps=0))
    assert list(minari_root.iterdir()) == []
