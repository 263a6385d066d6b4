"""tools.fql_peer: FQL's logs and iql-tf's records read alike, the table, the data refusal, the peer's HOME and
command. No venv, no network, no training: FQL's files are laid out here as its CsvLogger writes them."""

import ast
import json
import os
import pathlib
import subprocess
import sys

import pytest

from iql_tf import intervals, run_files
from iql_tf.errors import UserError
from tools.fql_peer import compare, install, peer, results

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
TASK = "cube-single-play-singletask-task2-v0"
BUDGET = peer.Budget(steps=200, hidden_dims=(32, 32), alpha=3.0, expectile=0.9, batch_size=256, discount=0.99,
                     eval_interval=100, eval_episodes=2, log_interval=5000)


def write_fql_csv(path: pathlib.Path, rows) -> None:
    """As FQL's CsvLogger: a header of the first row's keys with `step` last, then comma-joined values."""
    header = [*[key for key in rows[0][1] if key != "step"], "step"]
    lines = [",".join(header)] + [",".join(str({**row, "step": step}[key]) for key in header) for step, row in rows]
    path.write_text("\n".join(lines) + "\n")


def fql_run(save_dir: pathlib.Path, seed: int = 0) -> pathlib.Path:
    log_dir = save_dir / "fql" / peer.RUN_GROUP / f"sd{seed:03d}_20250101_000000"
    log_dir.mkdir(parents=True)
    # Evaluations at 1 and every 100 updates; each runs after the log at its step, so the window (100, 120]
    # holds one (0.9 s per update here), and (0, 20] holds the compilation.
    seconds = {20: 0.5, 40: 0.002, 60: 0.004, 80: 0.004, 100: 0.002, 120: 0.9, 140: 0.004, 160: 0.002, 180: 0.01,
               200: 0.004}
    write_fql_csv(log_dir / "train.csv", [(step, {"training/actor/actor_loss": 0.1, "time/epoch_time": value,
                                                  "time/total_time": 1.0}) for step, value in seconds.items()])
    write_fql_csv(log_dir / "eval.csv", [(step, {"evaluation/success": success, "evaluation/episode.length": 200.0})
                                         for step, success in ((1, 0.0), (100, 0.5), (200, 0.75))])
    return log_dir


def test_fql_logs_give_final_success_evaluations_and_update_speed(tmp_path):
    log_dir = fql_run(tmp_path / "fql_save", seed=3)
    assert results.fql_log_dir(tmp_path / "fql_save", 3) == log_dir
    result = results.fql_result(log_dir)
    assert result["final_success"] == 0.75
    assert result["evaluations"] == [[1, 0.0], [100, 0.5], [200, 0.75]]
    # Kept: 40..100, 140..200 (not 20: compilation; not 120: the evaluation at 100); their median is 0.004 s.
    assert result["updates_per_second"] == pytest.approx(250.0)
    with pytest.raises(UserError, match="found 0"):
        results.fql_log_dir(tmp_path / "fql_save", 0)


def test_speed_leaves_out_the_first_window_and_those_holding_a_pause():
    windows = [(10, 1.0), (20, 0.1), (30, 5.0), (40, 0.2), (50, 0.3)]
    assert results.updates_per_second(windows, pauses=[20]) == pytest.approx(1 / 0.2)
    assert results.updates_per_second(windows, pauses=[]) == pytest.approx(1 / 0.25)
    assert results.updates_per_second(windows[:1], pauses=[]) is None


def test_iql_tf_records_give_the_same_fields(tmp_path):
    files = run_files.RunFiles(tmp_path / "run")
    files.path.mkdir()
    for step, success in ((100, 0.5), (200, 1.0)):
        files.append_result(step, 1, {"return_mean": -10.0, "success_rate": success})
    files.write_finished({"step": 200, "seeds": [1], "results": [{"success_rate": 1.0}], "hparams": [{}]})
    files.write_operative_config("train.checkpoint_interval = 40\ntrain.log_interval = 20\n")
    # Windows of 20 updates. Left out: 20 (compilation), 120 (after the evaluation at 100), and those after the
    # checkpoints at 40, 80, 120, 160 (0.05 s per update); kept: 40, 80, 160, 200 (0.01 s).
    seconds = {20: 3.0, 40: 0.01, 60: 0.05, 80: 0.01, 100: 0.05, 120: 1.0, 140: 0.05, 160: 0.01, 180: 0.05, 200: 0.01}
    result = results.iql_tf_result(files.path, 1, list(seconds.items()))
    assert result["final_success"] == 1.0 and result["evaluations"] == [[100, 0.5], [200, 1.0]]
    assert result["updates_per_second"] == pytest.approx(100.0)
    with pytest.raises(UserError, match="did not finish"):
        results.iql_tf_result(tmp_path, 1, list(seconds.items()))


