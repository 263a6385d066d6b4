"""The Python API: the README's block run as written in an empty folder, and its mistakes in one line."""

import re

import numpy as np
import pytest
import tensorflow as tf
from conftest import REPO_ROOT

import iql_tf
from iql_tf.errors import UserError


def readme_block() -> str:
    section = (REPO_ROOT / "README.md").read_text().split("<!-- python-api:begin -->")[1].split(
        "<!-- python-api:end -->")[0]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.mark.slow
def test_the_readme_block_trains_predicts_exports_and_loads(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(readme_block(), "README.md", "exec"), namespace)
    arrays, actions, loaded = namespace["arrays"], namespace["actions"], namespace["agent"]
    (results,) = loaded.results  # the final evaluation, read back with the checkpoint
    assert set(results) >= {"return_mean", "return_std"}  # evaluated in Pendulum-v1 at the last step
    assert actions.shape == (4, 1) and np.all(np.abs(actions) <= 2.0) and np.abs(actions).max() > 1e-3
    assert namespace["q"].shape == (4,) and np.all(np.isfinite(namespace["q"]))
    # The loaded agent, the exported copy and the run's own export answer alike.
    observations = arrays["observations"][:4].astype(np.float32)
    np.testing.assert_allclose(loaded.predict(observations), actions, atol=1e-6)
    for export in ("runs/mine/policy_copy", "runs/mine/export/policy"):
        served = tf.saved_model.load(export).signatures["serving_default"]
        np.testing.assert_allclose(served(observations=tf.constant(observations))["actions"].numpy(), actions,
                                   atol=1e-5)
    # The same run directory as the command line's, recording the keyword settings as gin bindings.
    run = tmp_path / "runs" / "mine"
    assert (run / "finished.json").is_file() and (run / "checkpoints").is_dir()
    assert "IQLAgent.hidden_dims = (64, 64)" in (run / "operative_config.gin").read_text()


def test_mistakes_are_one_line_and_progress_shows_as_in_the_cli(write_npz, tmp_path, capfd):
    with pytest.raises(UserError, match=r"unknown setting 'expectle'; did you mean 'expectile'\?"):
        iql_tf.IQL.from_config("locomotion", expectle=0.7)
    # Every value is checked at once, as the command line's bindings are, not when fit starts.
    with pytest.raises(UserError, match=r"IQLAgent.expectile = 1.5 must be a number in \(0, 1\)"):
        iql_tf.IQL.from_config("locomotion", expectile=1.5)
    with pytest.raises(UserError, match=r"IQLAgent.hidden_dims = '64' must be a tuple of positive sizes"):
        iql_tf.IQL.from_config("locomotion", hidden_dims="64")
    with pytest.raises(UserError, match=r"IQLAgent.value_lr = -0.001 must be a positive number"):
        iql_tf.IQL.from_config("locomotion", value_lr=-1e-3)
    with pytest.raises(UserError, match=r"train.eval_episodes = -1 must be a non-negative integer"):
        iql_tf.IQL.from_config("locomotion", eval_episodes=-1)
    # numpy's numbers are numbers.
    assert "IQLAgent.expectile = 0.8" in iql_tf.IQL.from_config("locomotion", expectile=np.float32(0.8)).bindings
    assert "IQLAgent.hidden_dims = (64, 32)" in iql_tf.IQL.from_config(
        "locomotion", hidden_dims=np.array([64, 32])).bindings
    with pytest.raises(UserError, match=r"'source' is given to fit\(data\)"):
        iql_tf.IQL.from_config("locomotion", source="x.npz")
    with pytest.raises(UserError, match=r"has not been trained: call fit"):
        iql_tf.IQL.from_config("locomotion").predict(np.zeros(3))
    with pytest.raises(UserError, match=r"no checkpoint there"):
        iql_tf.IQL.load(str(tmp_path))
    agent = iql_tf.IQL.from_config("quickstart", hidden_dims=(8,), batch_size=4, jit_compile=False,
                                   progress_bar=False)
    capfd.readouterr()
    agent.fit(str(write_npz()), steps=20, workdir=str(tmp_path / "tiny"))
    assert "Done: 20 steps; policy exported to" in capfd.readouterr().err  # log lines without absl flags
    assert agent.predict(np.zeros(3)).shape == (2,)  # one observation in, one action out
    with pytest.raises(UserError, match=r"observations of shape \[2, 5\]: expected \[N, 3\] or \[3\]"):
        agent.predict(np.zeros((2, 5)))
    observations = np.zeros((4, 3))
    observations[2, 1] = np.nan
    with pytest.raises(UserError, match=r"^observations row 2 holds nan \(1 row\(s\) in all\): the policy's answer "
                                        r"would be NaN"):
        agent.predict(observations)
    with pytest.raises(UserError, match=r"^actions row 0 holds inf"):
        agent.predict_value(np.zeros((1, 3)), np.full((1, 2), np.inf))
