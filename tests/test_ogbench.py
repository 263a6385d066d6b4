"""OGBench single-task data: generated here with OGBench's oracles in its file format, read as `ogbench:NAME`
with ogbench's own rewards and masks, trained and evaluated in the task's environment, and the mistakes."""

import importlib.util
import json

import gymnasium as gym
import numpy as np
import pytest
import tensorflow as tf

import iql_tf
from iql_tf import envs, generate
from iql_tf.data import ogbench_source, sources, validation
from iql_tf.data.pipeline import make_dataset
from iql_tf.settings import DataSettings
from iql_tf.errors import UserError
from iql_tf.generation import ogbench_play

NAME = "ogbench:cube-single-play-singletask-task2-v0"
EPISODES, STEPS = 3, 60


@pytest.fixture(scope="session")
def ogbench_dir(tmp_path_factory):
    """cube-single-play-v0 made here: 3 training episodes and 1 validation episode of 60 steps."""
    folder = tmp_path_factory.mktemp("ogbench")
    ogbench_play.generate("cube-single-play-v0", folder, num_episodes=EPISODES, episode_steps=STEPS, processes=1)
    return folder


def _read(source, folder):
    report = validation.Report()
    data = sources.read(sources.resolve(source, ogbench_dir=str(folder)), report)
    report.raise_first(source)
    return data


def test_generated_files_have_ogbench_layout_and_do_not_depend_on_the_processes(ogbench_dir, tmp_path):
    with np.load(ogbench_dir / "cube-single-play-v0.npz") as train, \
            np.load(ogbench_dir / "cube-single-play-v0-val.npz") as val:
        assert set(train.files) == {"observations", "actions", "terminals", "qpos", "qvel"}
        assert train["observations"].shape == (EPISODES * STEPS, 28) and train["observations"].dtype == np.float32
        assert train["actions"].shape == (EPISODES * STEPS, 5) and np.abs(train["actions"]).max() <= 1.0
        assert train["terminals"].dtype == bool
        np.testing.assert_array_equal(np.flatnonzero(train["terminals"]), np.arange(1, EPISODES + 1) * STEPS - 1)
        assert val["observations"].shape == (STEPS, 28)  # a tenth of the episodes, at least one
        # The oracle moves the arm: it is no constant or random policy.
        assert np.abs(np.diff(train["qpos"][:STEPS, :6], axis=0)).max() > 1e-3
        # Each row's simulator state is the state its observation shows (OGBench stores the state before the
        # step): the cube's position, scaled around (0.425, 0, 0) by 10, is observation[19:22] for cube-single.
        np.testing.assert_allclose(train["observations"][:, 19:22],
                                   (train["qpos"][:, 14:17] - [0.425, 0.0, 0.0]) * 10.0, atol=1e-4)
        kept = {key: train[key] for key in train.files}
    ogbench_play.generate("cube-single-play-v0", tmp_path, num_episodes=EPISODES, episode_steps=STEPS, processes=2)
    with np.load(tmp_path / "cube-single-play-v0.npz") as again:
        for key, value in kept.items():
            np.testing.assert_array_equal(again[key], value, err_msg=key)
    with pytest.raises(UserError, match=r"already exist; pass --overwrite"):
        ogbench_play.generate("cube-single-play-v0", tmp_path, num_episodes=1, episode_steps=STEPS, processes=1)


