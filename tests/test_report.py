"""iql-report: the same runs give the same report, byte for byte, on every call."""

import json
import subprocess
import sys

from iql_tf import run_files


def write_finished_run(directory, dataset, expectile, seed, successes):
    """A finished run's records as the trainer writes them: evaluations every 1000 updates."""
    files = run_files.RunFiles(directory)
    directory.mkdir(parents=True)
    for step, success in enumerate(successes, 1):
        files.append_result(1000 * step, seed, {"return_mean": success, "success_rate": success})
    hparams = {"make_dataset.source": dataset, "IQLAgent.expectile": expectile, "train.seed": seed}
    files.write_finished({"step": 1000 * len(successes), "num_offline_steps": 1000 * len(successes),
                          "dataset": dataset, "seeds": [seed], "results": [{"success_rate": successes[-1]}],
                          "swept": {"IQLAgent.expectile": expectile}, "hparams": [hparams], "training": {}})


def test_two_calls_write_the_same_report(tmp_path):
    rates = {0.7: [0.2, 0.5, 0.9, 0.4, 0.7], 0.9: [0.6, 0.8, 1.0, 0.3, 0.95]}
    for dataset in ("maze-a", "maze-b"):
        for expectile, finals in rates.items():
            for seed, final in enumerate(finals):
                write_finished_run(tmp_path / "root" / dataset / f"expectile={expectile}" / f"seed{seed}", dataset,
                                   expectile, seed, [final / 2, final])
    reports = []
    for hash_seed in ("1", "2"):  # and another order of every set and dict of strings
        result = subprocess.run([sys.executable, "-m", "iql_tf.report", str(tmp_path / "root"), "--noplots",
                                 "--reps=500", "--last_evaluations=2"], capture_output=True, text=True, timeout=120,
                                env={"PYTHONHASHSEED": hash_seed, "PATH": ""})
        assert result.returncode == 0, result.stderr[-2000:]
        reports.append((tmp_path / "root" / "report" / "report.json").read_bytes())
    assert reports[0] == reports[1]
    report = json.loads(reports[0])
    assert set(report["aggregate"]) == {"IQLAgent.expectile=0.7", "IQLAgent.expectile=0.9"}
    low, high = report["datasets"]["maze-a"]["configurations"]["IQLAgent.expectile=0.9"]["iqm_ci"]
    assert 0 < low < high <= 100
