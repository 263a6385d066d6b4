"""Expectile sweep (paper Figure 3): final normalised score against tau, several seeds per tau.

  python -m iql_tf.tools.expectile_sweep --gin_file=antmaze \\
      --gin_bindings="make_dataset.source = 'D4RL/antmaze/medium-play-v1'" \\
      --expectiles=0.5,0.7,0.9,0.95 --seeds=0,1,2 --output_dir=runs/expectile_sweep

Each (tau, seed) trains in OUTPUT_DIR/tau-TAU_seed-SEED with the given gin config plus
`IQLAgent.expectile = TAU` and `train.seed = SEED`. Runs one after another; re-running the same
command resumes unfinished runs and reuses finished ones. Writes OUTPUT_DIR/expectile_sweep.csv
(one row per run) and OUTPUT_DIR/expectile_sweep.png (mean and std over seeds, and every run).
"""

import csv
import os
import sys
import re
from typing import Dict, List, Sequence

import gin
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from absl import flags, logging  # noqa: E402

from iql_tf import config, logs  # noqa: E402
from iql_tf import cli  # noqa: E402
from iql_tf.errors import UserError  # noqa: E402
from iql_tf.files import atomic_file  # noqa: E402
from iql_tf.trainer import run_training  # noqa: E402
import iql_tf.generation  # noqa: E402,F401  (generated dataset ids)

FLAGS = flags.FLAGS
CSV_FILE = "expectile_sweep.csv"
PNG_FILE = "expectile_sweep.png"
# The final evaluation's headline, in order of preference: success where the env reports it (for
# AntMaze the paper's score is 100 x success, whatever Minari's eval env makes of the return).
SCORE_KEYS = ("success_rate", "normalized_score", "return_mean")
# Bindings the sweep sets itself for each run.
SWEPT = re.compile(r"\s*(IQLAgent\.expectile|train\.seed)\s*=")


def parse_values(text: Sequence[str], kind, flag: str) -> list:
    try:
        values = [kind(value) for value in text]
    except ValueError as error:
        raise UserError(f"--{flag}: {error}; give a comma-separated list") from error
    if not values:
        raise UserError(f"--{flag} is empty; give a comma-separated list")
    return values


def run_sweep(gin_files: Sequence[str], gin_bindings: Sequence[str], expectiles: Sequence[float],
              seeds: Sequence[int], output_dir: str) -> List[Dict[str, float]]:
    """Trains every (expectile, seed) run and returns one row of final results per run."""
    for expectile in expectiles:
        if not 0.0 < expectile < 1.0:
            raise UserError(f"expectile {expectile} is outside (0, 1)")
    for binding in gin_bindings:
        if SWEPT.match(binding):
            raise UserError(f"--gin_bindings {binding!r}: the sweep sets IQLAgent.expectile and train.seed itself; "
                            "use --expectiles and --seeds")
    rows = []
    for expectile in expectiles:
        for seed in seeds:
            workdir = os.path.join(output_dir, f"tau-{expectile:g}_seed-{seed}")
            logging.info("expectile %g, seed %d: %s", expectile, seed, workdir)
            gin.clear_config()
            config.parse_gin(gin_files, list(gin_bindings) + [f"IQLAgent.expectile = {expectile}",
                                                              f"train.seed = {seed}"])
            os.makedirs(workdir, exist_ok=True)
            results = run_training(workdir)[0]
            score_key = next((key for key in SCORE_KEYS if key in results), None)
            if score_key is None:
                raise UserError(f"{workdir}: the run has no evaluation; the sweep needs train.eval_episodes > 0")
            rows.append({"expectile": expectile, "seed": seed, "score": results[score_key], "score_kind": score_key})
    write_csv(rows, os.path.join(output_dir, CSV_FILE))
    plot(rows, os.path.join(output_dir, PNG_FILE))
    return rows


def write_csv(rows: List[Dict[str, float]], path: str) -> None:
    with atomic_file(path) as temporary, open(temporary, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def plot(rows: List[Dict[str, float]], path: str) -> None:
    """Mean and std of the final score per expectile, with each seed's run as a dot."""
    expectiles = sorted({row["expectile"] for row in rows})
    scores = [[row["score"] for row in rows if row["expectile"] == tau] for tau in expectiles]
    means = np.array([np.mean(s) for s in scores])
    stds = np.array([np.std(s) for s in scores])
    figure, axis = plt.subplots(figsize=(5, 3.5))
    axis.plot(expectiles, means, "o-", color="tab:blue", label="mean over seeds")
    axis.fill_between(expectiles, means - stds, means + stds, color="tab:blue", alpha=0.2, label="± std")
    axis.scatter([row["expectile"] for row in rows], [row["score"] for row in rows], color="black", s=8,
                 label="runs", zorder=3)
    axis.set_xlabel("expectile τ")
    axis.set_ylabel(rows[0]["score_kind"].replace("_", " "))
    axis.set_title("Final score against the expectile")
    axis.legend(fontsize="small")
    figure.tight_layout()
    with atomic_file(path) as temporary:
        figure.savefig(temporary, format="png", dpi=120)
    plt.close(figure)


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise UserError(f"unexpected arguments {list(argv[1:])}")
    if not FLAGS.gin_file:
        raise UserError("--gin_file is required, e.g. --gin_file=quickstart")
    expectiles = parse_values(FLAGS.expectiles, float, "expectiles")
    seeds = parse_values(FLAGS.seeds, int, "seeds")
    try:
        os.makedirs(FLAGS.output_dir, exist_ok=True)
    except OSError as error:
        raise UserError(f"--output_dir {FLAGS.output_dir}: {error.strerror}; choose a writable folder") from error
    logs.quiet_tensorflow()
    rows = run_sweep(FLAGS.gin_file, FLAGS.gin_bindings, expectiles, seeds, FLAGS.output_dir)
    print(f"{'expectile':>9} {'seed':>5} {rows[0]['score_kind']:>18}")
    for row in rows:
        print(f"{row['expectile']:>9g} {row['seed']:>5} {row['score']:>18.1f}")
    print(f"wrote {os.path.join(FLAGS.output_dir, CSV_FILE)} and {os.path.join(FLAGS.output_dir, PNG_FILE)}")


if __name__ == "__main__":
    config.define_gin_flags()
    flags.DEFINE_list("expectiles", ["0.5", "0.7", "0.9", "0.95"], "Expectiles tau to train with.")
    flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds per expectile.")
    flags.DEFINE_string("output_dir", "runs/expectile_sweep", "Where the runs, the CSV and the PNG go.")
    cli.run(main, sys.modules[__name__])
