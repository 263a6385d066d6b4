"""Sweeps on a local Ray and the report: every combination trained as its own run, Ctrl-C saving running runs,
re-running skipping finished ones and resuming the rest, bad input refused before anything starts, and the
report's statistics against numbers computed by hand."""

import ipaddress
import json
import os
import signal
import subprocess
import sys
import time
import warnings

import gin
import numpy as np
import pytest
from scipy import stats

from iql_tf import results, run_files, sweep
from iql_tf.errors import UserError


@pytest.fixture
def sweep_flags(hopper_rows, tmp_path):
    """A 2 datasets x 2 expectiles grid of tiny Hopper runs, one seed each (the command line's flags)."""
    for name, rows in (("first", slice(0, 1000)), ("second", slice(1000, 2000))):
        np.savez(tmp_path / f"{name}.npz", **{key: value[rows] for key, value in hopper_rows.items()})
    bindings = ["make_dataset.env_id = 'Hopper-v5'", f"make_dataset.cache_dir = '{tmp_path / 'cache'}'",
                "IQLAgent.hidden_dims = (8, 8)", "IQLAgent.batch_size = 16", "IQLAgent.jit_compile = False",
                "train.num_offline_steps = 2000", "train.checkpoint_interval = 1000", "train.eval_interval = 1000",
                "train.steps_per_call = 50",
                "train.eval_episodes = 1", "train.progress_bar = False"]
    grid = [f"make_dataset.source=['{tmp_path / 'first.npz'}', '{tmp_path / 'second.npz'}']",
            "IQLAgent.expectile=[0.7, 0.9]"]
    return ["--gin_file=locomotion", *[f"--gin_bindings={b}" for b in bindings], *[f"--grid={g}" for g in grid],
            "--seeds=0", f"--root={tmp_path / 'root'}"]


def finished(root):
    return {str(path.parent.relative_to(root)): path.stat().st_mtime_ns for path in root.glob("*/*/finished.json")}


def early_in_its_run(run):
    """Unfinished, checkpointed at step 1000 and not yet at 2000: at least 1000 updates (20 calls) to go."""
    checkpoints = run / "checkpoints"
    return ((checkpoints / "ckpt-1000.index").exists() and not (checkpoints / "ckpt-2000.index").exists()
            and not (run / "finished.json").exists())


@pytest.mark.slow
def test_a_sweep_survives_ctrl_c_resumes_and_reports(sweep_flags, tmp_path):
    root = tmp_path / "root"
    command = [sys.executable, "-m", "iql_tf.sweep", *sweep_flags]
    driver = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # Only a failing sweep meets the deadline, so it is generous: 300 s was enough on an idle 2-core machine and
    # ran out when its cores were also training two runs.
    deadline = time.time() + 900
    while not finished(root) or not any(early_in_its_run(run) for run in root.glob("*/*")):
        assert driver.poll() is None, driver.communicate()[1][-2000:]
        assert time.time() < deadline, "no run finished"
        time.sleep(0.05)
    driver.send_signal(signal.SIGINT)  # Ctrl-C
    stdout, stderr = driver.communicate(timeout=300)
    before = finished(root)
    assert driver.returncode == 130, stderr[-2000:]
    stopped = [line for line in stdout.splitlines() if line.startswith("stopped ") and "at step" in line]
    assert stopped, stdout[-2000:]
    # Each stopped run saved a checkpoint at the step it reached, before exiting.
    for line in stopped:
        name, step = line.split()[1], int(line.split("at step ")[1].split()[0])
        assert (root / name / "checkpoints" / f"ckpt-{step}.index").exists()

    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    after = finished(root)
    assert len(after) == 4 and {name: after[name] for name in before} == before  # finished runs not trained again
    assert f"4 runs in {root}: {4 - len(before)} trained, {len(before)} already finished, 0 failed (wall time " \
        in result.stdout
    # What it does while Ray and its workers start is said before the first run ends.
    said = result.stderr.index("starting a local Ray on 127.0.0.1"), result.stderr.index("Ray ready in "), \
        result.stderr.index("finished ")
    assert list(said) == sorted(said)
    for line in stopped:  # stopped runs resumed from their checkpoint
        history = json.loads((root / line.split()[1] / "eval_results.json").read_text())
        assert [entry["step"] for entry in history] == [1000, 2000]

    # The report of the sweep: 2 datasets x 2 configurations, aggregated across datasets.
    summary = results.summarise(results.collect(root), reps=200)
    assert set(summary["datasets"]) == {str(tmp_path / "first.npz"), str(tmp_path / "second.npz")}
    configurations = {"IQLAgent.expectile=0.7", "IQLAgent.expectile=0.9"}
    for entry in summary["datasets"].values():
        assert set(entry["configurations"]) == configurations and entry["score"] == "normalized_score"
        assert all(values["runs"] == 1 for values in entry["configurations"].values())
    assert set(summary["aggregate"]) == configurations and summary["aggregate_runs_per_dataset"] == 1
    assert len(summary["probability_of_improvement"]) == 2
    written = results.plot(results.collect(root), summary, tmp_path, reps=200, seed=0)
    assert [path.name for path in written] == ["curves.png", "aggregate.png"]
    assert all(path.read_bytes()[:4] == b"\x89PNG" for path in written)
    assert "| IQLAgent.expectile=0.7 | 1 |" in results.markdown(summary)


