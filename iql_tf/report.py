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

FLAGS = flags.FLAGS


def define_flags() -> None:
    flags.DEFINE_string("output_dir", None, "Where the report goes (default ROOT/report).")
    flags.DEFINE_bool("plots", True, "Also draw curves.png and aggregate.png (--noplots: tables only).")
    flags.DEFINE_integer("reps", 2000, "Bootstrap replications of each confidence interval.")
    flags.DEFINE_integer("seed", 0, "Seed of the bootstrap.")
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
    runs = results.collect(root)
    if FLAGS.last_evaluations <= 0:
        raise UserError(f"--last_evaluations={FLAGS.last_evaluations} must be positive (1: the final evaluation)")
    report = results.summarise(runs, FLAGS.reps, FLAGS.seed, FLAGS.last_evaluations)
    output = pathlib.Path(FLAGS.output_dir) if FLAGS.output_dir else root / "report"
    output.mkdir(parents=True, exist_ok=True)
    text = results.markdown(report)
    files.write_text(output / "report.md", text)
    files.write_json(output / "report.json", report)
    print(text)
    if FLAGS.plots:
        for path in results.plot(runs, report, output, FLAGS.reps, FLAGS.seed):
            print(f"wrote {path}")


def run() -> None:
    """The `iql-report` command."""
    define_flags()
    cli.run(main, sys.modules[__name__])


if __name__ == "__main__":
    run()
