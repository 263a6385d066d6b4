"""`compare` and `table`: the peer and iql-tf with one budget, seed by seed, and the table of both.

    OUT/fql_iql/TASK/seedS/result.json     the peer's run (`run`)
    OUT/iql_tf/TASK/seedS/                 iql-tf's run directory, with its result.json beside its own records
    OUT/table.md

Runs go one at a time, interleaved (peer seed 0, iql-tf seed 0, peer seed 1, ...), so that drifts in the
machine's load hit both alike; or, with `side_by_side`, the two runs of a (task, seed) at once, each pinned to
a core of its own (the same hardware share for both, in half the wall time; their output goes to log files
beside their folders). A run whose result.json exists is skipped, so re-running resumes; results of other
settings in OUT are refused rather than mixed.
"""

import collections
import concurrent.futures
import functools
import json
import os
import pathlib
import sys
import time
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from iql_tf import files, intervals, json_records
from iql_tf.errors import UserError
from tools.fql_peer import install, peer, results

IQL_TF = "iql-tf"
IMPLEMENTATIONS = (peer.IMPLEMENTATION, IQL_TF)
FOLDERS = {peer.IMPLEMENTATION: "fql_iql", IQL_TF: "iql_tf"}
TABLE = "table.md"


def run_dir(out: pathlib.Path, implementation: str, task: str, seed: int) -> pathlib.Path:
    return out / FOLDERS[implementation] / task / f"seed{seed}"


def iql_tf_command(task: str, seed: int, data_dir: pathlib.Path, workdir: pathlib.Path,
                   budget: peer.Budget) -> List[str]:
    """iql-tf's training command for the same task, data and budget (FQL's alpha is iql-tf's IQLAgent.beta)."""
    bindings = [f"make_dataset.source = 'ogbench:{task}'", f"make_dataset.ogbench_dir = '{data_dir}'",
                f"train.seed = {seed}", f"train.num_offline_steps = {budget.steps}",
                f"train.eval_interval = {budget.eval_interval}", f"train.eval_episodes = {budget.eval_episodes}",
                f"train.log_interval = {budget.speed_interval}", f"IQLAgent.hidden_dims = {tuple(budget.hidden_dims)}",
                f"IQLAgent.beta = {budget.alpha}", f"IQLAgent.expectile = {budget.expectile}",
                f"IQLAgent.batch_size = {budget.batch_size}", f"IQLAgent.discount = {budget.discount}"]
    return [sys.executable, "-m", "iql_tf.train", "--gin_file=ogbench", f"--workdir={workdir}",
            *[f"--gin_bindings={binding}" for binding in bindings]]


def run_iql_tf(task: str, seed: int, data_dir: pathlib.Path, workdir: pathlib.Path,
               budget: peer.Budget, core: Optional[int] = None) -> Dict[str, Any]:
    """Trains (or resumes) iql-tf's run and writes its result.json; wall time only for a run started afresh.
    With `core`, pinned to that core, its output in WORKDIR.log."""
    command = iql_tf_command(task, seed, data_dir, workdir, budget)
    fresh = not (workdir / "checkpoints").exists()
    print(f"iql-tf on {task}, seed {seed}, {budget.steps} updates, in {workdir}", flush=True)
    log = workdir.parent / f"{workdir.name}.log"
    start = time.perf_counter()
    code = peer.launch(command, core, log)
    wall = time.perf_counter() - start
    if code:
        raise UserError(f"iql-tf's training failed (exit status {code}) for {task} seed {seed}: see its output "
                        + ("above" if core is None else f"in {log}"))
    result = {"implementation": IQL_TF, "task": task, "seed": seed, "steps": budget.steps,
              **results.iql_tf_result(workdir, seed), "wall_seconds": wall if fresh else None,
              "command": " ".join(command), "budget": budget.record()}
    files.write_json(workdir / results.RESULT, result)
    return result


def _existing(path: pathlib.Path, budget: peer.Budget) -> bool:
    """Whether a result of this budget is there; one of another budget is refused."""
    if not path.exists():
        return False
    recorded = read_result(path)["budget"]
    if recorded != budget.record():
        changed = ", ".join(f"{name} {recorded.get(name)} -> {value}" for name, value in budget.record().items()
                            if recorded.get(name) != value)
        raise UserError(f"{path} was run with other settings ({changed}): use another --out, or the same flags")
    return True


def compare(root: pathlib.Path, tasks: Sequence[str], seeds: Sequence[int], data_dir: pathlib.Path,
            out: pathlib.Path, budget: peer.Budget, side_by_side: bool = False) -> None:
    data_dir, out = data_dir.resolve(), out.resolve()
    for task in tasks:
        peer.check_data(data_dir, task)
    layout = install.Layout(root)
    install.check_checkout(layout.fql)
    install.check_installed(layout)
    cores = sorted(os.sched_getaffinity(0))
    if side_by_side and len(cores) < len(IMPLEMENTATIONS):
        raise UserError(f"--side_by_side needs {len(IMPLEMENTATIONS)} cores; this process may use {len(cores)}")
    pairs = [(task, seed) for task in tasks for seed in seeds]
    for number, (task, seed) in enumerate(pairs, 1):
        jobs = []
        for index, implementation in enumerate(IMPLEMENTATIONS):
            folder = run_dir(out, implementation, task, seed)
            if _existing(folder / results.RESULT, budget):
                print(f"[{number}/{len(pairs)}] {implementation} {task} seed {seed}: done before, skipped", flush=True)
                continue
            train = run_iql_tf if implementation == IQL_TF else functools.partial(peer.run, root)
            jobs.append(functools.partial(train, task, seed, data_dir, folder, budget,
                                          core=cores[index] if side_by_side else None))
        print(f"[{number}/{len(pairs)}] {task} seed {seed}" + (", side by side, a core each" if side_by_side else ""),
              flush=True)
        with concurrent.futures.ThreadPoolExecutor(max(1, len(jobs) if side_by_side else 1)) as pool:
            for result in pool.map(lambda job: job(), jobs):
                print(peer.summary_line(result), flush=True)
    print(write_table(out))


