"""The compiled path (XLA or TensorFlow's kernels) is timed once per machine and configuration, cached, and
kept by a resumed run whatever the cache says later."""

import json
import shutil

import gin
import numpy as np

from iql_tf import config, fastest_path, run_state
from iql_tf.agent import IQLAgent
from iql_tf.replay_buffer import ReplayBuffer
from iql_tf.settings import AgentSettings, RunSettings
from iql_tf.trainer import run_training


def make_agent(jit_compile=None):
    return IQLAgent(3, 2, AgentSettings(hidden_dims=(8,), batch_size=4, jit_compile=jit_compile), actor_decay_steps=10)


def test_both_paths_are_timed_once_and_the_faster_is_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("IQL_TF_CACHE_DIR", str(tmp_path))
    rng = np.random.default_rng(0)
    buffer = ReplayBuffer({"observations": rng.normal(size=(20, 3)), "actions": rng.uniform(-1, 1, (20, 2)),
                           "rewards": rng.normal(size=20), "next_observations": rng.normal(size=(20, 3)),
                           "terminals": np.zeros(20)}, 4)
    settings = RunSettings(num_offline_steps=100, steps_per_call=10)
    agent = make_agent()
    monkeypatch.setattr(fastest_path, "_TIMED_SECONDS", 0.2)
    # Real timing of both paths, once.
    chosen = fastest_path.choose(agent, make_agent, buffer, settings)
    (entry,) = json.loads((tmp_path / fastest_path.CACHE_FILE).read_text()).values()
    rates = entry["updates_per_second"]
    assert chosen == (rates["xla"] > rates["tensorflow"]) and min(rates.values()) > 0
    # Cached: not timed again, whatever a new timing would say.
    monkeypatch.setattr(fastest_path, "race", lambda *args: 1 / 0)
    assert fastest_path.choose(agent, make_agent, buffer, settings) == chosen
    # Another configuration is another entry.
    monkeypatch.setattr(fastest_path, "race", lambda calls, *args: {True: 2.0, False: 1.0})
    assert fastest_path.choose(make_agent(), make_agent, buffer, RunSettings(num_online_steps=10)) is True
    assert len(json.loads((tmp_path / fastest_path.CACHE_FILE).read_text())) == 2


def test_a_resumed_run_keeps_the_path_it_was_trained_with(write_npz, tmp_path, monkeypatch):
    monkeypatch.setenv("IQL_TF_CACHE_DIR", str(tmp_path / "cache"))
    bindings = [f"make_dataset.source = '{write_npz()}'", f"make_dataset.cache_dir = '{tmp_path / 'data'}'",
                "IQLAgent.hidden_dims = (8,)", "IQLAgent.batch_size = 4", "IQLAgent.actor_cosine_decay = False",
                "train.progress_bar = False"]
    for steps, faster in ((10, True), (20, False)):
        shutil.rmtree(tmp_path / "cache", ignore_errors=True)
        monkeypatch.setattr(fastest_path, "race",
                            lambda calls, *args, faster=faster: {faster: 2.0, not faster: 1.0})
        gin.clear_config()
        config.parse_gin(["quickstart"], bindings + [f"train.num_offline_steps = {steps}"])
        run_training(str(tmp_path / "run"))
        record = run_state.checkpoint_record(tmp_path / "run" / "checkpoints" / f"ckpt-{steps}")
        assert record["training"]["xla"] is True  # chosen on the first start, kept on resume
