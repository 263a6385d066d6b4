"""Convert a dataset to TFRecord shards: `python -m iql_tf.convert --source=... --output=DIR` (or
`iql-convert`).

    python -m iql_tf.convert --source=D4RL/antmaze/umaze-v1 --output=data/antmaze-umaze
    python -m iql_tf.convert --source=hopper.npz --output=data/hopper --env_id=Hopper-v5
    python -m iql_tf.convert --source=pendulum.npz --output=data/pendulum --action_bounds=-2,2
    python -m iql_tf.convert --source=ogbench:cube-single-play-singletask-task2-v0 --output=data/cube-single-task2

--source is a Minari id (the local Minari root; --download to fetch it), a D4RL-style .hdf5 / .h5 / .npz
file, a .csv / .parquet table (--columns maps its columns; docs/data.md), or an OGBench single-task name
(`ogbench:NAME`, read from --ogbench_dir). The output is written beside --output and renamed into place when complete, so a failed or
interrupted conversion leaves nothing there. Training converts sources itself (into a cache); convert by
hand to keep the shards somewhere of your choosing.
"""

import sys
from typing import Optional, Sequence, Tuple

from absl import flags

from iql_tf import cli
from iql_tf.errors import UserError

FLAGS = flags.FLAGS


def define_flags() -> None:
    flags.DEFINE_string("source", None, "Minari dataset id, or path to a D4RL-style .hdf5/.h5 / .npz file or a "
                        ".csv / .parquet table.")
    flags.DEFINE_string("output", None, "Directory to create with the shards and metadata.json.")
    flags.DEFINE_integer("shard_size", None, "Transitions per TFRecord file (default 262144: a million transitions "
                         "read as 4 files in parallel).")
    flags.DEFINE_bool("download", False, "Allow Minari (or OGBench) to download a dataset that is not local.")
    flags.DEFINE_string("ogbench_dir", None, "ogbench:NAME sources: the folder of OGBench's files (default "
                        "~/.ogbench/data).")
    flags.DEFINE_string("env_id", None, "Evaluation env id to record (npz/HDF5 carry none; overrides Minari's).")
    flags.DEFINE_string("env_kwargs", "{}", "JSON object of kwargs for --env_id.")
    flags.DEFINE_string("action_bounds", None, "LOW,HIGH of the actions of a file that names no environment "
                        "(default -1,1).")
    flags.DEFINE_string("columns", None, "JSON object: which columns of a .csv / .parquet table hold each field, "
                        "e.g. '{\"rewards\": \"reward\"}' (make_dataset.columns).")
    flags.mark_flags_as_required(["source", "output"])


def parse_action_bounds(text: Optional[str]) -> Optional[Tuple[float, float]]:
    """--action_bounds=LOW,HIGH."""
    if not text:
        return None
    try:
        low, high = (float(value) for value in text.split(","))
    except ValueError as error:
        raise UserError(f"--action_bounds={text!r}: expected LOW,HIGH, e.g. --action_bounds=-2,2") from error
    return low, high


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise UserError(f"unexpected arguments {list(argv[1:])}; use --source=... --output=...")
    from iql_tf import envs, generation
    from iql_tf.data import conversion, sources
    from iql_tf.validate import parse_columns

    generation.register_generated_datasets()  # the project's own ids convert too (generated when missing)

    conversion.convert(
        sources.resolve(FLAGS.source, FLAGS.download, generate=True, columns=parse_columns(FLAGS.columns),
                        ogbench_dir=FLAGS.ogbench_dir),
        FLAGS.output,
        **({"shard_size": FLAGS.shard_size} if FLAGS.shard_size is not None else {}),
        env_id=FLAGS.env_id,
        env_kwargs=envs.parse_env_kwargs(FLAGS.env_kwargs),
        action_bounds=parse_action_bounds(FLAGS.action_bounds),
    )


def run() -> None:
    """The `iql-convert` command."""
    define_flags()
    cli.run(main, sys.modules[__name__])


if __name__ == "__main__":
    run()
