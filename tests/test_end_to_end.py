"""The quickstart end to end: generated dataset, IQL against behaviour cloning, the exported policy."""

import gin
import numpy as np
import pytest
import tensorflow as tf

from iql_tf import config
from iql_tf.envs import make_env
from iql_tf.evaluation import evaluate, make_envs
from iql_tf.export import load_metadata
from iql_tf.train import train


@pytest.mark.slow
def test_quickstart_iql_stitches_where_behaviour_cloning_does_not(minari_root, tmp_path):
    # The real gin/quickstart.gin (its dataset generated into a private Minari root), evaluated at the end only.
    bindings = [f"make_dataset.cache_dir = '{tmp_path / 'cache'}'", "train.progress_bar = False",
                "train.eval_interval = 50000"]
    config.parse_gin(["gin/quickstart.gin"], bindings)
    iql = train(str(tmp_path / "iql"))
    gin.clear_config()
    config.parse_gin(["gin/quickstart.gin"], bindings + ["IQLAgent.beta = 0.0"])
    bc = train(str(tmp_path / "bc"))

    # No stored episode goes from the start to the goal, so reaching it means stitching.
    assert iql["success_rate"] >= 0.9
    assert iql["success_rate"] - bc["success_rate"] >= 0.3

    # The exported policy, loaded as deployment code would, reproduces the trained policy's success.
    export_dir = str(tmp_path / "iql" / "export" / "policy")
    policy = tf.saved_model.load(export_dir)
    metadata = load_metadata(export_dir)
    assert metadata["step"] == 50000 and metadata["evaluation"]["success_rate"] == iql["success_rate"]
    exported = evaluate(
        lambda observations: policy.signatures["serving_default"](observations=tf.constant(observations))["actions"],
        make_envs(lambda: make_env(metadata["env_id"], metadata["env_kwargs"], metadata["max_episode_steps"]), 100),
        metadata["observation_keys"], num_episodes=100, seed=0,
    )
    assert exported["success_rate"] == pytest.approx(iql["success_rate"])
    assert np.isclose(exported["return_mean"], iql["return_mean"])
