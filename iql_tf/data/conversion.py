"""Conversion: a resolved source of any kind that `sources.read` reads (a D4RL-style .npz / .hdf5 file, a .csv /
.parquet table, an in-memory source, a Minari dataset, an OGBench task) -> `DIR/shard-*.tfrecord` +
`DIR/metadata.json` (the command line is `iql_tf.convert`).

The output is written to a hidden staging folder beside it and renamed into place when complete, so a failed
or interrupted conversion leaves nothing at the output.
"""

import contextlib
import dataclasses
import pathlib
from typing import Any, Iterator, Mapping, Optional, Sequence, Tuple

import numpy as np

from absl import logging

from iql_tf import files, json_records
from iql_tf.data import parts, rlds_source, shards, sources, statistics, transitions, validation
from iql_tf.data.transitions import Transitions
from iql_tf.data.metadata import PARTS, DatasetMetadata, write_metadata
from iql_tf.errors import UserError

VALIDATION = "validation"  # the held-out split's folder inside a converted directory


def convert(
    source: sources.Source,
    output: "str | pathlib.Path",
    shard_size: int = shards.DEFAULT_SHARD_SIZE,
    env_id: Optional[str] = None,
    env_kwargs: Optional[Mapping[str, Any]] = None,
    action_bounds: Optional[Tuple[Sequence[float], Sequence[float]]] = None,
    validation_fraction: float = 0.0,
) -> DatasetMetadata:
    """Validates a resolved source (any kind but a converted directory) and writes it as a converted dataset at
    `output` (which must not exist yet, or be empty).

    `env_id`/`env_kwargs` record the evaluation environment (files, tables and arrays carry none, Minari
    datasets and OGBench tasks their own, overridden when given); `action_bounds` the action space of data that
    names no environment. With `validation_fraction` > 0 a held-out split goes to `output/validation`, itself
    a converted dataset: the source's own (OGBench's -val file) where it has one, else that fraction of the
    trajectories, drawn with a fixed seed (`transitions.hold_out_trajectories`); the statistics at `output` are
    then those of the training part alone.
    """
    output = pathlib.Path(output).expanduser()
    if source.kind == sources.CONVERTED:
        raise UserError(f"{source.name}: is already converted; pass it to make_dataset (or load_converted) directly")
    if output.exists() and not (output.is_dir() and not any(output.iterdir())):
        raise UserError(f"{output}: already exists; choose a new --output or delete it first")
    if shard_size <= 0:
        raise UserError(f"shard_size must be positive, got {shard_size}")
    report = validation.Report()
    data = sources.read(source, report, env_id, env_kwargs, action_bounds)
    report.raise_first(source.name)
    held_out = None
    if validation_fraction > 0:
        if data.validation is not None:
            held_out = data.validation
            logging.info("%s: its own validation split (%d transitions) is the held-out data", source.name,
                         len(held_out["rewards"]))
        else:
            kept, held_out = transitions.hold_out_trajectories(data.transitions, validation_fraction, source.name)
            data = dataclasses.replace(data, transitions=kept)
    with _staged(output, "conversion") as staging:
        checksum = sources.checksum(source)
        metadata = _write(data, data.transitions, source.name, checksum, staging, shard_size)
        if held_out is not None:
            (staging / VALIDATION).mkdir()
            _write(data, held_out, f"{source.name} (held out)", checksum, staging / VALIDATION, shard_size)
    logging.info("%s", summary(metadata, output))
    return metadata


@contextlib.contextmanager
def _staged(output: pathlib.Path, what: str) -> Iterator[pathlib.Path]:
    """A staging folder beside `output`, renamed into place when the block completes (what a killed `what`
    left beside it swept first); a folder that cannot be written, or is filled meanwhile, is one line."""
    try:
        output.parent.mkdir(parents=True, exist_ok=True)  # (a file in its place is FileExistsError too)
    except OSError as error:
        raise _unwritable(output, error) from error
    files.sweep_stale_staging(output.parent)
    try:
        with files.atomic_directory(output) as staging:
            yield staging
    except FileExistsError as error:
        raise UserError(f"{output}: was filled by another process during the {what} ({error})") from error
    except OSError as error:
        raise _unwritable(output, error) from error


