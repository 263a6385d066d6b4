"""What a set of finished runs achieved: each seed's scores read from its run directory (`collect`), grouped by
dataset and configuration with intervals (`summarise`), as markdown (`markdown`) and figures (`plot`). The
command is `iql_tf.report`.

A run's score is its final evaluation (or with `last` the mean of its last evaluations, as OGBench's protocol
averages the last three): 100 x success rate where the environment reports success (the paper's AntMaze
score), else the normalised score, else the return. Runs are grouped by dataset and configuration (the swept
bindings; seeds are the repetitions); intervals are rliable's stratified bootstrap over seeds
(`intervals.py`), the same for the same runs and seed on every call.
"""

import collections
import dataclasses
import pathlib
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from iql_tf import files, intervals, json_records, run_files
from iql_tf.errors import UserError

SCORE_KINDS = ("success_rate", "normalized_score", "return_mean")  # in order of preference


@dataclasses.dataclass
class RunResult:
    """One seed of one finished run."""

    directory: pathlib.Path
    dataset: str
    configuration: str  # the non-seed, non-dataset hparams, as text
    seed: int
    steps: List[int]
    scores: List[float]  # per evaluation, in score units
    kind: str
    online_from: Optional[int] = None  # the update where online fine-tuning began
    setup: str = ""  # a digest of how it was trained but for the seed (finished.json's training record)

    def score(self, last: int = 1) -> float:
        """The mean of the last `last` evaluations (1: the final one)."""
        return float(np.mean(self.scores[-last:]))


def score_of(results: Dict[str, float]) -> Tuple[Optional[str], Optional[float]]:
    for kind in SCORE_KINDS:
        if kind in results:
            return kind, results[kind] * (100.0 if kind == "success_rate" else 1.0)
    return None, None


def collect(root: pathlib.Path) -> List[RunResult]:
    """Every evaluated seed of every finished run under `root` (a damaged run's records: skipped, saying so)."""
    runs = []
    for finished in sorted(root.rglob(run_files.FINISHED)):
        directory = run_files.RunFiles(finished.parent)
        try:
            summary, recorded = directory.finished(), directory.results()
        except UserError as error:
            print(f"skipped: {error}", file=sys.stderr)
            continue
        history = [{"step": step, "seed": seed, **results} for (step, seed), results in sorted(recorded.items())]
        offline_steps = summary.get("num_offline_steps", summary["step"])  # absent in runs of earlier versions
        online_from = offline_steps if summary["step"] > offline_steps else None
        for seed, hparams in zip(summary["seeds"], summary["hparams"]):
            entries = [entry for entry in history if entry["seed"] == seed]
            scored = [(entry["step"], *score_of(entry)) for entry in entries]
            scored = [(step, kind, value) for step, kind, value in scored if kind is not None]
            if not scored:
                continue
            runs.append(RunResult(finished.parent, summary["dataset"], configuration_label(summary, hparams), seed,
                                  [step for step, _, _ in scored], [value for _, _, value in scored], scored[-1][1],
                                  online_from, _setup_digest(summary.get("training"))))
    return _apart_by_setup(runs)


def configuration_label(summary: Dict[str, Any], hparams: Dict[str, Any]) -> str:
    """A seed's configuration as text: a sweep's runs differ in what it swept, other runs by their own settings
    (`summary`: the run's finished.json; `hparams`: the seed's)."""
    settings = summary["swept"] or hparams
    return ", ".join(f"{name}={value}" for name, value in sorted(settings.items())
                     if name not in ("train.seed", "make_dataset.source")) or "default"


def _setup_digest(training: Optional[Dict[str, Any]]) -> str:
    """What tells runs of one label apart, but for the compiled path: XLA and TensorFlow's kernels compute the
    same updates, and seeds that started together may have timed them differently."""
    return json_records.digest({name: value for name, value in (training or {}).items() if name != "xla"})


def _apart_by_setup(runs: List[RunResult]) -> List[RunResult]:
    """Runs with one label (dataset and swept values) but trained differently otherwise are not seeds of one
    configuration: each setup gets its own label, and the report says so."""
    setups: Dict[Tuple[str, str], List[str]] = collections.defaultdict(list)
    for run in runs:
        if run.setup not in setups[(run.dataset, run.configuration)]:
            setups[(run.dataset, run.configuration)].append(run.setup)
    for run in runs:
        found = setups[(run.dataset, run.configuration)]
        if len(found) > 1:
            run.configuration = f"{run.configuration} [settings {found.index(run.setup) + 1} of {len(found)}]"
    return runs