def test_bad_input_is_refused_before_anything_starts(sweep_flags, tmp_path):
    with pytest.raises(UserError, match="no_such_parameter"):
        sweep.plan(["locomotion"], [], sweep.parse_grid(["IQLAgent.no_such_parameter=[1, 2]"]), [0])
    # A value the settings refuse, in any combination: refused before Ray starts or any run trains.
    with pytest.raises(UserError, match=r"^expectile=1.5/seed0: IQLAgent.expectile = 1.5 must be a number in \(0, 1\)"):
        sweep.plan(["locomotion"], [], sweep.parse_grid(["IQLAgent.expectile=[0.7, 1.5]"]), [0, 1])
    with pytest.raises(UserError, match="give a non-empty list of values"):
        sweep.parse_grid(["IQLAgent.expectile=[]"])
    with pytest.raises(UserError, match=r"expected BINDING=\[VALUE, ...\]"):
        sweep.parse_grid(["expectile"])
    with pytest.raises(UserError, match="use --seeds"):
        sweep.parse_grid(["train.seed=[0, 1]"])
    with pytest.raises(UserError, match=r"names seed\(s\) \[1\] more than once"):
        sweep.parse_seeds("0-2,1")
    assert sweep.parse_seeds("0-2,5") == [0, 1, 2, 5]
    specs = sweep.plan(["locomotion"], ["train.num_offline_steps = 10"], sweep.parse_grid(["IQLAgent.expectile=[0.7]"]),
                       [3])
    assert [spec.name for spec in specs] == ["expectile=0.7/seed3"]
    (tmp_path / "root" / specs[0].name).mkdir(parents=True)
    (tmp_path / "root" / specs[0].name / run_files.SWEEP_RUN).write_text(json.dumps(
        {**specs[0].to_json(), "bindings": ["IQLAgent.expectile = 0.5"]}))
    with pytest.raises(UserError, match=r"holds a run of another configuration"):
        sweep.check_root(tmp_path / "root", specs)
    assert gin.config._CONFIG == {}  # planning leaves no gin state behind


def test_report_statistics_match_numbers_computed_by_hand(tmp_path):
    # One dataset, one configuration, eight seeds with final scores 0, 10, ..., 70.
    runs = [results.RunResult(tmp_path, "d", "c", seed, [1], [10.0 * seed], "normalized_score") for seed in range(8)]
    entry = results.summarise(runs, reps=2000, seed=0)["datasets"]["d"]["configurations"]["c"]
    assert entry["runs"] == 8 and entry["mean"] == 35.0
    assert entry["iqm"] == pytest.approx(35.0)  # the mean of the middle half: 20, 30, 40, 50
    # A percentile bootstrap of the IQM over seeds, by hand.
    rng = np.random.default_rng(1)
    scores = 10.0 * np.arange(8)
    boots = [stats.trim_mean(rng.choice(scores, 8), 0.25) for _ in range(20000)]
    low, high = np.percentile(boots, [2.5, 97.5])
    assert entry["iqm_ci"][0] == pytest.approx(low, abs=2.5) and entry["iqm_ci"][1] == pytest.approx(high, abs=2.5)
    # Probability of improvement: a configuration better on every seed pair is better with probability 1.
    better = [results.RunResult(tmp_path, d, "high", s, [1], [100.0 + s], "normalized_score") for d in "xy" for s in range(3)]
    worse = [results.RunResult(tmp_path, d, "low", s, [1], [float(s)], "normalized_score") for d in "xy" for s in range(3)]
    summary = results.summarise(better + worse, reps=200)
    assert summary["probability_of_improvement"]["high > low"][0] == 1.0
    assert summary["probability_of_improvement"]["low > high"][0] == 0.0
    assert summary["aggregate"]["high"]["optimality_gap"][0] == pytest.approx(0.0)  # all at or above 100
    assert summary["aggregate"]["low"]["iqm"][0] == pytest.approx(1.0)
    # OGBench's protocol: a run's score is the mean of its last three evaluations.
    runs = [results.RunResult(tmp_path, "d", "c", 0, [1, 2, 3, 4], [0.0, 30.0, 60.0, 90.0], "success_rate")]
    assert results.summarise(runs, reps=10, last=3)["datasets"]["d"]["configurations"]["c"]["mean"] == 60.0
    assert results.summarise(runs, reps=10)["datasets"]["d"]["configurations"]["c"]["mean"] == 90.0
    assert "the mean of its last 3 evaluations" in results.markdown(results.summarise(runs, reps=10, last=3))
    assert "1 run(s) have fewer than 5 evaluations" in results.markdown(results.summarise(runs, reps=10, last=5))


