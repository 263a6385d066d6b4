"""Fitted Q evaluation: the value of fixed policies estimated from data alone, on a problem whose values are known
in closed form; in the data's reward units; resumed exactly; refusing what it cannot estimate."""

import dataclasses
import json
import os
import subprocess
import sys

import gin
import numpy as np
import pytest
import tensorflow as tf

from iql_tf import data
from iql_tf.errors import UserError
from iql_tf.ope import estimation
from iql_tf.ope.fqe import FittedQ
from iql_tf.policy.metadata import PolicyMetadata
from iql_tf.settings import FQESettings

N, H, DISCOUNT = 8_000, 20, 0.8
SETTINGS = FQESettings(num_steps=2000, discount=DISCOUNT, hidden_dims=(32, 32), learning_rate=1e-3,
                       target_update_rate=0.05, steps_per_call=500, log_interval=500, checkpoint_interval=500)


def logged_rows(reward_unit=1.0, timeouts=True):
    """Episodes of H steps with uniformly random actions in [-1, 1]; the reward -|a - 0.5| depends on the action
    only, so a policy that always acts c earns -|c - 0.5| at every step: its discounted value is
    -|c - 0.5| / (1 - discount) from any state (a timeout keeps the bootstrap)."""
    rng = np.random.default_rng(0)
    observations = rng.uniform(-1, 1, (N, 2)).astype(np.float32)
    actions = rng.uniform(-1, 1, (N, 1)).astype(np.float32)
    return dict(observations=observations, actions=actions, rewards=-np.abs(actions[:, 0] - 0.5) * reward_unit,
                terminals=np.zeros(N, bool), timeouts=(np.arange(N) % H == H - 1) if timeouts else None,
                next_observations=np.roll(observations, -1, axis=0))


def constant_policy(c):
    return lambda observations: np.full((len(observations), 1), c, np.float32)


def policy_metadata(**fields):
    defaults = dict(env_id=None, env_kwargs={}, max_episode_steps=None, observation_keys=None, observation_dim=2,
                    action_dim=1, action_low=[-1.0], action_high=[1.0], observation_normalization=None,
                    ref_min_score=None, ref_max_score=None, dataset="logged", dataset_checksum="", seed=0, step=0,
                    evaluation={}, gin_config="")
    return PolicyMetadata(**{**defaults, **fields})


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("cache"))


def estimate(c, cache, rows=None, settings=SETTINGS, **options):
    source = data.from_arrays(**(rows or logged_rows()), name="logged")
    return estimation.estimate_value(constant_policy(c), policy_metadata(), source, settings, cache_dir=cache, **options)


def test_fqe_recovers_the_values_of_fixed_policies_and_ranks_them(cache):
    estimates = {c: estimate(c, cache) for c in (0.5, 0.0, -0.8)}
    for c in (0.0, -0.8):
        # Away from the reward's kink at 0.5, a 2 x 32 ReLU network fits the reward to within 1 % here.
        assert estimates[c]["value"] == pytest.approx(-abs(c - 0.5) / (1 - DISCOUNT), rel=0.02)
        assert estimates[c]["value_low"] <= estimates[c]["value"] <= estimates[c]["value_high"]
    # At the kink the network rounds |a - 0.5| off (-0.17 where the truth is 0), but the order holds.
    values = [estimates[c]["value"] for c in (0.5, 0.0, -0.8)]
    assert values == sorted(values, reverse=True) and values[0] > -0.5
    assert estimates[0.0]["initial_states"] == N // H
    # Read out at given states instead (where deployments start): the same Q network, here at the data's starts.
    given = estimate(0.0, cache, initial_observations=logged_rows()["observations"][::H])
    assert given["value"] == pytest.approx(estimates[0.0]["value"], rel=1e-6)
    assert given["initial_states_from"] == "given" and estimates[0.0]["initial_states_from"] != "given"


def test_the_estimate_is_in_the_data_s_reward_units(cache):
    short = dataclasses.replace(SETTINGS, num_steps=500)
    unit = estimate(0.0, cache, settings=short)
    thousand = estimate(0.0, cache, rows=logged_rows(reward_unit=1000.0), settings=short)
    # Rewards are scaled by 1 / max |r| for training, so both fit the same table to float32 rounding, which Adam
    # updates amplify (a relative 2e-4 after 2000, measured); a scale left in would be off by a factor of 1000.
    assert thousand["value"] == pytest.approx(1000.0 * unit["value"], rel=2e-3)