def result_record(implementation, seed, success, rate, budget=BUDGET, task=TASK):
    return {"implementation": implementation, "task": task, "seed": seed, "steps": budget.steps,
            "final_success": success, "evaluations": [[budget.steps, success]], "updates_per_second": rate,
            "wall_seconds": 10.0, "command": "x", "budget": budget.record()}


def test_table_shows_each_seed_a_mean_inside_its_interval_and_the_speed_ratio(tmp_path):
    for seed, (ours, theirs) in enumerate([(0.4, 0.2), (0.6, 0.2), (0.8, 0.2)]):
        for implementation, success, rate in ((compare.IQL_TF, ours, 200.0 + seed),
                                              (peer.IMPLEMENTATION, theirs, 100.0)):
            folder = compare.run_dir(tmp_path, implementation, TASK, seed)
            folder.mkdir(parents=True)
            (folder / results.RESULT).write_text(json.dumps(result_record(implementation, seed, success, rate)))
    text = compare.write_table(tmp_path)
    assert (tmp_path / compare.TABLE).read_text() == text
    rows = {line.split(" | ")[1]: line for line in text.splitlines() if line.startswith(f"| {TASK}")}
    assert "s0 40.0, s1 60.0, s2 80.0" in rows[compare.IQL_TF]
    assert "s0 20.0, s1 20.0, s2 20.0" in rows[peer.IMPLEMENTATION]
    assert "| 201.0 (2.01x fql-iql) |" in rows[compare.IQL_TF]
    assert "| 20.0 [20.0, 20.0] |" in rows[peer.IMPLEMENTATION]  # no spread, no interval
    mean, low, high = intervals.mean_interval([0.4, 0.6, 0.8])
    assert f"| {100 * mean:.1f} [{100 * low:.1f}, {100 * high:.1f}] |" in rows[compare.IQL_TF]


def test_a_family_of_tasks_gets_the_mean_over_its_tasks_for_the_seeds_every_task_has(tmp_path):
    other = TASK.replace("task2", "task3")
    successes = {(TASK, 0): 0.2, (TASK, 1): 0.4, (TASK, 2): 0.9, (other, 0): 0.6, (other, 1): 1.0}  # no seed 2 there
    for (task, seed), success in successes.items():
        folder = compare.run_dir(tmp_path, compare.IQL_TF, task, seed)
        folder.mkdir(parents=True)
        (folder / results.RESULT).write_text(json.dumps(result_record(compare.IQL_TF, seed, success, 200.0,
                                                                      task=task)))
    rows = {line.split(" | ")[1]: line for line in compare.write_table(tmp_path).splitlines()
            if line.startswith("| all 2 tasks")}
    # Seeds 0 and 1: (0.2 + 0.6) / 2 and (0.4 + 1.0) / 2, so 0.55 overall, within the seeds' means.
    assert "| 2 | 55.0 [40.0, 70.0] | s0 40.0, s1 70.0 | - |" in rows[compare.IQL_TF]
    assert rows[peer.IMPLEMENTATION].endswith("| 0 | - | - | - |")


def test_results_of_other_settings_are_refused_not_mixed(tmp_path):
    path = compare.run_dir(tmp_path, peer.IMPLEMENTATION, TASK, 0) / results.RESULT
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(result_record(peer.IMPLEMENTATION, 0, 0.5, 100.0)))
    assert compare._existing(path, BUDGET)
    other = peer.Budget(**{**BUDGET.__dict__, "alpha": 10.0})
    with pytest.raises(UserError, match="alpha 3.0 -> 10.0"):
        compare._existing(path, other)


def test_missing_data_is_refused_in_one_line_naming_the_generate_command(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "cube-single-play-v0.npz").write_bytes(b"")
    with pytest.raises(UserError) as caught:
        peer.run(tmp_path / "no_peer", TASK, 0, data, tmp_path / "out", BUDGET)
    message = str(caught.value)
    assert "cube-single-play-v0-val.npz" in message and "cube-single-play-v0.npz or" not in message
    assert (f"`python -m iql_tf.generate --kind=ogbench --dataset_id=cube-single-play-v0 --ogbench_dir={data}`"
            in message)
    done = subprocess.run([sys.executable, "-m", "tools.fql_peer", "run", f"--task={TASK}", f"--data_dir={data}",
                           f"--out={tmp_path / 'out'}", f"--root={tmp_path / 'no_peer'}"], cwd=REPO_ROOT,
                          capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"error: {message}"]
    assert not (tmp_path / "out").exists()