def test_the_sweep_command_reports_mistakes_in_one_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "iql_tf.sweep", "--gin_file=quickstart", "--seeds=1,1",
                             f"--root={tmp_path}"], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == "error: --seeds='1,1' names seed(s) [1] more than once"


def _listening_addresses(pids):
    """(address, port) of every listening TCP socket that one of `pids` holds, read from /proc."""
    inodes = set()
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:  # the process ended meanwhile
            continue
    found = []
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        for line in open(table).read().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and inode in inodes:  # LISTEN
                address, port = local.split(":")
                raw = bytes.fromhex(address)
                # /proc prints each 32-bit word in host (little-endian) order.
                raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
                found.append((str(ipaddress.ip_address(raw)), int(port, 16)))
    return found


def _descendants(pid):
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parent = int(open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            children.setdefault(parent, []).append(int(entry))
    family, todo = [], [pid]
    while todo:
        family.append(todo.pop())
        todo += children.get(family[-1], [])
    return family


def test_the_local_ray_listens_on_loopback_only():
    script = ("import sys; from iql_tf import sweep; sweep.init_ray(None); "
              "import ray; ray.get(ray.remote(lambda: 0).remote()); print('ready', flush=True); sys.stdin.read()")
    driver = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        assert driver.stdout.readline().strip() == "ready", driver.stderr.read()[-2000:]
        processes = _descendants(driver.pid)
        names = {open(f"/proc/{pid}/comm").read().strip() for pid in processes if os.path.exists(f"/proc/{pid}")}
        assert {"gcs_server", "raylet"} <= names  # the servers of the local Ray, and its workers
        addresses = _listening_addresses(processes)
        assert addresses
        exposed = [(host, port) for host, port in addresses
                   if not ipaddress.ip_address(host).is_loopback
                   and not (ipaddress.ip_address(host).version == 6 and ipaddress.ip_address(host).ipv4_mapped
                            and ipaddress.ip_address(host).ipv4_mapped.is_loopback)]
        assert not exposed, f"listening beyond loopback: {exposed} (all: {addresses})"
    finally:
        driver.stdin.close()
        driver.wait(timeout=60)


def test_the_report_keeps_runs_of_other_settings_apart_and_draws_one_point_curves(tmp_path):
    # Two "seeds" of one label that were trained differently (say 64x64 for 2000 steps, 256x256 for 1000):
    # not one configuration with a confidence interval.
    runs = [results.RunResult(tmp_path, "d", "c", seed, [1000], [10.0 * seed], "normalized_score", setup=setup)
            for seed, setup in ((0, "aaa"), (1, "aaa"), (2, "bbb"))]
    summary = results.summarise(results._apart_by_setup(runs), reps=100)
    assert set(summary["datasets"]["d"]["configurations"]) == {"c [settings 1 of 2]", "c [settings 2 of 2]"}
    assert "d: c was trained with different settings besides the seed" in results.markdown(summary)
    # One dataset still gets its aggregate figure; one evaluation per run draws without warnings.
    assert set(summary["aggregate"]) == {"c [settings 1 of 2]", "c [settings 2 of 2]"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        written = results.plot(runs, summary, tmp_path, reps=100, seed=0)
    assert [path.name for path in written] == ["curves.png", "aggregate.png"]
