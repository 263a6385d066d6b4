"""The trainer: exact resume after SIGTERM, its outputs, several seeds at once, refusing a resume
with other settings, non-finite stops, gin and data errors."""

import json
import logging
import os
import signal
import subprocess
import sys

import gin
import numpy as np
import pytest
import tensorflow as tf

from iql_tf import config, run_files
from iql_tf.agent import IQLAgent
from iql_tf.data.pipeline import make_dataset
from iql_tf.envs import make_env
from iql_tf.errors import UserError
from iql_tf.policy.metadata import read_policy_metadata
from iql_tf.stopping import RunStopped
from iql_tf.trainer import NonFiniteError, run_training


@pytest.fixture
def hopper_bindings(hopper_npz, tmp_path):
    """A tiny locomotion config on the example Hopper rows (no evaluation unless a test asks)."""
    return [
        f"make_dataset.source = '{hopper_npz}'",
        "make_dataset.env_id = 'Hopper-v5'",
        f"make_dataset.cache_dir = '{tmp_path / 'cache'}'",
        "IQLAgent.hidden_dims = (8, 8)",
        "IQLAgent.batch_size = 32",
        "IQLAgent.jit_compile = False",
        "train.eval_episodes = 0",
        "train.progress_bar = False",
    ]


def parse(bindings, extra=()):
    gin.clear_config()
    config.parse_gin(["locomotion"], list(bindings) + list(extra))


def checkpoint_values(workdir, step):
    """Every variable of the checkpoint at `step`, by name."""
    reader = tf.train.load_checkpoint(os.path.join(workdir, "checkpoints", f"ckpt-{step}"))
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
            if "OBJECT_GRAPH" not in name and not name.startswith("record")}


def run_cli(bindings, workdir, **popen_kwargs):
    args = [sys.executable, "-m", "iql_tf.train", "--gin_file=locomotion", f"--workdir={workdir}"]
    args += [f"--gin_bindings={binding}" for binding in bindings]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=workdir.parent,
                            **popen_kwargs)


def latest_step(workdir):
    return int(tf.train.latest_checkpoint(os.path.join(workdir, "checkpoints")).rsplit("-", 1)[1])


def test_a_run_stopped_by_sigterm_saves_and_resumes_to_the_same_weights(hopper_bindings, tmp_path, caplog,
                                                                        monkeypatch):
    # (kill -9 at random moments: tests/test_faults.py.)
    bindings = hopper_bindings + ["train.num_offline_steps = 600", "train.checkpoint_interval = 200",
                                  "train.steps_per_call = 50", "IQLAgent.actor_dropout_rate = 0.1"]
    parse(bindings)
    run_training(str(tmp_path / "uninterrupted"))

    workdir = tmp_path / "interrupted"
    run_updates = IQLAgent.run_updates

    def terminated_at_250(agent, batches, num_updates):  # SIGTERM mid-run, at a step no timing decides
        metrics = run_updates(agent, batches, num_updates)
        if int(agent.step) == 250:
            os.kill(os.getpid(), signal.SIGTERM)
        return metrics

    monkeypatch.setattr(IQLAgent, "run_updates", terminated_at_250)
    with pytest.raises(RunStopped) as stopped, caplog.at_level(logging.INFO, logger="absl"):
        run_training(str(workdir))
    monkeypatch.setattr(IQLAgent, "run_updates", run_updates)
    assert stopped.value.signal_number == signal.SIGTERM and stopped.value.step == 250
    assert latest_step(workdir) == 250  # saved on the way out, off the checkpoint interval
    assert "Re-run the same command to resume" in caplog.text
    run_training(str(workdir))

    expected, resumed = checkpoint_values(tmp_path / "uninterrupted", 600), checkpoint_values(workdir, 600)
    assert expected.keys() == resumed.keys() and len(expected) > 20
    for name, value in expected.items():
        np.testing.assert_array_equal(resumed[name], value, err_msg=name)


