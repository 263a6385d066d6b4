"""Convert a dataset to TFRecord shards: `python -m iql_tf.convert --source=... --output=DIR` (or
`iql-convert`).

    python -m iql_tf.convert --source=D4RL/antmaze/umaze-v1 --output=data/antmaze-umaze
    python -m iql_tf.convert --source=hopper.npz --output=data/hopper --env_id=Hopper-v5
    python -m iql_tf.convert --source=pendulum.npz --output=data/pendulum --action_bounds=-2,2
    python -m iql_tf.convert --source=ogbench:cube-single-play-singletask-task2-v0 --output=data/cube-single-task2
    python -m iql_tf.convert --source=logs/robot.npz --output=data/robot --validation_fraction=0.1

--source is a Minari id (the local Minari root; --download to fetch it), a D4RL-style .hdf5 / .h5 / .npz
file, a .csv / .parquet table (--columns maps its columns; docs/data.md), an OGBench single-task name
(`ogbench:NAME`, read from --ogbench_dir), an RLDS dataset folder (`rlds:DIR`) or a TFDS dataset
(`tfds:NAME/CONFIG:VERSION`, read from --tfds_data_dir; --observation_keys, --action_keys and --rlds_final_step
say how its steps are read). The output is written beside --output and renamed into place when complete, so a failed or
interrupted conversion leaves nothing there. Training converts sources itself (into a cache); convert by
hand to keep the shards somewhere of your choosing.
"""

import sys
from typing import Sequence

from absl import flags

from iql_tf import cli, data_flags
from iql_tf.errors import UserError

FLAGS = flags.FLAGS


def define_flags() -> None:
    flags.DEFINE_string("source", None, "Minari dataset id, or path to a D4RL-style .hdf5/.h5 / .npz file or a "
                        ".csv / .parquet table.")
    flags.DEFINE_string("output", None, "Directory to create with the shards and metadata.json.")
    flags.DEFINE_integer("shard_size", None, "Transitions per TFRecord file (default 262144: a million transitions "
                         "read as 4 files in parallel).")
    flags.DEFINE_float("validation_fraction", 0.0, "Hold out this fraction of the trajectories in OUTPUT/validation "
                       "(an OGBench source: its own -val split), for make_dataset.validation_fraction.")
    data_flags.define_source_flags()
    flags.mark_flags_as_required(["source", "output"])


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise UserError(f"unexpected arguments {list(argv[1:])}; use --source=... --output=...")
    from iql_tf import generation
    from iql_tf.data import conversion, sources

    if not 0.0 <= FLAGS.validation_fraction < 1.0:
        raise UserError(f"--validation_fraction={FLAGS.validation_fraction}: must be in [0, 1) (0: no held-out split)")

    generation.register_generated_datasets()  # the project's own ids convert too (generated when missing)
    settings = data_flags.source_settings()
    source = sources.resolve(FLAGS.source, settings["download"], generate=True, columns=settings["columns"],
                             ogbench_dir=settings["ogbench_dir"], tfds_data_dir=settings["tfds_data_dir"],
                             rlds_options=settings["rlds_options"])
    conversion.convert(source, FLAGS.output,
                       **({"shard_size": FLAGS.shard_size} if FLAGS.shard_size is not None else {}),
                       env_id=settings["env_id"], env_kwargs=settings["env_kwargs"],
                       action_bounds=settings["action_bounds"], validation_fraction=FLAGS.validation_fraction)


def run() -> None:
    """The `iql-convert` command."""
    define_flags()
    cli.run(main, sys.modules[__name__])


if __name__ == "__main__":
    run()