# --- the table -------------------------------------------------------------------------------------------


def read_result(path: pathlib.Path) -> Dict[str, Any]:
    return json_records.parse_json_object(path.read_text(), str(path), f"delete {path.parent} and run compare again")


def collect(out: pathlib.Path) -> List[Dict[str, Any]]:
    found = [read_result(path) for folder in FOLDERS.values() for path in sorted(out.glob(f"{folder}/*/seed*/"
                                                                                           f"{results.RESULT}"))]
    if not found:
        raise UserError(f"no {results.RESULT} under {out}: run `python -m tools.fql_peer compare` first")
    budgets = {json.dumps(result["budget"], sort_keys=True) for result in found}
    if len(budgets) > 1:
        raise UserError(f"{out} holds results of {len(budgets)} different settings: keep one comparison per --out")
    return found


def _percent(value: float) -> str:
    return f"{100 * value:.1f}"


def table(found: Sequence[Dict[str, Any]]) -> str:
    """Markdown: per task and implementation, final success (mean, 95 % CI, per seed) and updates/s."""
    grouped: Dict[str, Dict[str, List[Dict[str, Any]]]] = collections.defaultdict(lambda: collections.defaultdict(list))
    for result in found:
        grouped[result["task"]][result["implementation"]].append(result)
    budget = found[0]["budget"]
    lines = ["# FQL's IQL (JAX) and iql-tf on the same OGBench data", "",
             "Settings: " + ", ".join(f"{name} {value}" for name, value in budget.items()), "",
             "| task | implementation | seeds | final success % (mean [95 % CI]) | per seed | updates/s (median) |",
             "| --- | --- | --- | --- | --- | --- |"]
    for task in sorted(grouped):
        speeds = {}
        for implementation in IMPLEMENTATIONS:
            runs = sorted(grouped[task].get(implementation, []), key=lambda result: result["seed"])
            if not runs:
                lines.append(f"| {task} | {implementation} | 0 | - | - | - |")
                continue
            mean, low, high = intervals.mean_interval([run["final_success"] for run in runs])
            rates = [run["updates_per_second"] for run in runs if run["updates_per_second"] is not None]
            speeds[implementation] = float(np.median(rates)) if rates else None
            speed = "-" if speeds[implementation] is None else f"{speeds[implementation]:.1f}"
            if implementation == IQL_TF and speeds.get(peer.IMPLEMENTATION) and speeds[IQL_TF]:
                speed += f" ({speeds[IQL_TF] / speeds[peer.IMPLEMENTATION]:.2f}x {peer.IMPLEMENTATION})"
            per_seed = ", ".join(f"s{run['seed']} {_percent(run['final_success'])}" for run in runs)
            lines.append(f"| {task} | {implementation} | {len(runs)} | {_percent(mean)} [{_percent(low)}, "
                         f"{_percent(high)}] | {per_seed} | {speed} |")
    if len(grouped) > 1:
        for implementation in IMPLEMENTATIONS:
            lines.append(_all_tasks_row(grouped, implementation))
    lines += ["", "Final success: the last evaluation's success rate. CI: bootstrap over seeds. updates/s: 1 / the "
              "median seconds per update over each run's logged windows, without the first (compilation) and those "
              "holding an evaluation or a checkpoint; the median over seeds, and iql-tf's ratio to the peer's."]
    if len(grouped) > 1:
        lines += ["", "All tasks: the mean over the tasks of each seed's final success, as OGBench reports a family; "
                  "its CI resamples the seeds within each task (rliable's stratified bootstrap), over the seeds that "
                  "every task has."]
    return "\n".join(lines) + "\n"


def _all_tasks_row(grouped: Dict[str, Dict[str, List[Dict[str, Any]]]], implementation: str) -> str:
    """The mean over the tasks, with its interval, of the seeds every task has for `implementation`."""
    by_task = {task: {run["seed"]: run["final_success"] for run in grouped[task].get(implementation, [])}
               for task in sorted(grouped)}
    seeds = sorted(set.intersection(*(set(results) for results in by_task.values())))
    label = f"all {len(by_task)} tasks"
    if not seeds:
        return f"| {label} | {implementation} | 0 | - | - | - |"
    scores = np.array([[by_task[task][seed] for task in by_task] for seed in seeds])  # [runs, tasks]
    mean, low, high = intervals.interval({"all": scores}, lambda x: np.array([np.mean(x)]), 2000, 0)["all"]
    per_seed = ", ".join(f"s{seed} {_percent(value)}" for seed, value in zip(seeds, scores.mean(axis=1)))
    return (f"| {label} | {implementation} | {len(seeds)} | {_percent(mean)} [{_percent(low)}, {_percent(high)}] | "
            f"{per_seed} | - |")


def write_table(out: pathlib.Path) -> str:
    text = table(collect(out))
    files.write_text(out / TABLE, text)
    return text
