"""The expectile sweep tool: one run per (tau, seed), CSV and PNG, resuming without retraining."""

import csv
import subprocess
import sys

import pytest
from conftest import REPO_ROOT

from iql_tf.errors import UserError
from iql_tf.tools.expectile_sweep import run_sweep


@pytest.fixture
def tiny_bindings(hopper_npz, tmp_path):
    return [
        f"make_dataset.source = '{hopper_npz}'",
        "make_dataset.env_id = 'Hopper-v5'",
        f"make_dataset.cache_dir = '{tmp_path / 'cache'}'",
        "IQLAgent.hidden_dims = (8, 8)",
        "IQLAgent.batch_size = 16",
        "train.num_offline_steps = 20",
        "IQLAgent.jit_compile = False",
        "train.eval_episodes = 2",
        "train.progress_bar = False",
    ]


def test_sweep_trains_each_expectile_and_seed_and_reuses_finished_runs(tiny_bindings, tmp_path):
    output = tmp_path / "sweep"
    rows = run_sweep(["locomotion"], tiny_bindings, [0.5, 0.9], [0, 1], str(output))
    assert [(row["expectile"], row["seed"]) for row in rows] == [(0.5, 0), (0.5, 1), (0.9, 0), (0.9, 1)]
    assert all(row["score_kind"] == "normalized_score" for row in rows)  # Hopper reports no success
    for tau, seed in [(0.5, 0), (0.9, 1)]:
        operative = (output / f"tau-{tau:g}_seed-{seed}" / "operative_config.gin").read_text()
        assert f"IQLAgent.expectile = {tau}" in operative and f"train.seed = {seed}" in operative
    with open(output / "expectile_sweep.csv") as f:
        table = list(csv.DictReader(f))
    assert [float(row["score"]) for row in table] == pytest.approx([row["score"] for row in rows])
    assert (output / "expectile_sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    checkpoint = output / "tau-0.5_seed-0" / "checkpoints" / "ckpt-20.index"
    written = checkpoint.stat().st_mtime_ns
    again = run_sweep(["locomotion"], tiny_bindings, [0.5, 0.9], [0, 1], str(output))
    assert again == rows
    assert checkpoint.stat().st_mtime_ns == written  # finished runs are not trained again


def test_expectile_outside_the_unit_interval_is_a_user_error(tiny_bindings, tmp_path):
    with pytest.raises(UserError, match="expectile 1.5 is outside"):
        run_sweep(["locomotion"], tiny_bindings, [0.7, 1.5], [0], str(tmp_path))


@pytest.mark.parametrize("binding", ["IQLAgent.expectile = 0.8", "train.seed=4"])
def test_bindings_of_what_the_sweep_sets_are_refused(tiny_bindings, tmp_path, binding):
    with pytest.raises(UserError, match="the sweep sets IQLAgent.expectile and train.seed itself"):
        run_sweep(["locomotion"], tiny_bindings + [binding], [0.7], [0], str(tmp_path))


def test_cli_rejects_a_malformed_list_in_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "iql_tf.tools.expectile_sweep", "--gin_file=quickstart", "--expectiles=0.5,x",
         f"--output_dir={tmp_path}"],
        capture_output=True, text=True, cwd=REPO_ROOT, timeout=120,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: --expectiles:")