def test_an_interrupted_estimate_resumes_to_the_same_network(cache, tmp_path, monkeypatch):
    short = dataclasses.replace(SETTINGS, num_steps=1000)
    whole = estimate(-0.8, cache, workdir=tmp_path / "whole", settings=short)
    run_updates = FittedQ.run_updates

    def dies_after_the_first_checkpoint(self, num_updates):
        if int(self.step) >= 500:
            raise KeyboardInterrupt
        return run_updates(self, num_updates)

    monkeypatch.setattr(FittedQ, "run_updates", dies_after_the_first_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        estimate(-0.8, cache, workdir=tmp_path / "killed", settings=short)
    monkeypatch.setattr(FittedQ, "run_updates", run_updates)
    resumed = estimate(-0.8, cache, workdir=tmp_path / "killed", settings=short)
    assert resumed == whole  # the same Q network, optimiser state and batch stream from update 500 on
    events = tf.compat.v1.train.summary_iterator(str(next((tmp_path / "whole").glob("events.out.tfevents.*"))))
    tags = {value.tag for event in events for value in event.summary.value}
    assert {"fqe/td_loss", "fqe/q_mean", "fqe/target_mean"} <= tags
    with pytest.raises(UserError, match=r"holds an FQE estimate of another settings"):
        estimate(-0.8, cache, workdir=tmp_path / "whole", settings=FQESettings(num_steps=10))


def test_the_estimate_reads_the_data_raw_whatever_a_training_config_binds(cache):
    # A process that trained with the quickstart's config holds make_dataset bindings in gin (r - 1 rewards,
    # normalised observations); FQE estimates the data's own rewards all the same.
    short = dataclasses.replace(SETTINGS, num_steps=200)
    gin.parse_config("make_dataset.reward_preprocessing = 'antmaze'\nmake_dataset.normalize_observations = True")
    bound = estimate(0.0, cache, settings=short)
    gin.clear_config()
    assert bound == estimate(0.0, cache, settings=short)


def test_data_in_physical_units_is_read_in_the_policy_s_action_bounds(cache, tmp_path):
    # A robot's log, actions in [-2, 2] and no environment: the policy trained on it (make_dataset.action_bounds)
    # carries those bounds, and FQE reads the same file in them, as the policy's units in [-1, 1] its table holds.
    rows = logged_rows()
    np.savez(tmp_path / "robot.npz", **dict(rows, actions=2.0 * rows["actions"]))
    short = dataclasses.replace(SETTINGS, num_steps=300)
    robot = estimation.estimate_value(lambda observations: np.zeros((len(observations), 1), np.float32),
                                      policy_metadata(action_low=[-2.0], action_high=[2.0]),
                                      str(tmp_path / "robot.npz"), short, cache_dir=cache)
    # the same table to rounding (a / 2 against (a + 2) / 2 - 1), so the same estimate to Adam's amplification
    assert robot["value"] == pytest.approx(estimate(0.0, cache, settings=short)["value"], rel=1e-3)
    # The same file converted with those bounds (iql-convert --action_bounds): its own bounds are no override.
    from iql_tf.data.pipeline import make_dataset
    from iql_tf.settings import DataSettings

    converted = make_dataset(DataSettings(str(tmp_path / "robot.npz"), action_bounds=(-2.0, 2.0), cache_dir=cache))
    again = estimation.estimate_value(lambda observations: np.zeros((len(observations), 1), np.float32),
                                      policy_metadata(action_low=[-2.0], action_high=[2.0]), converted.directory,
                                      short, cache_dir=cache)
    assert again["value"] == robot["value"]


def test_what_fqe_cannot_estimate_is_one_line(cache):
    with pytest.raises(UserError, match=r"one trajectory, so one initial state: FQE estimates"):
        estimate(0.0, cache, rows=logged_rows(timeouts=False))
    source = data.from_arrays(**logged_rows(), name="logged")
    with pytest.raises(UserError, match=r"observations and actions of sizes 3 and 1 against 2 and 1"):
        estimation.estimate_value(constant_policy(0.0), policy_metadata(observation_dim=3), source, SETTINGS,
                                  cache_dir=cache)
    # A policy of an environment acting in [-2, 2] on data in [-1, 1] (the data's own units win where the policy
    # has an environment; without one, `test_data_in_physical_units...` reads the data in the policy's).
    with pytest.raises(UserError, match=r"their units differ"):
        estimation.estimate_value(constant_policy(0.0), policy_metadata(env_id="Pendulum-v1", action_low=[-2.0],
                                                                        action_high=[2.0]), source, SETTINGS,
                                  cache_dir=cache)
    with pytest.raises(UserError, match=r"initial states of shape \[4, 3\]: give finite raw observations of shape "
                                        r"\[K, 2\]"):
        estimate(0.0, cache, settings=dataclasses.replace(SETTINGS, num_steps=10),
                 initial_observations=np.zeros((4, 3)))
    # A policy trained on normalised observations whose statistics put this data 100 std away: other units.
    scaled = policy_metadata(observation_normalization={"mean": [100.0, 100.0], "std": [1.0, 1.0]})
    with pytest.raises(UserError, match=r"not in the units the policy was trained on \(in the median dimension"):
        estimation.estimate_value(constant_policy(0.0), scaled, source, SETTINGS, cache_dir=cache)
    with pytest.raises(UserError, match=r"fqe.discount = 1.0 must be a number in \[0, 1\)"):
        FQESettings(discount=1.0)


def test_soft_opc_separates_the_successful_trajectories(cache):
    # A sparse success reward, 1 where a > 0.9 (a 5 % chance per step), so about a third of the trajectories
    # never succeed. For a constant policy Q(s, a) = r(a) + discount * V with V the same everywhere, so the
    # soft OPC estimate (mean Q of the successful trajectories' transitions minus the mean of all) is the same
    # difference of mean rewards, which the data gives.
    rows = logged_rows()
    rows["rewards"] = (rows["actions"][:, 0] > 0.9).astype(np.float32)
    short = dataclasses.replace(SETTINGS, num_steps=1000)
    result = estimate(0.0, cache, rows=rows, settings=short)
    successes = estimation.successful_transitions(rows["rewards"], (np.arange(N) % H == H - 1).astype(np.float32),
                                                  None)
    expected = rows["rewards"][successes].mean() - rows["rewards"].mean()
    assert 0.25 < 1 - successes.mean() < 0.5 and expected > 0.02
    # The fitted Q's error at the data's actions is a few 1e-3 here (a step reward fitted by a 2 x 32 network).
    assert result["soft_opc"] == pytest.approx(expected, abs=0.01)
    assert result["successful_trajectories"] == int(successes.reshape(-1, H)[:, 0].sum())
    assert "soft_opc" not in estimate(0.0, cache, settings=short)  # rewards without success labels
    labelled = estimate(0.0, cache, settings=dataclasses.replace(short, success_return=-12.0))
    assert "soft_opc" in labelled


def test_success_labels_get_no_per_step_return_reading(pointmaze_root, cache, monkeypatch):
    # Data with a known episode length (100 steps) and rewards of 0 and 1: the value is a discounted chance of
    # success, which the undiscounted-equivalent return (a reward earned at every step) would misread.
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(pointmaze_root))
    metadata = policy_metadata(observation_dim=8, action_dim=2, action_low=[-1.0, -1.0], action_high=[1.0, 1.0],
                               observation_keys=["achieved_goal", "desired_goal", "observation"])
    still = lambda observations: np.zeros((len(observations), 2), np.float32)  # noqa: E731
    short = dataclasses.replace(SETTINGS, num_steps=500)
    labelled = estimation.estimate_value(still, metadata, "pointmaze/umaze-example-v0", short, cache_dir=cache)
    assert "return_equivalent" not in labelled and "horizon" not in labelled
    # The same data read as rewards without success labels gets the reading, over the data's episode length.
    monkeypatch.setattr(estimation, "successful_transitions", lambda *args: None)
    unlabelled = estimation.estimate_value(still, metadata, "pointmaze/umaze-example-v0", short, cache_dir=cache)
    assert unlabelled["horizon"] == 100 and unlabelled["return_equivalent"] > unlabelled["value"] > 0