def test_outputs_of_a_run(hopper_bindings, tmp_path):
    parse(hopper_bindings, ["train.num_offline_steps = 60", "train.eval_interval = 30", "train.eval_episodes = 2",
                            "train.log_interval = 30", "train.steps_per_call = 25"])
    (results,) = run_training(str(tmp_path))
    assert set(results) == {"return_mean", "return_std", "normalized_score", "normalized_score_std"}
    history = json.loads((tmp_path / "eval_results.json").read_text())
    assert [(entry["step"], entry["seed"]) for entry in history] == [(30, 0), (60, 0)]
    assert "IQLAgent.expectile = 0.7" in (tmp_path / "operative_config.gin").read_text()
    metadata = read_policy_metadata(tmp_path / "export" / "policy")
    assert (metadata.env_id, metadata.step, metadata.observation_dim) == ("Hopper-v5", 60, 11)
    assert metadata.evaluation == results and metadata.action_low == [-1.0] * 3

    tags = set()
    for event_file in tmp_path.glob("events.out.tfevents*"):
        for event in tf.compat.v1.train.summary_iterator(str(event_file)):
            tags.update(value.tag for value in event.summary.value)
    assert {"train/critic_loss", "train/value_loss", "train/actor_loss", "train/advantage_mean",
            "train/awr_weight_mean", "train/actor_lr", "train/steps_per_second", "eval/return_mean",
            "eval/normalized_score", "config/gin", "_hparams_/session_start_info"} <= tags


def test_several_seeds_train_together_and_are_evaluated_and_exported_each(hopper_bindings, tmp_path):
    parse(hopper_bindings, ["train.num_offline_steps = 20", "train.eval_episodes = 1", "train.seed = 3",
                            "train.num_seeds = 2", "train.eval_interval = 20"])
    results = run_training(str(tmp_path))
    assert len(results) == 2
    history = json.loads((tmp_path / "eval_results.json").read_text())
    assert [(entry["step"], entry["seed"]) for entry in history] == [(20, 3), (20, 4)]
    exported = [read_policy_metadata(tmp_path / "export" / f"seed_{seed}" / "policy") for seed in (3, 4)]
    assert [m.seed for m in exported] == [3, 4] and [m.evaluation for m in exported] == results
    # Each seed's events in DIR/seed_K: TensorBoard lists them as RUN/seed_K.
    assert sorted(p.parent.name for p in tmp_path.rglob("events.out.tfevents*")) == ["seed_3", "seed_4"]


def test_a_finished_run_resumes_to_an_export_without_training(hopper_bindings, tmp_path):
    parse(hopper_bindings, ["train.num_offline_steps = 20", "train.checkpoint_interval = 10"])
    run_training(str(tmp_path))
    weights = checkpoint_values(tmp_path, 20)
    run_training(str(tmp_path))
    assert latest_step(tmp_path) == 20
    for name, value in checkpoint_values(tmp_path, 20).items():
        np.testing.assert_array_equal(value, weights[name])


