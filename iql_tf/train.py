"""Train IQL: `python -m iql_tf.train --gin_file=locomotion [--gin_bindings=...] [--workdir=DIR]` (or `iql-train`).

An offline phase of `train.num_offline_steps` updates, then online fine-tuning when `train.num_online_steps`
is set (the *_finetune configs). The run's directory holds TensorBoard events (tb/), checkpoints, the
evaluations (eval_results.json) and the exported policy (export/policy). Re-running the same command resumes
the run. Without --workdir the run goes to runs/CONFIG/DATASET/seedN, printed at start. Everything else is
gin: see the packaged configs (--gin_file=quickstart, locomotion, antmaze, kitchen, adroit, ...).
"""

import pathlib
import re
import signal
import sys
from typing import Sequence

import gin
from absl import flags, logging

from iql_tf import cli, config
from iql_tf.errors import UserError

FLAGS = flags.FLAGS


def define_flags() -> None:
    config.define_gin_flags()
    flags.adopt_module_key_flags(config)
    flags.DEFINE_string("workdir", None, "Run directory (default runs/CONFIG/DATASET/seedN); re-use it to resume.")


def default_workdir(gin_files: Sequence[str]) -> str:
    """runs/CONFIG/DATASET/seedN: the same command names the same run, so re-running it resumes."""
    source = gin.query_parameter("make_dataset.source")
    dataset = re.sub(r"[^A-Za-z0-9._-]+", "_", pathlib.Path(source).stem if pathlib.Path(source).suffix else source)
    seed = gin.query_parameter("train.seed") if _bound("train.seed") else 0
    seeds = gin.query_parameter("train.num_seeds") if _bound("train.num_seeds") else 1
    name = f"seed{seed}" if seeds == 1 else f"seeds{seed}-{seed + seeds - 1}"
    return str(pathlib.Path("runs") / config.config_name(gin_files) / dataset / name)


def _bound(name: str) -> bool:
    try:
        gin.query_parameter(name)
    except ValueError:
        return False
    return True


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise UserError(f"unexpected arguments {list(argv[1:])}: settings go in --gin_file or --gin_bindings")
    from iql_tf import quiet, trainer
    import iql_tf.generation  # noqa: F401  (the project's own dataset ids, generated when missing)

    quiet.quiet_tensorflow()
    config.parse_gin(FLAGS.gin_file, FLAGS.gin_bindings)
    workdir = FLAGS.workdir
    if not workdir:
        if not _bound("make_dataset.source"):
            raise UserError("no dataset: give a --gin_file (e.g. --gin_file=quickstart) or bind "
                                "make_dataset.source")
        workdir = default_workdir(FLAGS.gin_file)
    logging.info("run directory: %s", workdir)
    try:
        trainer.run_training(workdir)
    except trainer.RunStopped as stopped:
        sys.exit(128 + (stopped.signal_number or signal.SIGTERM))


def run() -> None:
    """The `iql-train` command."""
    define_flags()
    cli.run(main, sys.modules[__name__])


if __name__ == "__main__":
    run()
