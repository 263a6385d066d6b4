"""The trainer: exact resume after SIGTERM and kill -9, non-finite stop, gin and data errors, outputs."""

import json
import os
import signal
import subprocess
import sys
import time

import gin
import numpy as np
import pytest
import tensorflow as tf

from iql_tf import config
from iql_tf.data.pipeline import make_dataset
from iql_tf.envs import make_env
from iql_tf.errors import UserError
from iql_tf.train import NonFiniteLossError, train


@pytest.fixture
def hopper_bindings(shared_datasets, tmp_path):
    """A tiny locomotion config on the example Hopper npz (no evaluation unless a test asks)."""
    return [
        f"make_dataset.source = '{shared_datasets / 'hopper-random-example.npz'}'",
        "make_dataset.env_id = 'Hopper-v5'",
        f"make_dataset.cache_dir = '{tmp_path / 'cache'}'",
        "IQLAgent.hidden_dims = (8, 8)",
        "IQLAgent.batch_size = 32",
        "train.eval_episodes = 0",
        "train.progress_bar = False",
    ]


def parse(bindings, extra=()):
    config.parse_gin(["gin/locomotion.gin"], list(bindings) + list(extra))


def checkpoint_values(workdir, step):
    """Every variable of the checkpoint at `step`, by name."""
    reader = tf.train.load_checkpoint(os.path.join(workdir, "checkpoints", f"ckpt-{step}"))
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
            if "save_counter" not in name and "OBJECT_GRAPH" not in name}


def run_cli(bindings, workdir, **popen_kwargs):
    args = [sys.executable, "-m", "iql_tf.train", "--gin_file=gin/locomotion.gin", f"--workdir={workdir}"]
    args += [f"--gin_bindings={binding}" for binding in bindings]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=config.REPO_ROOT, **popen_kwargs)


def wait_for_checkpoint(workdir, process, timeout=120):
    state = os.path.join(workdir, "checkpoints", "checkpoint")
    deadline = time.time() + timeout
    while not os.path.exists(state):
        assert process.poll() is None, process.communicate()[1]
        assert time.time() < deadline, "no checkpoint appeared"
        time.sleep(0.02)


def latest_step(workdir):
    return int(tf.train.latest_checkpoint(os.path.join(workdir, "checkpoints")).rsplit("-", 1)[1])


@pytest.mark.slow
@pytest.mark.parametrize("jit_compile", [False, True])
def test_run_interrupted_by_sigterm_and_kill_9_ends_with_the_same_weights(hopper_bindings, tmp_path, jit_compile):
    schedule = ["train.max_steps = 3000", "train.checkpoint_interval = 200", "train.steps_per_call = 50",
                "IQLAgent.actor_dropout_rate = 0.1", f"IQLAgent.jit_compile = {jit_compile}"]
    bindings = hopper_bindings + schedule

    parse(bindings)
    train(str(tmp_path / "uninterrupted"))
    gin.clear_config()

    workdir = tmp_path / "interrupted"
    process = run_cli(bindings, workdir)
    wait_for_checkpoint(workdir, process)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM
    assert "Re-run the same command to resume" in stderr
    stopped_at = latest_step(workdir)
    assert 0 < stopped_at < 3000

    process = run_cli(bindings, workdir)
    while latest_step(workdir) == stopped_at:
        assert process.poll() is None, process.communicate()[1]
        time.sleep(0.02)
    process.kill()  # kill -9: no chance to save
    process.communicate()
    killed_after = latest_step(workdir)
    assert stopped_at < killed_after < 3000

    process = run_cli(bindings, workdir)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr
    assert f"Resumed from {workdir / 'checkpoints' / f'ckpt-{killed_after}'}" in stderr

    expected, resumed = checkpoint_values(tmp_path / "uninterrupted", 3000), checkpoint_values(workdir, 3000)
    assert expected.keys() == resumed.keys() and len(expected) > 20
    for name, value in expected.items():
        np.testing.assert_array_equal(resumed[name], value, err_msg=name)


def test_non_finite_loss_stops_with_step_and_metric_and_keeps_the_last_checkpoint(hopper_bindings, tmp_path):
    parse(hopper_bindings, ["train.max_steps = 40", "train.checkpoint_interval = 20", "train.steps_per_call = 10"])
    train(str(tmp_path))
    before = checkpoint_values(tmp_path, 40)
    gin.clear_config()

    parse(hopper_bindings, ["train.max_steps = 100", "train.checkpoint_interval = 20", "train.steps_per_call = 10"])

    def poisoned_dataset():
        dataset = make_dataset()
        rewards = tf.fill(tf.shape(dataset.tensors["rewards"]), np.inf)
        return dataset._replace(tensors=dict(dataset.tensors, rewards=rewards))

    with pytest.raises(NonFiniteLossError, match=r"non-finite critic_loss \(.*\) at step 41: .*step 40"):
        train(str(tmp_path), dataset_fn=poisoned_dataset)
    assert latest_step(tmp_path) == 40
    after = checkpoint_values(tmp_path, 40)
    for name, value in before.items():
        np.testing.assert_array_equal(after[name], value)