def test_rewards_and_masks_are_ogbenchs_own(ogbench_dir, tmp_path):
    """Rows whose cube sits on task2's target are successes: reward 0 and no bootstrap, as ogbench relabels."""
    import ogbench

    envs.register_ogbench_environments()
    env = gym.make("cube-single-singletask-task2-v0")
    env.reset()
    target = env.unwrapped._data.mocap_pos.copy()[0]  # what ogbench's relabelling compares the cube with
    with np.load(ogbench_dir / "cube-single-play-v0.npz") as file:
        arrays = {key: file[key].copy() for key in file.files}
    successes = [10, 11, 12, STEPS - 2, STEPS + 5]  # STEPS - 2: an episode's last transition
    arrays["qpos"][successes, 14:17] = target
    np.savez(tmp_path / "cube-single-play-v0.npz", **arrays)
    np.savez(tmp_path / "cube-single-play-v0-val.npz", **arrays)

    data = _read(NAME, tmp_path).transitions
    _, expected, _ = ogbench.make_env_and_datasets(NAME.split(":")[1], dataset_path=str(tmp_path / "cube-single-play-v0.npz"))
    for key in ("observations", "actions", "next_observations", "rewards"):
        np.testing.assert_array_equal(data[key], expected[key], err_msg=key)
    np.testing.assert_array_equal(data["terminals"], 1.0 - expected["masks"])
    assert data["terminals"].sum() == len(successes) and np.all(data["rewards"][data["terminals"] == 1] == 0)
    # Episode boundaries: each stored episode loses its last row (no s'), and ends the trajectory.
    assert len(data["rewards"]) == EPISODES * (STEPS - 1)
    assert np.all(data["dones"][np.arange(1, EPISODES + 1) * (STEPS - 1) - 1] == 1)
    assert np.all(data["dones"][data["terminals"] == 1] == 1)  # a success state ends its trajectory


def test_trains_and_evaluates_in_the_tasks_environment_through_the_api(ogbench_dir, tmp_path):
    agent = iql_tf.IQL.from_config("ogbench", hidden_dims=(16, 16), batch_size=32, jit_compile=False,
                                   eval_episodes=2, progress_bar=False, ogbench_dir=str(ogbench_dir),
                                   validation_fraction=0.1)
    agent.fit(NAME, steps=20, workdir=str(tmp_path / "run"))
    (results,) = agent.results
    # OGBench's own -val file is the held-out split (its one episode), with its TD errors in TensorBoard.
    events = tf.compat.v1.train.summary_iterator(str(next((tmp_path / "run").glob("events.out.tfevents.*"))))
    logged = {(value.tag, event.step) for event in events for value in event.summary.value}
    assert ("validation/critic_loss", 20) in logged and ("validation/v_mean", 20) in logged
    held_out = make_dataset(DataSettings(NAME, ogbench_dir=str(ogbench_dir), validation_fraction=0.1,
                                         cache_dir=str(tmp_path / "cache"))).validation
    assert held_out["rewards"].shape[0] == STEPS - 1
    assert 0.0 <= results["success_rate"] <= 1.0  # reported by the task's environment
    metadata = json.loads((tmp_path / "run" / "export" / "policy" / "assets" / "metadata.json").read_text())
    assert metadata["env_id"] == "cube-single-singletask-task2-v0"
    assert metadata["max_episode_steps"] == gym.spec("cube-single-singletask-task2-v0").max_episode_steps == 200
    assert agent.predict(np.zeros(28, np.float32)).shape == (5,)
    operative = (tmp_path / "run" / "operative_config.gin").read_text()
    for binding in ("critic_layer_norm = True", "constant_std = True", "tanh_mean = False",
                    "activation = 'gelu_tanh'", "kernel_init = 'glorot_uniform'", "update_order = 'joint'"):
        assert f"IQLAgent.{binding}" in operative


