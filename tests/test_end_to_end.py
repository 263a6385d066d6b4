"""The quickstart end to end: the generated stitching dataset, IQL reaching a goal no stored episode reaches
from the start, and the exported policy doing the same as deployment code runs it."""

import minari
import numpy as np
import pytest
import tensorflow as tf

from iql_tf import config, evaluation
from iql_tf.envs import make_env
from iql_tf.generation import pointmaze
from iql_tf.policy.metadata import read_policy_metadata
from iql_tf.trainer import run_training


@pytest.mark.slow
def test_quickstart_iql_stitches_trajectories_its_data_never_completes(minari_root, tmp_path):
    # The real quickstart config (its dataset generated into a private Minari root), evaluated at the end only.
    # XLA named, so the test does not spend its time choosing the compiled path (tests/test_fastest_path.py).
    config.parse_gin(["quickstart"], [f"make_dataset.cache_dir = '{tmp_path / 'cache'}'", "train.progress_bar = False",
                                      "train.eval_interval = 50000", "IQLAgent.jit_compile = True"])
    (iql,) = run_training(str(tmp_path / "iql"))

    # The data never goes from the start cell to the goal: its success on the task is 0 by construction.
    planner = pointmaze.UMAZE.planner()
    dataset = minari.load_dataset("iql_tf/pointmaze/umaze-stitch-v0")
    assert not any(pointmaze.visits_start_then_goal(pointmaze.UMAZE, planner, episode.observations)
                   for episode in dataset.iterate_episodes())
    assert iql["success_rate"] >= 0.9

    # The exported policy, loaded as deployment code would, reproduces the trained policy's success.
    export_dir = tmp_path / "iql" / "export" / "policy"
    policy = tf.saved_model.load(str(export_dir))
    metadata = read_policy_metadata(export_dir)
    assert metadata.step == 50000 and metadata.evaluation["success_rate"] == iql["success_rate"]
    exported = evaluation.evaluate(
        lambda observations: policy.signatures["serving_default"](observations=tf.constant(observations))["actions"],
        evaluation.make_envs(lambda: make_env(metadata.env_id, metadata.env_kwargs, metadata.max_episode_steps), 100),
        metadata.observation_keys, num_episodes=100, seed=0,
    )
    assert exported["success_rate"] == pytest.approx(iql["success_rate"])
    assert np.isclose(exported["return_mean"], iql["return_mean"])
    # So does its ONNX model, run by onnxruntime (`iql-evaluate RUN_DIR/export/policy/policy.onnx`): its actions
    # are the SavedModel's within float32 rounding, which a closed-loop rollout may amplify, so not to the bit.
    onnx = evaluation.evaluate_export(str(export_dir / "policy.onnx"), episodes=100)
    assert onnx["success_rate"] >= 0.9 and abs(onnx["success_rate"] - iql["success_rate"]) <= 0.03
