"""Check a dataset before training on it: `python -m iql_tf.validate SOURCE` (or `iql-validate SOURCE`).

SOURCE is a D4RL-style .npz / .hdf5 / .h5 file, a .csv / .parquet table (--columns maps its columns), a
Minari id in the local Minari root, an OGBench single-task name (`ogbench:NAME`, from --ogbench_dir), or a
converted directory. Lists every problem at once (not only the first,
as conversion and training do), each with the field, how many rows it affects and the first of them, then a
summary: transitions, trajectories, terminals and truncations, reward and action ranges, observation
statistics, the evaluation environment, and notes on what to set for training. Exit status 0 when the dataset
is usable, 1 when it has problems (2 for a malformed command).

    python -m iql_tf.validate data/pendulum.npz --env_id=Pendulum-v1
    python -m iql_tf.validate data/robot.npz --action_bounds=-2,2
    python -m iql_tf.validate data/log.csv --columns='{"rewards": "reward", "observations": ["x", "v"]}'
"""

import sys
from typing import Sequence

from absl import flags

from iql_tf import cli, data_flags
from iql_tf.errors import UserError

FLAGS = flags.FLAGS


def define_flags() -> None:
    data_flags.define_source_flags()


def main(argv: Sequence[str]) -> None:
    if len(argv) != 2:
        raise UserError("give one SOURCE: python -m iql_tf.validate FILE_OR_MINARI_ID_OR_DIRECTORY [--env_id=...]")
    from iql_tf import generation
    from iql_tf.data import inspection

    generation.register_generated_datasets()  # so that a generated id not made yet is named as one
    result = inspection.validate(argv[1], **data_flags.source_settings())
    print(inspection.report_text(argv[1], result))
    sys.exit(1 if result["problems"] else 0)


def run() -> None:
    """The `iql-validate` command."""
    define_flags()
    cli.run(main, sys.modules[__name__])


if __name__ == "__main__":
    run()
