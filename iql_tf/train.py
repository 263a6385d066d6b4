"""Train IQL: `python -m iql_tf.train --gin_file=locomotion [--gin_bindings=...] [--workdir=DIR]` (or `iql-train`).

An offline phase of `train.num_offline_steps` updates, then online fine-tuning when `train.num_online_steps`
is set (the *_finetune configs). The run's directory holds TensorBoard events, checkpoints, the
evaluations (eval_results.json) and the exported policy (export/policy). Re-running the same command resumes
the run. Without --workdir the run goes to runs/CONFIG/DATASET/seedN, printed at start. Everything else is
gin: see the packaged configs (--gin_file=quickstart, locomotion, antmaze, kitchen, adroit, ...).
"""

import signal
import sys
from typing import Sequence

from absl import flags, logging

from iql_tf import cli, config, run_files, stopping
from iql_tf.errors import UserError
from iql_tf.settings import AgentSettings, DataSettings, RunSettings

FLAGS = flags.FLAGS


def define_flags() -> None:
    config.define_gin_flags()
    flags.adopt_module_key_flags(config)
    flags.DEFINE_string("workdir", None, "Run directory (default runs/CONFIG/DATASET/seedN); re-use it to resume.")


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise UserError(f"unexpected arguments {list(argv[1:])}: settings go in --gin_file or --gin_bindings")
    config.parse_gin(FLAGS.gin_file, FLAGS.gin_bindings)
    data, agent, run = DataSettings(), AgentSettings(), RunSettings()
    source = data.require_source()
    from iql_tf import quiet, trainer  # TensorFlow: only once the settings hold

    quiet.quiet_tensorflow()
    workdir = FLAGS.workdir or run_files.default_workdir(config.config_name(FLAGS.gin_file), source, run.seeds)
    logging.info("run directory: %s", workdir)
    try:
        trainer.run_training(workdir, data, agent, run)
    except stopping.RunStopped as stopped:
        sys.exit(128 + (stopped.signal_number or signal.SIGTERM))


def run() -> None:
    """The `iql-train` command."""
    define_flags()
    cli.run(main, sys.modules[__name__])


if __name__ == "__main__":
    run()