def test_outputs_of_a_run(hopper_bindings, tmp_path):
    parse(hopper_bindings, ["train.max_steps = 60", "train.eval_interval = 30", "train.eval_episodes = 2",
                            "train.log_interval = 30", "train.steps_per_call = 25"])
    results = train(str(tmp_path))
    assert set(results) == {"return_mean", "return_std", "normalized_score", "normalized_score_std"}
    history = json.loads((tmp_path / "eval_results.json").read_text())
    assert [entry["step"] for entry in history] == [30, 60]
    assert "IQLAgent.expectile = 0.7" in (tmp_path / "operative_config.gin").read_text()
    metadata = json.loads((tmp_path / "export" / "policy" / "assets" / "metadata.json").read_text())
    assert metadata["env_id"] == "Hopper-v5" and metadata["step"] == 60 and metadata["observation_dim"] == 11

    tags = set()
    for event_file in (tmp_path / "tb").iterdir():
        for event in tf.compat.v1.train.summary_iterator(str(event_file)):
            tags.update(value.tag for value in event.summary.value)
    assert {"train/critic_loss", "train/value_loss", "train/actor_loss", "train/advantage_mean",
            "train/awr_weight_mean", "train/actor_lr", "train/steps_per_second", "eval/return_mean",
            "eval/normalized_score", "config/gin"} <= tags


def test_a_finished_run_resumes_to_an_export_without_training(hopper_bindings, tmp_path):
    parse(hopper_bindings, ["train.max_steps = 20", "train.checkpoint_interval = 10"])
    train(str(tmp_path))
    weights = checkpoint_values(tmp_path, 20)
    train(str(tmp_path))
    assert latest_step(tmp_path) == 20
    for name, value in checkpoint_values(tmp_path, 20).items():
        np.testing.assert_array_equal(value, weights[name])


def test_checkpoint_of_another_configuration_is_a_user_error(hopper_bindings, tmp_path):
    parse(hopper_bindings, ["train.max_steps = 10"])
    train(str(tmp_path))
    gin.clear_config()
    parse(hopper_bindings, ["train.max_steps = 20", "IQLAgent.hidden_dims = (16, 16)"])
    with pytest.raises(UserError, match="does not match this configuration.*new --workdir"):
        train(str(tmp_path))


def test_dataset_that_does_not_fit_the_environment_is_a_user_error(hopper_bindings, tmp_path):
    parse(hopper_bindings, ["train.eval_episodes = 1"])
    with pytest.raises(UserError, match="observations of size 11 .* Walker2d-v5 has 17"):
        train(str(tmp_path), env_fn=lambda: make_env("Walker2d-v5"))
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.parametrize("binding, message", [
    ("train.no_such_parameter = 1", "no_such_parameter"),
    ("NoSuchConfigurable.x = 1", "NoSuchConfigurable"),
    ("IQLAgent.seed = 3", "seed"),  # set by the trainer (train.seed): a binding would be silently overridden
])
def test_unknown_gin_names_are_user_errors(binding, message):
    with pytest.raises(UserError, match=message):
        config.parse_gin(["gin/locomotion.gin"], [binding])


def test_missing_gin_file_lists_the_available_ones():
    with pytest.raises(UserError, match="not found.*antmaze.gin.*locomotion.gin"):
        config.parse_gin(["gin/nope.gin"], [])


@pytest.mark.parametrize("bindings, message", [
    (["train.no_such_parameter = 1"], "no_such_parameter"),
    (["make_dataset.source = '/no/such/data.npz'"], "/no/such/data.npz"),
    (["train.max_steps = 0"], "train.max_steps = 0 must be a positive integer"),
    (["train.max_steps = 1e6"], "train.max_steps = 1000000.0 must be a positive integer (write 1000000, not 1e6)"),
    (["IQLAgent.expectile = '0.7'"], "IQLAgent.expectile = '0.7' must be a number in (0, 1)"),
    (["IQLAgent.activation = 'rleu'"], "IQLAgent.activation = 'rleu' is not a Keras activation"),
])
def test_cli_reports_expected_mistakes_in_one_line(bindings, message, hopper_bindings, tmp_path):
    process = run_cli(hopper_bindings + bindings, tmp_path / "run")
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 2
    assert "Traceback" not in stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and message in last


def test_cli_reports_a_workdir_it_cannot_create_in_one_line(tmp_path):
    (tmp_path / "file").write_text("")
    process = run_cli([], tmp_path / "file" / "run")
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 2
    assert stderr.strip().splitlines()[-1].startswith(f"error: --workdir {tmp_path / 'file' / 'run'}: cannot create it")