def test_mistakes_are_one_line(ogbench_dir, tmp_path, monkeypatch, caplog):
    with pytest.raises(UserError, match=r"not an OGBench dataset name.*family among cube-single, .*scene"):
        sources.resolve("ogbench:cube-sngle-play-singletask-task2-v0")
    with pytest.raises(UserError, match=r"goal-conditioned OGBench dataset.*cube-single-play-singletask-task2-v0"):
        sources.resolve("ogbench:cube-single-play-v0")
    with pytest.raises(UserError, match=r"has no 'navigate' dataset; it has play, noisy"):
        sources.resolve("ogbench:scene-navigate-singletask-v0")
    with pytest.raises(UserError, match=r"tasks 1-5 for each family, not task7"):
        sources.resolve("ogbench:scene-play-singletask-task7-v0")
    with pytest.raises(UserError, match=r"iql-generate --kind=ogbench --dataset_id=scene-play-v0 --ogbench_dir="):
        sources.resolve("ogbench:scene-play-singletask-task2-v0", ogbench_dir=str(tmp_path))
    with pytest.raises(UserError, match=r"ogbench_dir / --ogbench_dir given, but the source is no ogbench:NAME"):
        sources.resolve("data.npz", ogbench_dir=str(tmp_path))
    with pytest.raises(UserError, match=r"is no OGBench play dataset generated here; choose one of cube-single"):
        generate.generate_ogbench_from_flags("cube-single-noisy-v0", str(tmp_path), 1, STEPS, 0, 1, False)

    # Without the validation split: trained without it, and said so.
    (tmp_path / "cube-single-play-v0.npz").write_bytes((ogbench_dir / "cube-single-play-v0.npz").read_bytes())
    with caplog.at_level("WARNING"):
        data = _read(NAME, tmp_path)
    assert len(data.transitions["rewards"]) == EPISODES * (STEPS - 1)
    assert "no validation split cube-single-play-v0-val.npz" in caplog.text and "training without it" in caplog.text

    # Without the extra: the pip command.
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ogbench" else find_spec(name, *a))
    with pytest.raises(UserError, match=r"needs the ogbench package, which is not installed: pip install "
                                        r"'iql-tf\[ogbench\]'"):
        sources.resolve(NAME, ogbench_dir=str(ogbench_dir))
    with pytest.raises(UserError, match=r"--kind=ogbench needs the ogbench package"):
        generate.generate_ogbench_from_flags("cube-single-play-v0", str(tmp_path), 1, STEPS, 0, 1, False)


def test_every_family_is_one_ogbench_registers():
    envs.register_ogbench_environments()
    for family in ogbench_source.FAMILIES:
        assert gym.spec(f"{family}-singletask-task1-v0") and gym.spec(f"{family}-singletask-v0"), family
    with pytest.raises(UserError, match=r"pixel-based \(visual-\) and oracle-representation"):
        ogbench_source.parse("ogbench:visual-cube-single-play-singletask-task1-v0")


def test_names_split_as_ogbench_splits_them():
    name = ogbench_source.parse("ogbench:puzzle-4x4-play-singletask-task4-v0")
    assert (name.dataset, name.env_id) == ("puzzle-4x4-play-v0", "puzzle-4x4-singletask-task4-v0")
    default = ogbench_source.parse("ogbench:antmaze-large-navigate-singletask-v0")
    assert (default.dataset, default.env_id) == ("antmaze-large-navigate-v0", "antmaze-large-singletask-v0")
    assert envs.is_ogbench_env(default.env_id) and not envs.is_ogbench_env("Hopper-v5")


def test_the_reproduction_sweeps_five_tasks_with_bindings_gin_accepts(tmp_path):
    from iql_tf import sweep
    from tools import ogbench_reproduction

    for family, settings in ogbench_reproduction.FQL_IQL_SETTINGS.items():
        command = ogbench_reproduction.sweep_command(family, "0-1", str(tmp_path), str(tmp_path))
        grid = sweep.parse_grid([arg.split("=", 1)[1] for arg in command if arg.startswith("--grid=")])
        bindings = [arg.split("=", 1)[1] for arg in command if arg.startswith("--gin_bindings=")]
        specs = sweep.plan(["ogbench"], bindings, grid, [0, 1])  # parses every combination's gin
        sources_ = [value for _, values in grid for value in values]
        assert len(specs) == 10 and [ogbench_source.parse(s).task for s in sources_] == [1, 2, 3, 4, 5]
        assert {ogbench_source.parse(s).family for s in sources_} == {family}
    assert ogbench_reproduction.FQL_IQL_SETTINGS["cube-double"].beta == 0.3  # FQL paper, Table 6
    assert ogbench_reproduction.FQL_IQL_SETTINGS["humanoidmaze-medium"].discount == 0.995  # Table 5