def describe_stream(source: sources.Source, output: "str | pathlib.Path", env_id: Optional[str] = None,
                    env_kwargs: Optional[Mapping[str, Any]] = None,
                    action_bounds: Optional[Tuple[Sequence[float], Sequence[float]]] = None) -> DatasetMetadata:
    """An RLDS source to be streamed as it is (never copied into shards): read once, checked as `convert`
    checks it, and described at `output/metadata.json` with its statistics and where to stream it from
    (`metadata.stream_of`), written as `convert` writes (nothing at `output` unless complete)."""
    output = pathlib.Path(output).expanduser()
    report = validation.Report()
    layout = rlds_source.Layout.of(source.name, source.builder, source.rlds_options)
    data, gathered = sources.read_streamed(source, layout, report, env_id, env_kwargs, action_bounds)
    report.raise_first(source.name)
    checksum = sources.checksum(source)
    stream_of = dict(layout.record(), builder_dir=str(source.builder.data_dir), split=source.rlds_options.split)
    metadata = _described(data, source.name, checksum, [], dict(
        gathered.statistics(), shards_bytes=rlds_source.split_bytes(source.builder, source.rlds_options)),
        gathered.num_transitions, gathered.num_episodes, json_records.sha256_of([checksum, stream_of]), stream_of)
    with _staged(output, "scan") as staging:
        write_metadata(staging, metadata)
    logging.info("%s", summary(metadata, output))
    return metadata


def _write(data: sources.SourceData, rows: Transitions, name: str, checksum: str, folder: pathlib.Path,
           shard_size: int) -> DatasetMetadata:
    """`rows` (the source's `data`, or a part of it) as shards and metadata.json in `folder`."""
    written = shards.write_shards(rows, folder, shard_size)
    metadata = _described(data, name, checksum, written, dict(
        statistics.of(rows), shards_bytes=sum((folder / shard.file).stat().st_size for shard in written)),
        len(rows["rewards"]), int(rows["dones"].sum()), transitions.content_sha256(rows))
    write_metadata(folder, metadata)
    return metadata


def _described(data: sources.SourceData, name: str, checksum: str, written: Sequence[Any],
               figures: Mapping[str, Any], num_transitions: int, num_episodes: int, content_sha256: str,
               stream_of: Optional[Mapping[str, Any]] = None) -> DatasetMetadata:
    """The metadata of `data`'s transitions (held, or streamed: `stream_of`), from the figures gathered."""
    rows = data.transitions
    observations = rows["observations"]
    held_parts = parts.describe(observations) if parts.is_parts(observations) else None
    return DatasetMetadata(
        source=name,
        source_checksum=checksum,
        env_id=data.env_id,
        env_kwargs=data.env_kwargs,
        max_episode_steps=data.max_episode_steps,
        observation_keys=data.observation_keys,
        observation_shape=[] if held_parts else list(observations.shape[1:]),
        action_shape=list(rows["actions"].shape[1:]),
        observation_low=data.observation_low.tolist(),
        observation_high=data.observation_high.tolist(),
        action_low=data.action_low.tolist(),
        action_high=data.action_high.tolist(),
        num_transitions=num_transitions,
        num_episodes=num_episodes,
        ref_min_score=data.ref_min_score,
        ref_max_score=data.ref_max_score,
        shards=list(written),
        statistics=dict(figures),
        content_sha256=content_sha256,
        stream_of=dict(stream_of) if stream_of is not None else None,
        observation_dtype=PARTS if held_parts else str(observations.dtype),
        observation_parts=[part.record() for part in held_parts] if held_parts else None,
    )


def _unwritable(output: pathlib.Path, error: OSError) -> UserError:
    return UserError(f"{output}: cannot create it in {output.parent} ({error.strerror or error}); choose an --output "
                     "(make_dataset.cache_dir when training) in a writable folder")


def summary(metadata: DatasetMetadata, output: pathlib.Path) -> str:
    """One paragraph for the log: counts, shapes, environment, reference scores."""
    keys = f" (flattened {', '.join(metadata.observation_keys)})" if metadata.observation_keys else ""
    observations = f"{metadata.observation_shape}{keys}"
    if metadata.parts:
        observations = "of parts " + ", ".join(f"{part.name} {list(part.shape)} {part.dtype}" for part in metadata.parts)
    return (
        f"converted {metadata.source} -> {output}: {metadata.num_transitions} transitions in "
        f"{metadata.num_episodes} trajectories, {len(metadata.shards)} shard(s); observations "
        f"{observations}, actions {metadata.action_shape} in "
        f"{validation.format_bounds(np.asarray(metadata.action_low), np.asarray(metadata.action_high))}"
        f"; evaluation env {metadata.env_id or 'unknown (pass --env_id)'} {metadata.env_kwargs or ''} "
        f"max_episode_steps={metadata.max_episode_steps}; ref_min_score={metadata.ref_min_score}, "
        f"ref_max_score={metadata.ref_max_score}; source sha256 {metadata.source_checksum[:16]}..."
    )
