"""Converter: a Minari dataset, D4RL-style HDF5 or npz -> `DIR/shard-*.tfrecord` + `DIR/metadata.json`.

    python -m iql_tf.data.convert --source=D4RL/antmaze/umaze-v1 --output=data/antmaze-umaze
    python -m iql_tf.data.convert --source=hopper.npz --output=data/hopper --env_id=Hopper-v5

The output is written to a temporary sibling folder and renamed into place when complete, so a failed or
interrupted conversion leaves nothing at --output.
"""

import pathlib
import shutil
import tempfile
from typing import Any, Mapping, Optional, Sequence

from absl import app, flags, logging

from iql_tf.data import checksums, generate, shards, sources
from iql_tf.data.metadata import METADATA_FILE, DatasetMetadata, write_metadata
from iql_tf.errors import UserError, run_main


def convert(
    source: str,
    output: "str | pathlib.Path",
    shard_size: int = shards.DEFAULT_SHARD_SIZE,
    download: bool = False,
    env_id: Optional[str] = None,
    env_kwargs: Optional[Mapping[str, Any]] = None,
) -> DatasetMetadata:
    """Validates `source` and writes it as a converted dataset at `output` (which must not exist yet).

    `env_id`/`env_kwargs` record the evaluation environment; npz/HDF5 files carry none, Minari datasets
    their own (overridden when given).
    """
    output = pathlib.Path(output).expanduser()
    if output.exists() and not (output.is_dir() and not any(output.iterdir())):
        raise UserError(f"{output}: already exists; choose a new --output or delete it first")
    if (pathlib.Path(source).expanduser() / METADATA_FILE).is_file():
        raise UserError(f"{source}: is already converted; pass it to make_dataset (or load_converted) directly")
    if shard_size <= 0:
        raise UserError(f"shard_size must be positive, got {shard_size}")
    generate.generate_if_missing(source)
    files = sources.source_files(source, download)
    data = sources.read_source(source, download, env_id, env_kwargs)
    partial = _partial_directory(output)
    try:
        metadata = DatasetMetadata(
            source=source,
            source_checksum=checksums.combined_sha256(files),
            env_id=data.env_id,
            env_kwargs=data.env_kwargs,
            max_episode_steps=data.max_episode_steps,
            observation_keys=data.observation_keys,
            observation_shape=list(data.transitions["observations"].shape[1:]),
            action_shape=list(data.transitions["actions"].shape[1:]),
            observation_low=data.observation_low.tolist(),
            observation_high=data.observation_high.tolist(),
            action_low=data.action_low.tolist(),
            action_high=data.action_high.tolist(),
            num_transitions=len(data.transitions["rewards"]),
            num_episodes=data.num_episodes,
            ref_min_score=data.ref_min_score,
            ref_max_score=data.ref_max_score,
            shards=shards.write_shards(data.transitions, partial, shard_size),
        )
        write_metadata(partial, metadata)
        try:
            partial.rename(output)  # replaces an empty directory, fails on anything else
        except OSError as error:
            raise UserError(f"{output}: was filled by another process during the conversion ({error})") from error
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    logging.info("%s", summary(metadata, output))
    return metadata


def _partial_directory(output: pathlib.Path) -> pathlib.Path:
    """A new hidden sibling of `output` to write into; an output whose folder cannot be made is a UserError."""
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        partial = pathlib.Path(tempfile.mkdtemp(prefix=f".{output.name}.partial-", dir=output.parent))
        partial.chmod(0o755)  # mkdtemp's 0o700 would follow the rename
    except OSError as error:
        raise UserError(
            f"{output}: cannot create it in {output.parent} ({error.strerror or error}); choose an --output "
            "(make_dataset.cache_dir when training) in a writable folder"
        ) from error
    return partial


def summary(metadata: DatasetMetadata, output: pathlib.Path) -> str:
    """One paragraph for the log: counts, shapes, environment, reference scores."""
    keys = f" (flattened {', '.join(metadata.observation_keys)})" if metadata.observation_keys else ""
    return (
        f"converted {metadata.source} -> {output}: {metadata.num_transitions} transitions in "
        f"{metadata.num_episodes} trajectories, {len(metadata.shards)} shard(s); observations "
        f"{metadata.observation_shape}{keys}, actions {metadata.action_shape}; evaluation env "
        f"{metadata.env_id or 'unknown (pass --env_id)'} {metadata.env_kwargs or ''} "
        f"max_episode_steps={metadata.max_episode_steps}; ref_min_score={metadata.ref_min_score}, "
        f"ref_max_score={metadata.ref_max_score}; source sha256 {metadata.source_checksum[:16]}..."
    )


FLAGS = flags.FLAGS


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise UserError(f"unexpected arguments {list(argv[1:])}; use --source=... --output=...")
    convert(
        FLAGS.source,
        FLAGS.output,
        shard_size=FLAGS.shard_size,
        download=FLAGS.download,
        env_id=FLAGS.env_id,
        env_kwargs=sources.parse_env_kwargs(FLAGS.env_kwargs),
    )


if __name__ == "__main__":
    flags.DEFINE_string("source", None, "Minari dataset id, or path to a D4RL-style .hdf5/.h5 or .npz file.")
    flags.DEFINE_string("output", None, "Directory to create with the shards and metadata.json.")
    flags.DEFINE_integer("shard_size", shards.DEFAULT_SHARD_SIZE, "Transitions per TFRecord file.")
    flags.DEFINE_bool("download", False, "Allow Minari to download a dataset that is not local.")
    flags.DEFINE_string("env_id", None, "Evaluation env id to record (npz/HDF5 carry none; overrides Minari's).")
    flags.DEFINE_string("env_kwargs", "{}", "JSON object of kwargs for --env_id.")
    flags.mark_flags_as_required(["source", "output"])
    app.run(run_main(main))