def summarise(runs: Sequence[RunResult], reps: int = 2000, seed: int = 0, last: int = 1) -> Dict[str, Any]:
    """The report's numbers (see the module docstring)."""
    from rliable import metrics

    if not runs:
        raise UserError("no finished runs with evaluations there: train some first (iql-sweep, iql-train)")
    by_dataset: Dict[str, Dict[str, List[RunResult]]] = collections.defaultdict(lambda: collections.defaultdict(list))
    for run in runs:
        by_dataset[run.dataset][run.configuration].append(run)
    datasets: Dict[str, Any] = {}
    iqm = lambda x: np.array([metrics.aggregate_iqm(x)])  # noqa: E731
    for dataset, configurations in by_dataset.items():
        kinds = {run.kind for group in configurations.values() for run in group}
        scores = {name: np.array([[run.score(last)] for run in group]) for name, group in configurations.items()}
        estimates = intervals.interval(scores, iqm, reps, seed)
        datasets[dataset] = {
            "score": "/".join(sorted(kinds)),
            "configurations": {name: {"runs": len(group), "mean": float(np.mean(scores[name])),
                                      "iqm": estimates[name][0], "iqm_ci": estimates[name][1:]}
                               for name, group in configurations.items()},
        }
    report: Dict[str, Any] = {"datasets": datasets, "evaluations_per_score": last}
    mixed = sorted({f"{run.dataset}: {run.configuration.rsplit(' [settings', 1)[0]}" for run in runs
                    if " [settings " in run.configuration})
    notes = [f"{name} was trained with different settings besides the seed (network sizes, steps, preprocessing, "
             "...): each set of settings is its own configuration below" for name in mixed]
    short = sorted(str(run.directory) for run in runs if len(run.scores) < last)
    if short:
        notes.append(f"{len(short)} run(s) have fewer than {last} evaluations, so their score averages fewer "
                     f"({', '.join(short[:3])}{', ...' if len(short) > 3 else ''})")
    if notes:
        report["notes"] = notes
    common = sorted(set.intersection(*(set(c) for c in by_dataset.values())))
    # rliable's matrices are [runs, datasets]: the same number of seeds on every dataset.
    count = min((len(by_dataset[d][c]) for d in by_dataset for c in common), default=0)
    matrices = {c: np.array([[run.score(last) for run in by_dataset[d][c][:count]] for d in by_dataset]).T
                for c in common}
    if common:  # with one dataset too: the intervals are then that dataset's
        aggregate = lambda x: np.array([metrics.aggregate_iqm(x), metrics.aggregate_mean(x),  # noqa: E731
                                        metrics.aggregate_optimality_gap(x, 100.0)])
        points, bounds = intervals.estimates(matrices, aggregate, reps, seed)
        report["aggregate"] = {c: {name: (float(points[c][i]), float(bounds[c][0][i]), float(bounds[c][1][i]))
                                   for i, name in enumerate(("iqm", "mean", "optimality_gap"))} for c in common}
        report["aggregate_runs_per_dataset"] = count
    if len(common) > 1:
        pairs = {f"{x} > {y}": (matrices[x], matrices[y]) for x in common for y in common if x != y}
        report["probability_of_improvement"] = intervals.interval(pairs, metrics.probability_of_improvement, reps,
                                                                      seed)
    return report