def test_the_peer_home_links_ogbench_default_folder_to_the_data(tmp_path, monkeypatch):
    data, other = tmp_path / "data", tmp_path / "other"
    data.mkdir()
    other.mkdir()
    (data / "cube-single-play-v0.npz").write_bytes(b"x")
    monkeypatch.chdir(tmp_path)
    home = peer.prepare_home(tmp_path / "out", pathlib.Path("data"))  # a relative --data_dir
    link = home / ".ogbench" / "data"
    assert link.is_symlink() and pathlib.Path(os.readlink(link)) == data.resolve()
    assert peer.prepare_home(tmp_path / "out", data) == home  # again: unchanged
    environment = peer.peer_environment(home, install.Layout(tmp_path / "peer"))
    assert environment["HOME"] == str(home) and "PYTHONPATH" not in environment
    assert environment["PATH"].split(os.pathsep)[0] == str(tmp_path / "peer" / "venv" / "bin")
    # OGBench's default dataset folder, as the peer resolves it, is the data.
    ogbench_default = subprocess.run([sys.executable, "-c", "import os; print(os.path.expanduser('~/.ogbench/data'))"],
                                     env={**os.environ, "HOME": environment["HOME"]}, capture_output=True, text=True)
    assert (pathlib.Path(ogbench_default.stdout.strip()) / "cube-single-play-v0.npz").read_bytes() == b"x"
    peer.prepare_home(tmp_path / "out", other)  # another --data_dir: relinked
    assert pathlib.Path(os.readlink(link)) == other.resolve()


def test_both_commands_get_the_same_budget(tmp_path):
    command = peer.peer_command(install.Layout(tmp_path), TASK, 4, tmp_path / "save", BUDGET)
    flags = dict(arg[2:].split("=", 1) for arg in command if arg.startswith("--"))
    assert command[1:3] == [str(peer.LAUNCH), "main.py"] and flags["agent"] == "agents/iql.py"
    assert ast.literal_eval(flags["agent.actor_hidden_dims"]) == ast.literal_eval(flags["agent.value_hidden_dims"]) \
        == (32, 32)
    assert (flags["offline_steps"], flags["log_interval"], flags["seed"], flags["agent.alpha"]) == \
        ("200", "20", "4", "3.0")
    assert int(flags["save_interval"]) > BUDGET.steps
    one_layer = peer.Budget(**{**BUDGET.__dict__, "hidden_dims": (64,)})
    last_flag = peer.peer_command(install.Layout(tmp_path), TASK, 4, tmp_path, one_layer)[-1]
    assert ast.literal_eval(last_flag.split("=")[1]) == (64,)
    bindings = [arg.split("=", 1)[1] for arg in compare.iql_tf_command(TASK, 4, tmp_path, tmp_path / "w", BUDGET)
                if arg.startswith("--gin_bindings=")]
    assert {f"make_dataset.source = 'ogbench:{TASK}'", f"make_dataset.ogbench_dir = '{tmp_path}'", "train.seed = 4",
            "train.num_offline_steps = 200", "train.log_interval = 20", "IQLAgent.hidden_dims = (32, 32)",
            "IQLAgent.beta = 3.0", "IQLAgent.expectile = 0.9"} <= set(bindings)


def test_launch_runs_main_with_wandb_disabled(tmp_path):
    """launch.py as the peer's venv runs it, against a stand-in wandb and main.py."""
    (tmp_path / "fake").mkdir()
    (tmp_path / "fake" / "wandb.py").write_text("def init(**kwargs):\n    return kwargs['mode']\n")
    (tmp_path / "main.py").write_text("import sys, wandb\nimport helper\nprint(wandb.init(mode='online'), sys.argv)\n")
    (tmp_path / "helper.py").write_text("")  # FQL's own modules import from its checkout
    done = subprocess.run([sys.executable, str(peer.LAUNCH), "main.py", "--seed=1"], cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(tmp_path / "fake")}, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "disabled ['main.py', '--seed=1']"


def test_side_by_side_runs_are_pinned_to_their_core_with_their_output_in_a_log(tmp_path):
    core = max(os.sched_getaffinity(0))
    log = tmp_path / "run.log"
    code = peer.launch([sys.executable, "-c", "import os; print(sorted(os.sched_getaffinity(0)))"], core, log)
    assert code == 0 and log.read_text().strip() == f"[{core}]"
    assert peer.launch([sys.executable, "-c", "raise SystemExit(3)"], core, log) == 3