def test_bootstrapped_members_disagree_where_the_policy_acts_unlike_the_data(cache):
    # The data's actions lie in [-1, 0] only. A policy acting at -0.5 is read from the data, one acting at 0.9
    # from the networks' extrapolation, which differs between members (own initialisation, own resample).
    rows = logged_rows()
    rows["actions"] = -np.abs(rows["actions"])
    rows["rewards"] = -np.abs(rows["actions"][:, 0] - 0.5)
    ensemble = dataclasses.replace(SETTINGS, num_steps=1000, ensemble_size=3)
    inside, outside = (estimate(c, cache, rows=rows, settings=ensemble) for c in (-0.5, 0.9))
    assert len(inside["member_values"]) == 3
    assert inside["value"] == pytest.approx(-1.0 / (1 - DISCOUNT), rel=0.02)
    # Measured: a spread of 0.03 inside the data, 0.9 outside (a 30-fold gap; 5-fold leaves room for other
    # instruction sets), and the pessimistic value is the mean less that spread.
    assert inside["member_spread"] * 5 < outside["member_spread"]
    assert outside["value_pessimistic"] == pytest.approx(outside["value"] - outside["member_spread"])
    assert "member_values" not in estimate(-0.5, cache, rows=rows, settings=dataclasses.replace(ensemble,
                                                                                                 ensemble_size=1))


