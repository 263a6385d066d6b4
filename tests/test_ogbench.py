"""OGBench single-task data: generated here with OGBench's oracles in its file format, read as `ogbench:NAME`
with ogbench's own rewards and masks, trained and evaluated in the task's environment, and the mistakes."""

import ctypes.util
import functools
import importlib.util
import json
import os
import subprocess
import sys

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
    with pytest.raises(UserError, match=r"oracle-representation \(-oraclerep\) datasets are not supported"):
        ogbench_source.parse("ogbench:cube-single-play-oraclerep-singletask-task1-v0")
    with pytest.raises(UserError, match=r"OGBench has no visual antsoccer-arena; its visual families are cube-single"):
        ogbench_source.parse("ogbench:visual-antsoccer-arena-navigate-singletask-v0")
    for family in ogbench_source.VISUAL_FAMILIES:  # what OGBench registers through its camera
        assert gym.spec(f"visual-{family}-singletask-task1-v0"), family


def test_names_split_as_ogbench_splits_them():
    name = ogbench_source.parse("ogbench:puzzle-4x4-play-singletask-task4-v0")
    assert (name.dataset, name.env_id) == ("puzzle-4x4-play-v0", "puzzle-4x4-singletask-task4-v0")
    default = ogbench_source.parse("ogbench:antmaze-large-navigate-singletask-v0")
    assert (default.dataset, default.env_id) == ("antmaze-large-navigate-v0", "antmaze-large-singletask-v0")
    assert envs.is_ogbench_env(default.env_id) and not envs.is_ogbench_env("Hopper-v5")
    visual = ogbench_source.parse("ogbench:visual-cube-single-play-singletask-task2-v0")
    assert (visual.dataset, visual.env_id, visual.state_env_id) == (
        "visual-cube-single-play-v0", "visual-cube-single-singletask-task2-v0", "cube-single-singletask-task2-v0")
    assert envs.renders_with_mujoco(visual.env_id) and not envs.renders_with_mujoco(visual.state_env_id)


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
    command = ogbench_reproduction.sweep_command("visual-cube-single", "0", str(tmp_path), str(tmp_path))
    bindings = [arg.split("=", 1)[1] for arg in command if arg.startswith("--gin_bindings=")]
    (spec,) = sweep.plan(["ogbench"], bindings, [], [0])
    assert {"IQLAgent.encoder = 'impala_small'", "make_dataset.frame_stack = 3", "IQLAgent.hidden_dims = (512, 512, "
            "512, 512)", "IQLAgent.augmentation_probability = 0.5"} <= set(bindings)
    assert "ogbench:visual-cube-single-play-singletask-task5-v0" in " ".join(command) and spec
    with pytest.raises(UserError, match=r"--family='visual-antsoccer-arena' is unknown; families: cube-single"):
        ogbench_reproduction.family_settings("visual-antsoccer-arena")
    assert ogbench_reproduction.FQL_IQL_SETTINGS["cube-double"].beta == 0.3  # FQL paper, Table 6
    assert ogbench_reproduction.FQL_IQL_SETTINGS["humanoidmaze-medium"].discount == 0.995  # Table 5


# Rendering offscreen needs a GL library: OSMesa on a CPU (apt-get install libosmesa6), or EGL with a GPU.
OSMESA = ctypes.util.find_library("OSMesa")
needs_rendering = pytest.mark.skipif(not OSMESA and os.environ.get("MUJOCO_GL") != "egl",
                                     reason="no offscreen GL here: apt-get install libosmesa6, or MUJOCO_GL=egl")


def _renderer(monkeypatch) -> None:
    if os.environ.get("MUJOCO_GL") != "egl":
        monkeypatch.setenv("MUJOCO_GL", "osmesa")