def test_resuming_with_other_training_settings_is_refused_naming_them(hopper_bindings, tmp_path, write_npz):
    parse(hopper_bindings, ["train.num_offline_steps = 20", "train.checkpoint_interval = 10"])
    run_training(str(tmp_path / "run"))
    for binding, change in [
        ("IQLAgent.critic_lr = 1e-3", "agent.critic_lr: 0.0003 -> 0.001"),
        ("IQLAgent.actor_dropout_rate = 0.1", "agent.actor_dropout_rate: None -> 0.1"),
        ("train.seed = 1", "seed: 0 -> 1"),
        ("make_dataset.reward_preprocessing = 'none'", "preprocessing.reward.mode: 'locomotion' -> 'none'"),
        ("IQLAgent.jit_compile = True", "xla: False -> True"),
        ("IQLAgent.tanh_mean = False", "agent.tanh_mean: None -> False"),  # 0.4's options: absent means off
        ("IQLAgent.kernel_init = 'glorot_uniform'", "agent.kernel_init: None -> 'glorot_uniform'"),
        ("IQLAgent.update_order = 'joint'", "agent.update_order: None -> 'joint'"),
    ]:
        parse(hopper_bindings, ["train.num_offline_steps = 40", "train.checkpoint_interval = 10", binding])
        with pytest.raises(UserError, match=rf"was trained with other settings than these \(.*{change}.*\): resume "
                                            r"with the same gin files and bindings, or use a new --workdir"):
            run_training(str(tmp_path / "run"))
    # A dataset of the same shapes but other content.
    other = write_npz(observations=np.zeros((12, 11), np.float32), next_observations=np.zeros((12, 11), np.float32),
                      actions=np.zeros((12, 3), np.float32))
    parse(hopper_bindings, ["train.num_offline_steps = 20", f"make_dataset.source = '{other}'"])
    with pytest.raises(UserError, match=r"dataset: .* -> .*dataset_content"):
        run_training(str(tmp_path / "run"))
    # What does not decide the weights may change; the run records it.
    parse(hopper_bindings, ["train.num_offline_steps = 20", "train.checkpoint_interval = 5", "train.log_interval = 7"])
    run_training(str(tmp_path / "run"))
    resumes = json.loads((tmp_path / "run" / "resumes.json").read_text())
    assert resumes == [{"step": 20, "changed": {"checkpoint_interval": [10, 5], "log_interval": [1000, 7]}}]


def test_non_finite_loss_stops_with_step_and_metric_and_keeps_the_last_checkpoint(hopper_bindings, tmp_path):
    parse(hopper_bindings, ["train.num_offline_steps = 40", "train.checkpoint_interval = 20",
                            "train.steps_per_call = 10"])
    run_training(str(tmp_path))
    before = checkpoint_values(tmp_path, 40)
    parse(hopper_bindings, ["train.num_offline_steps = 40", "train.checkpoint_interval = 20",
                            "train.steps_per_call = 10", "train.start_over = True"])

    def poisoned_dataset(settings):
        dataset = make_dataset(settings)
        return dataset._replace(tensors=dict(dataset.tensors, rewards=np.full_like(dataset.tensors["rewards"], np.inf)))

    with pytest.raises(NonFiniteError, match=r"non-finite critic_loss \(.*\) at step 1 \(seed 0\): .*no checkpoint"):
        run_training(str(tmp_path / "poisoned"), dataset_fn=poisoned_dataset)
    assert not (tmp_path / "poisoned" / "checkpoints").exists()
    assert checkpoint_values(tmp_path, 40).keys() == before.keys()


def test_weights_broken_by_the_last_update_are_never_saved_or_exported(hopper_bindings, tmp_path):
    # A learning rate beyond float32 turns the critic's weights to inf/nan in one update whose losses were
    # finite (they are computed before the update).
    parse(hopper_bindings, ["train.num_offline_steps = 1", "IQLAgent.critic_lr = 1e39"])
    with pytest.raises(NonFiniteError, match=r"non-finite weights in the critic.* at step 1: training stopped "
                                             r"without saving them"):
        run_training(str(tmp_path))
    assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "export").exists()


def test_a_dataset_that_does_not_fit_the_environment_is_a_user_error(hopper_bindings, tmp_path):
    parse(hopper_bindings, ["train.eval_episodes = 1"])
    with pytest.raises(UserError, match="observations of size 11 .* Walker2d-v5 has 17"):
        run_training(str(tmp_path), env_fn=lambda: make_env("Walker2d-v5"))
    assert not (tmp_path / "checkpoints").exists()


def test_a_dataset_without_environment_trains_without_evaluation(write_npz, tmp_path):
    parse([f"make_dataset.source = '{write_npz()}'", f"make_dataset.cache_dir = '{tmp_path / 'cache'}'",
           "make_dataset.reward_preprocessing = 'none'", "IQLAgent.hidden_dims = (8,)", "IQLAgent.batch_size = 4",
           "IQLAgent.jit_compile = False", "train.num_offline_steps = 10", "train.progress_bar = False"])
    assert run_training(str(tmp_path / "run")) == [{}]
    assert read_policy_metadata(tmp_path / "run" / "export" / "policy").env_id is None


