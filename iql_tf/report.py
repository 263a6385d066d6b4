"""Summarise many runs: `python -m iql_tf.report ROOT` (or `iql-report ROOT`).

Reads every finished run under ROOT (a sweep's, or any run directories: `finished.json`, `eval_results.json`)
and groups them by dataset and configuration (the swept bindings; seeds are the repetitions). Writes
ROOT/report/report.md (and report.json):
- per dataset and configuration: runs, mean, IQM and its 95 % stratified-bootstrap confidence interval over
  seeds (rliable);
- across datasets (configurations run on every dataset): IQM, mean and optimality gap with their intervals,
  and the probability of improvement of each configuration over every other;
and, unless --noplots, learning curves (IQM over seeds with a 95 % band, x: updates, one panel per dataset,
curves.png) and the aggregate intervals (aggregate.png). Every interval is drawn from its own generator seeded
with --seed (`intervals.py`): the same runs give the same report.json on every call and machine.

With --ope_dataset=SOURCE (any source iql-train takes), it also ranks every kept checkpoint of every seed by
fitted Q evaluation on that data, without a simulator (`iql_tf/ope/ranking.py`): ope.md / ope.json, each
candidate exported beside its estimate, and, where the runs were evaluated in an environment at those steps,
the Spearman rank correlation with the true scores and the regret of FQE's pick. Runs trained without an
environment have no scores, so only this part is written for them. Keep the checkpoints to rank with
`train.checkpoints_to_keep`.

    python -m iql_tf.report runs/sweep --ope_dataset=logs/robot.npz --fqe_steps=20000

The score of a run is its final evaluation (or with --last_evaluations=K the mean of its last K, as OGBench's
protocol averages the last three): 100 x success rate where the environment reports success (the paper's AntMaze
score), else the normalised score, else the return.
"""

import pathlib
import sys
from typing import Sequence

from absl import flags

from iql_tf import cli, files, results
from iql_tf.errors import UserError
from iql_tf.settings import FQESettings

FLAGS = flags.FLAGS


def define_flags() -> None:
    flags.DEFINE_string("output_dir", None, "Where the report goes (default ROOT/report).")
    flags.DEFINE_bool("plots", True, "Also draw curves.png and aggregate.png (--noplots: tables only).")
    flags.DEFINE_integer("reps", 2000, "Bootstrap replications of each confidence interval.")
    flags.DEFINE_integer("seed", 0, "Seed of the bootstrap.")
    flags.DEFINE_string("ope_dataset", None, "Also rank every kept checkpoint by fitted Q evaluation on this dataset "
                        "(ope.md, ope.json).")
    flags.DEFINE_string("ope_initial_states", None, "With --ope_dataset: an .npy file of the observations deployments "
                        "start from, where FQE's values are read out (default: the data's trajectory starts).")
    flags.DEFINE_integer("fqe_steps", None, "FQE's gradient updates per checkpoint (default: fqe.num_steps, 20000).")
    flags.DEFINE_integer("fqe_ensemble_size", None, "Q networks of bootstrapped FQE per checkpoint (default: "
                         "fqe.ensemble_size, 1); above 1 the table shows their spread.")
    flags.DEFINE_integer("last_evaluations", 1, "A run's score: the mean of its last K evaluations (OGBench's "
                         "protocol: 3).")


def main(argv: Sequence[str]) -> None:
    if len(argv) != 2:
        raise UserError("give one folder of runs: python -m iql_tf.report ROOT")
    root = pathlib.Path(argv[1])
    if not root.is_dir():
        raise UserError(f"{root}: not a folder; give the --root of a sweep or a folder of run directories")
    if FLAGS.reps <= 0:
        raise UserError(f"--reps={FLAGS.reps} must be positive")
    if FLAGS.last_evaluations <= 0:
        raise UserError(f"--last_evaluations={FLAGS.last_evaluations} must be positive (1: the final evaluation)")
    fqe = None
    overrides = {name: value for name, value in (("num_steps", FLAGS.fqe_steps),
                                                 ("ensemble_size", FLAGS.fqe_ensemble_size)) if value is not None}
    if FLAGS.ope_dataset is not None:
        fqe = FQESettings(**overrides)
    elif overrides:
        flag = "--fqe_steps" if "num_steps" in overrides else "--fqe_ensemble_size"
        raise UserError(f"{flag} without --ope_dataset: give the dataset to estimate the checkpoints on")
    runs = results.collect(root)
    output = pathlib.Path(FLAGS.output_dir) if FLAGS.output_dir else root / "report"
    if fqe is not None:
        _rank(root, output, fqe)
        if not runs:
            return  # runs without an environment: the ranking is the report
    report = results.summarise(runs, FLAGS.reps, FLAGS.seed, FLAGS.last_evaluations)
    output.mkdir(parents=True, exist_ok=True)
    text = results.markdown(report)
    files.write_text(output / "report.md", text)
    files.write_json(output / "report.json", report)
    print(text)
    if FLAGS.plots:
        for path in results.plot(runs, report, output, FLAGS.reps, FLAGS.seed):
            print(f"wrote {path}")


def _rank(root: pathlib.Path, output: pathlib.Path, fqe: FQESettings) -> None:
    """--ope_dataset: every kept checkpoint ranked by FQE, written to ope.md / ope.json."""
    from iql_tf import quiet
    from iql_tf.ope import estimation, ranking

    quiet.quiet_tensorflow()
    starts = None if FLAGS.ope_initial_states is None else estimation.load_initial_states(FLAGS.ope_initial_states)
    report = ranking.rank_checkpoints(root, FLAGS.ope_dataset, fqe, output, starts)
    print(ranking.write(report, output))


def run() -> None:
    """The `iql-report` command."""
    define_flags()
    cli.run(main, sys.modules[__name__])


if __name__ == "__main__":
    run()
