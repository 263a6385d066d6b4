"""Train IQL: `python -m iql_tf.train --gin_file=locomotion [--gin_bindings=...] [--workdir=DIR]` (or `iql-train`).

An offline phase of `train.num_offline_steps` updates, then online fine-tuning when `train.num_online_steps`
is set (the *_finetune configs). The run's directory holds TensorBoard events, checkpoints, the
evaluations (eval_results.json) and the exported policy (export/policy). Re-running the same command resumes
the run. Without --workdir the run goes to runs/CONFIG/DATASET/seedN, printed at start. Everything else is
gin: see the packaged configs (--gin_file=quickstart, locomotion, antmaze, kitchen, adroit, ...).
"""

import pathlib
import re
import signal
import sys
from typing import Sequence

from absl import flags, logging

from iql_tf import cli, config
from iql_tf.errors import UserError
from iql_tf.settings import AgentSettings, DataSettings, RunSettings

FLAGS = flags.FLAGS


def define_flags() -> None:
    config.define_gin_flags()
    flags.adopt_module_key_flags(config)
    flags.DEFINE_string("workdir", None, "Run directory (default runs/CONFIG/DATASET/seedN); re-use it to resume.")


def default_workdir(gin_files: Sequence[str], data: DataSettings, run: RunSettings) -> str:
    """runs/CONFIG/DATASET/seedN: the same command names the same run, so re-running it resumes."""
    source = data.require_source()
    dataset = re.sub(r"[^A-Za-z0-9._-]+", "_", pathlib.Path(source).stem if pathlib.Path(source).suffix else source)
    seeds = run.seeds
    name = f"seed{seeds[0]}" if len(seeds) == 1 else f"seeds{seeds[0]}-{seeds[-1]}"
    return str(pathlib.Path("runs") / config.config_name(gin_files) / dataset / name)


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise UserError(f"unexpected arguments {list(argv[1:])}: settings go in --gin_file or --gin_bindings")
    config.parse_gin(FLAGS.gin_file, FLAGS.gin_bindings)
    data, agent, run = DataSettings(), AgentSettings(), RunSettings()
    data.require_source()
    from iql_tf import quiet, trainer  # TensorFlow: only once the settings hold

    quiet.quiet_tensorflow()
    workdir = FLAGS.workdir or default_workdir(FLAGS.gin_file, data, run)
    logging.info("run directory: %s", workdir)
    try:
        trainer.run_training(workdir, data, agent, run)
    except trainer.RunStopped as stopped:
        sys.exit(128 + (stopped.signal_number or signal.SIGTERM))


def run() -> None:
    """The `iql-train` command."""
    define_flags()
    cli.run(main, sys.modules[__name__])


if __name__ == "__main__":
    run()