def markdown(report: Dict[str, Any]) -> str:
    last = report.get("evaluations_per_score", 1)
    lines = ["# Results", "", "A run's score: " + ("its final evaluation." if last == 1 else
                                                   f"the mean of its last {last} evaluations."), ""]
    for note in report.get("notes", []):
        lines += [f"Note: {note}.", ""]
    for dataset, entry in report["datasets"].items():
        lines += [f"## {dataset} (score: {entry['score']})", "", "| configuration | runs | mean | IQM | 95 % CI of the IQM |",
                  "| --- | --- | --- | --- | --- |"]
        for name, values in entry["configurations"].items():
            low, high = values["iqm_ci"]
            lines.append(f"| {name} | {values['runs']} | {values['mean']:.1f} | {values['iqm']:.1f} | "
                         f"[{low:.1f}, {high:.1f}] |")
        lines.append("")
    if "aggregate" in report:
        lines += [f"## Across datasets ({report['aggregate_runs_per_dataset']} runs per dataset)", "",
                  "| configuration | IQM | mean | optimality gap |", "| --- | --- | --- | --- |"]
        for name, values in report["aggregate"].items():
            lines.append("| " + " | ".join([name] + [f"{p:.1f} [{lo:.1f}, {hi:.1f}]" for p, lo, hi in values.values()])
                         + " |")
        lines.append("")
    if "probability_of_improvement" in report:
        lines += ["## Probability of improvement", "", "| comparison | P(X > Y) | 95 % CI |", "| --- | --- | --- |"]
        for name, (point, low, high) in report["probability_of_improvement"].items():
            lines.append(f"| {name} | {point:.2f} | [{low:.2f}, {high:.2f}] |")
        lines.append("")
    return "\n".join(lines)


def plot(runs: Sequence[RunResult], report: Dict[str, Any], output: pathlib.Path, reps: int, seed: int) -> List[pathlib.Path]:
    """curves.png (IQM over seeds per evaluation step, with a 95 % band) and aggregate.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from rliable import metrics

    datasets = list(report["datasets"])
    figure, axes = plt.subplots(1, len(datasets), figsize=(5.5 * len(datasets), 4.4), squeeze=False)
    for axis, dataset in zip(axes[0], datasets):
        for configuration in report["datasets"][dataset]["configurations"]:
            group = [run for run in runs if run.dataset == dataset and run.configuration == configuration]
            steps = sorted(set.intersection(*(set(run.steps) for run in group)))
            if not steps:
                continue
            curves = np.array([[dict(zip(run.steps, run.scores))[step] for step in steps] for run in group])
            per_step = lambda x: np.array([metrics.aggregate_iqm(x[:, :, t]) for t in range(x.shape[2])])  # noqa: E731
            points, bounds = intervals.estimates({"c": curves[:, None, :]}, per_step, max(200, reps // 10), seed)
            line, = axis.plot(steps, points["c"], marker="o" if len(steps) == 1 else None,
                              label=f"{configuration} (IQM of {len(group)})")
            axis.fill_between(steps, bounds["c"][0], bounds["c"][1], alpha=0.2, color=line.get_color())
            for run in group:  # each seed, faintly
                axis.plot(run.steps, run.scores, lw=0.6, alpha=0.5, color=line.get_color())
            for start in {run.online_from for run in group if run.online_from is not None}:
                axis.axvline(start, ls="--", color="0.4", lw=0.8)
                axis.text(start, axis.get_ylim()[1], " online", va="top", fontsize="x-small", color="0.4")
        axis.set_title(dataset)
        axis.set_xlabel("gradient updates")
        # Whole updates only (a one-point curve would get ticks like 0.0002k); thousands as k, few enough to read.
        axis.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(nbins=5, integer=True))
        axis.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(
            lambda x, _: f"{x / 1000:g}k" if abs(x) >= 1000 else f"{x:g}"))
        axis.set_ylabel(report["datasets"][dataset]["score"].replace("success_rate", "success (%)"))
        if axis.get_legend_handles_labels()[0]:  # below the panel: long configuration names cover no curve
            axis.legend(fontsize="x-small", loc="upper center", bbox_to_anchor=(0.5, -0.2), frameon=False)
    figure.tight_layout()
    written = [output / "curves.png"]
    files.write_png(figure, written[0])
    if "aggregate" in report:
        names = list(report["aggregate"])
        figure, axes = plt.subplots(1, 3, figsize=(12, 0.6 + 0.5 * len(names)), squeeze=False)
        for axis, metric in zip(axes[0], ("iqm", "mean", "optimality_gap")):
            for row, name in enumerate(names):
                point, low, high = report["aggregate"][name][metric]
                axis.plot([low, high], [row, row], lw=6, alpha=0.5)
                axis.plot([point], [row], "k|", ms=12)
            axis.set_yticks(range(len(names)), names if metric == "iqm" else [""] * len(names))
            axis.set_title(metric.replace("_", " "))
        figure.tight_layout()
        written.append(output / "aggregate.png")
        files.write_png(figure, written[-1])
    return written