@pytest.mark.parametrize("binding, message", [
    ("train.no_such_parameter = 1", "no_such_parameter"),
    ("NoSuchConfigurable.x = 1", "NoSuchConfigurable"),
    ("IQLAgent.seeds = (3,)", "seeds"),  # set by the trainer (train.seed): not a setting of the agent
    ("IQLAgent.hidden_dims = (8, 8", "gin config: .*EOF"),  # unbalanced bracket
    ("make_dataset.source = 'x", "gin config: .*parse"),
])
def test_gin_mistakes_are_user_errors(binding, message):
    with pytest.raises(UserError, match=message):
        config.parse_gin(["locomotion"], [binding])


@pytest.mark.parametrize("bindings, message", [
    (["make_dataset.source = '/no/such/data.npz'"], "/no/such/data.npz"),
    (["train.num_offline_steps = 0", "train.num_online_steps = 0"], "nothing to train"),
    (["train.num_offline_steps = 1e6"], "train.num_offline_steps = 1000000.0 must be a non-negative integer (write "
                                        "1000000, not 1e6)"),
    (["IQLAgent.expectile = '0.7'"], "IQLAgent.expectile = '0.7' must be a number in (0, 1)"),
    (["IQLAgent.activation = 'rleu'"], "IQLAgent.activation = 'rleu' is not a Keras activation"),
    (["IQLAgent.kernel_init = 'glorot'"], "IQLAgent.kernel_init = 'glorot' must be 'orthogonal' or 'glorot_uniform'"),
    (["IQLAgent.update_order = 'fql'"], "IQLAgent.update_order = 'fql' must be 'sequential' or 'joint'"),
])
def test_expected_mistakes_are_one_line_user_errors(bindings, message, hopper_bindings, tmp_path):
    parse(hopper_bindings, bindings)
    with pytest.raises(UserError) as error:
        run_training(str(tmp_path / "run"))
    assert message in str(error.value).splitlines()[0]


def test_a_workdir_that_cannot_be_written_is_refused_before_the_data_loads(hopper_bindings, tmp_path):
    (tmp_path / "file").write_text("")
    parse(hopper_bindings)
    with pytest.raises(UserError, match=rf"^--workdir {tmp_path / 'file' / 'run'}: cannot create or write it"):
        run_training(str(tmp_path / "file" / "run"), dataset_fn=pytest.fail)


def test_default_workdir_names_config_dataset_and_seed():
    assert run_files.default_workdir("locomotion", "/data/hopper-random.npz", [3]) == \
        "runs/locomotion/hopper-random/seed3"
    assert run_files.default_workdir("locomotion", "D4RL/door/human-v2", [0, 1, 2, 3]) == \
        "runs/locomotion/D4RL_door_human-v2/seeds0-3"


def test_cli_reports_an_expected_mistake_in_one_line(hopper_bindings, tmp_path):
    process = run_cli(hopper_bindings + ["IQLAgent.expectile = 1.5"], tmp_path / "run")
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 2 and "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1] == ("error: IQLAgent.expectile = 1.5 must be a number in (0, 1); fix it in "
                                               "the gin file or --gin_bindings")


def test_a_command_without_a_dataset_is_one_line_and_leaves_no_run_directory(tmp_path):
    result = subprocess.run([sys.executable, "-m", "iql_tf.train", f"--workdir={tmp_path / 'run'}"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: no dataset: give a --gin_file")
    assert not (tmp_path / "run").exists()
    # A failed start in a new directory leaves nothing there, the lock included.
    config.parse_gin(["locomotion"], ["make_dataset.source = '/no/such/data.npz'"])
    with pytest.raises(UserError, match="/no/such/data.npz"):
        run_training(tmp_path / "other")
    assert not (tmp_path / "other").exists()