def test_iql_evaluate_estimates_an_export_from_a_dataset_without_an_environment(cache, tmp_path):
    from iql_tf.agent import IQLAgent
    from iql_tf.data import rewards
    from iql_tf.data.preprocessing import Preprocessing
    from iql_tf.policy import loading
    from iql_tf.policy.exported import export_policy
    from iql_tf.settings import AgentSettings

    rows = logged_rows()
    np.savez(tmp_path / "logged.npz", **{key: value for key, value in rows.items()})
    agent = IQLAgent(2, 1, AgentSettings(hidden_dims=(8,), jit_compile=False), 10)
    preprocessing = Preprocessing.fit(rows["observations"], np.float32([-1]), np.float32([1]),
                                      rewards.RewardTransform("none"), False)
    export_policy(agent.member_weights(0), "relu", preprocessing, tmp_path / "policy", policy_metadata())
    command = [sys.executable, "-m", "iql_tf.evaluate", str(tmp_path / "policy" / "policy.onnx"),
               f"--dataset={tmp_path / 'logged.npz'}", "--fqe_steps=300", "--discount=0.8", "--fqe_ensemble_size=2",
               "--json"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "IQL_TF_DATA_DIR": cache})
    assert result.returncode == 0, result.stderr
    estimate = json.loads(result.stdout.strip().splitlines()[-1])
    policy, metadata = loading.load_policy(tmp_path / "policy")
    expected = estimation.estimate_value(policy, metadata, str(tmp_path / "logged.npz"),
                                         FQESettings(num_steps=300, discount=0.8, ensemble_size=2), cache_dir=cache)
    # The same table (the ONNX model's actions equal the SavedModel's to 1e-6) and the same seeded training.
    assert estimate["value"] == pytest.approx(expected["value"], rel=1e-3)
    assert len(estimate["member_values"]) == 2
    assert estimate["initial_states"] == N // H and estimate["fqe_steps"] == 300
    result = subprocess.run([*command[:4], "--dataset=missing.npz", "--env_id=Pendulum-v1"], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1].startswith("error: --env_id rolls the policy out in an environment")


def test_every_kept_checkpoint_of_a_sweep_is_ranked_and_exported(cache, tmp_path):
    from iql_tf import run_files, trainer
    from iql_tf.ope import ranking
    from iql_tf.policy import loading
    from iql_tf.settings import AgentSettings, DataSettings, RunSettings

    source = data.from_arrays(**logged_rows(), name="logged", action_bounds=(-1.0, 1.0))
    run = RunSettings(num_offline_steps=200, steps_per_call=100, log_interval=100, checkpoint_interval=100,
                      progress_bar=False)
    trainer.train(tmp_path / "root" / "expectile=0.9", DataSettings(source=source, cache_dir=cache),
                  AgentSettings(hidden_dims=(8,), expectile=0.9, jit_compile=False), run)
    short = dataclasses.replace(SETTINGS, num_steps=300)
    # Without an environment: estimates only, best first.
    report = ranking.rank_checkpoints(tmp_path / "root", source, short, tmp_path / "report")
    candidates = report["candidates"]
    assert sorted((c["run"], c["step"]) for c in candidates) == [("expectile=0.9", 100), ("expectile=0.9", 200)]
    assert candidates[0]["value"] > candidates[1]["value"]
    assert "spearman" not in report and all(c["true_score"] is None for c in candidates)
    # Each candidate's export is the policy that was estimated: estimated again from the export, the same value.
    chosen = candidates[-1]
    policy, metadata = loading.load_policy(chosen["policy"])
    again = estimation.estimate_value(policy, metadata, source, short, cache_dir=cache)
    assert again["value"] == pytest.approx(chosen["value"], rel=1e-4) and metadata.step == chosen["step"]
    # With true scores recorded at those steps (as an evaluation writes them), ranked against them: here the
    # reverse of FQE's order, so the rank correlation is -1 and the pick costs the whole spread.
    for truth, candidate in enumerate(candidates):
        run_files.RunFiles(tmp_path / "root" / candidate["run"]).append_result(candidate["step"], 0,
                                                                               {"return_mean": float(truth)})
    report = ranking.rank_checkpoints(tmp_path / "root", source, short, tmp_path / "report")
    assert report["spearman"] == pytest.approx(-1.0) and report["regret"] == 1.0
    assert "| 1 | expectile=" in ranking.write(report, tmp_path / "report")