@needs_rendering
def test_visual_datasets_are_the_state_datasets_through_the_camera_trained_and_evaluated(ogbench_dir, tmp_path,
                                                                                         monkeypatch):
    """A visual play dataset generated here is its state twin's episodes (same actions, states, ends) with
    OGBench's 64x64 frames; read as ogbench:visual-..., it has the state dataset's rewards and masks, trains
    with stacked frames and is evaluated in the visual task, whose frames MuJoCo renders in a process of its
    own (in this one, beside TensorFlow, the renderer crashes the process)."""
    _renderer(monkeypatch)
    steps = 12
    ogbench_play.generate("visual-cube-single-play-v0", tmp_path, num_episodes=2, episode_steps=steps, processes=1)
    ogbench_play.generate("cube-single-play-v0", tmp_path / "state", num_episodes=2, episode_steps=steps,
                          processes=1)
    with np.load(tmp_path / "visual-cube-single-play-v0.npz") as visual, \
            np.load(tmp_path / "state" / "cube-single-play-v0.npz") as state:
        assert visual["observations"].shape == (2 * steps, 64, 64, 3) and visual["observations"].dtype == np.uint8
        assert np.ptp(visual["observations"].reshape(2 * steps, -1), axis=1).min() > 50  # scenes, not blanks
        for key in ("actions", "qpos", "qvel", "terminals"):
            np.testing.assert_array_equal(visual[key], state[key], err_msg=key)
        frames = visual["observations"]
    seen = _read("ogbench:visual-cube-single-play-singletask-task2-v0", tmp_path).transitions
    (tmp_path / "state" / "cube-single-play-v0-val.npz").unlink()
    expected = _read(NAME, tmp_path / "state").transitions
    for key in ("actions", "rewards", "terminals", "dones"):
        np.testing.assert_array_equal(seen[key], expected[key], err_msg=key)
    kept = np.delete(np.arange(2 * steps), [steps - 1, 2 * steps - 1])  # each episode's last row has no s'
    np.testing.assert_array_equal(seen["observations"], frames[kept])
    np.testing.assert_array_equal(seen["next_observations"], frames[kept + 1])

    agent = iql_tf.IQL.from_config("ogbench", hidden_dims=(8,), batch_size=8, jit_compile=False, encoder="conv_small",
                                   frame_stack=2, eval_episodes=1, progress_bar=False, ogbench_dir=str(tmp_path),
                                   env_kwargs={"max_episode_steps": 3}, cache_dir=str(tmp_path / "cache"))
    agent.fit("ogbench:visual-cube-single-play-singletask-task2-v0", steps=2, workdir=str(tmp_path / "run"))
    (results,) = agent.results
    assert results["return_mean"] <= 0 and 0.0 <= results["success_rate"] <= 1.0  # three rendered steps


def test_an_environment_in_its_own_process_steps_as_it_would_here(tmp_path):
    from iql_tf.env_process import ProcessEnv, rendering_failed

    # What a renderer's failures look like: glfw without a display, EGL without a device; not an oracle's bug.
    assert rendering_failed(type("FatalError", (Exception,), {})("no OpenGL context"))
    assert rendering_failed(RuntimeError("Cannot initialize a EGL device display"))
    assert not rendering_failed(ValueError("the oracle's plan failed"))

    here = envs.make_env("Pendulum-v1", None, 5)
    there = ProcessEnv(functools.partial(envs.make_env, "Pendulum-v1", None, 5), "Pendulum-v1")
    try:
        assert there.observation_space == here.observation_space and there.spec.id == "Pendulum-v1"
        np.testing.assert_array_equal(there.reset(seed=3)[0], here.reset(seed=3)[0])
        for action in ([0.5], [-1.0], [2.0], [0.0], [1.0]):
            expected, got = here.step(np.asarray(action, np.float32)), there.step(np.asarray(action, np.float32))
            np.testing.assert_array_equal(got[0], expected[0])
            assert got[1:4] == expected[1:4]
        assert got[3]  # the time limit, from the environment in the other process
    finally:
        there.close()
    assert not there._process.is_alive()
    # Evaluated side by side in two processes, episodes give what they give here.
    from iql_tf import evaluation

    policy = lambda observations: np.tanh(observations[:, :1] * 3.0)  # noqa: E731 - deterministic, state-dependent
    apart = [ProcessEnv(functools.partial(envs.make_env, "Pendulum-v1", None, 7), "Pendulum-v1") for _ in range(2)]
    together = [envs.make_env("Pendulum-v1", None, 7) for _ in range(2)]
    try:
        assert evaluation.evaluate(policy, apart, None, 5, seed=1) == evaluation.evaluate(policy, together, None, 5, 1)
    finally:
        for env in apart:
            env.close()
    with pytest.raises(UserError, match=r"^cannot make environment 'No-v0'") as refused:  # the worker's, as it is
        ProcessEnv(functools.partial(envs.make_env, "No-v0"), "No-v0")
    assert "MUJOCO_GL" not in str(refused.value)


@needs_rendering
def test_mujoco_beside_tensorflow_with_osmesa_set_exits_cleanly(tmp_path):
    """With MUJOCO_GL=osmesa (as a visual run needs for its environments' processes), a process that runs
    TensorFlow and builds an OGBench environment of states exits with 0 (MuJoCo imported with Mesa's LLVM beside
    TensorFlow's used to abort it at exit)."""
    script = ("import tensorflow as tf; tf.reduce_sum(tf.ones(2)).numpy()\n"
              "from iql_tf import envs\n"
              "env = envs.make_env('cube-single-singletask-task2-v0'); env.reset(seed=0); env.close()\n")
    done = subprocess.run([sys.executable, "-c", script], env=dict(os.environ, MUJOCO_GL="osmesa"),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
