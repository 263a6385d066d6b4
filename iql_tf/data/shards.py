"""The TFRecord layout of a converted dataset: writing shards and reading them back into whole tensors.

`DIR/shard-XXXXX-of-YYYYY.tfrecord` holds records of `BLOCK_SIZE` consecutive transitions each: a
tf.train.Example with one bytes feature per transition key (`tf.io.serialize_tensor` of a float32 block)
and the int64 features `block` (global position of the block) and `shard`. Big records make reading a few
large sequential reads; `block` restores the order after a parallel read, which trajectory splitting needs.
Image observations are uint8 blocks of fewer rows (`block_rows`), stored raw (docs/data.md says why not PNG), each
frame once: a row's next frame is the following row's frame, so a block of images holds, instead of its next
observations, only `end_frames`, the next frames of its rows that end a trajectory and of its last row; reading
rebuilds the next observations block by block (`_next_frames`). (Format 6 image shards, from before, hold them
whole and are still read.) Observations of parts (`parts.py`) are stored part by part, as the features
`observations/NAME` and `end_frames/NAME`, each part held once as a frame is.
"""

import pathlib
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import tensorflow as tf

from iql_tf.data import checksums, parts, storage
from iql_tf.data.metadata import DatasetMetadata, ShardInfo
from iql_tf.data.transitions import TRANSITION_KEYS, Transitions, holds_frames, rows_of
from iql_tf.errors import UserError, first_line

BLOCK_SIZE = 65536  # transitions per record: 7 MB for hopper, a few dozen records per million transitions
DEFAULT_SHARD_SIZE = 262144  # transitions per file: a 1M dataset reads as 4 files in parallel
SHARD_GLOB = "shard-*-of-*.tfrecord"
# A block of image rows as read back (frames and next frames: about half of it stored, each frame once): about as
# many bytes as a block of hopper's rows.
IMAGE_BLOCK_BYTES = 8 * 2**20
OBSERVATION_KEYS = ("observations", "next_observations")
END_FRAMES = "end_frames"  # a block of images: the next frames of its rows that end a trajectory, and of its last
NEXT_FRAME = "next_frame"  # read whole without rebuilding: each row's next frame, indexed into the frames then
                           # the end frames (`read_shards`)

_POSITION = {"block": tf.io.FixedLenFeature([], tf.int64), "shard": tf.io.FixedLenFeature([], tf.int64)}
_STORED = [key for key in TRANSITION_KEYS if key != "next_observations"] + [END_FRAMES]  # a block of images'


def shard_name(index: int, count: int) -> str:
    return f"shard-{index:05d}-of-{count:05d}.tfrecord"


def write_shards(data: Transitions, directory: pathlib.Path, shard_size: int) -> List[ShardInfo]:
    """Writes the transitions as shards of `shard_size` transitions (images: up to the end of the trajectory
    running at that size, so that each shard starts a trajectory, as frame stacks of a stream need); returns
    their descriptions."""
    total = len(data["rewards"])
    bounds = list(range(0, total, shard_size)) + [total]
    if holds_frames(data["observations"]):
        starts = np.append(np.flatnonzero(np.asarray(data["dones"])[:-1]) + 1, total)  # where trajectories start
        bounds = [0]
        while bounds[-1] < total:
            bounds.append(int(starts[np.searchsorted(starts, bounds[-1] + shard_size)]) if bounds[-1] + shard_size
                          < total else total)
    count = len(bounds) - 1
    rows = block_rows(data)
    block = 0
    names, sizes = [], []
    for index in range(count):
        start, stop = bounds[index], bounds[index + 1]
        names.append(shard_name(index, count))
        sizes.append(stop - start)
        with tf.io.TFRecordWriter(str(directory / names[-1])) as writer:
            for first in range(start, stop, rows):
                writer.write(_encode(data, first, min(stop, first + rows), block, index))
                block += 1
    digests = checksums.files_sha256([directory / name for name in names])
    return [ShardInfo(name, size, digest) for name, size, digest in zip(names, sizes, digests)]


def block_rows(data: Transitions) -> int:
    """Rows per record: BLOCK_SIZE, or for images as many as fit in IMAGE_BLOCK_BYTES (a record of 65536 frames
    of 64x64x3 would be 1.6 GB, near protobuf's limit of 2 GB)."""
    if not holds_frames(data["observations"]):
        return BLOCK_SIZE
    row_bytes = sum(array[:1].nbytes for key in TRANSITION_KEYS for array in parts.leaves(data[key]))
    return max(1, min(BLOCK_SIZE, IMAGE_BLOCK_BYTES // row_bytes))


def _ends(dones: np.ndarray) -> np.ndarray:
    """The rows of a block whose next frame is stored (`END_FRAMES`): those that end a trajectory, and the last."""
    ends = np.asarray(dones) > 0
    ends[-1:] = True
    return ends


def _block_ends(dones: tf.Tensor) -> tf.Tensor:
    """`_ends` of a block read back, in TensorFlow."""
    rows = tf.shape(dones)[0]
    return tf.logical_or(dones > 0, tf.range(rows) == rows - 1)


def _encode(data: Transitions, start: int, stop: int, block: int, shard: int) -> bytes:
    arrays = {key: rows_of(data[key], slice(start, stop)) for key in TRANSITION_KEYS}
    if holds_frames(arrays["observations"]):  # each frame once
        ends = _ends(arrays["dones"])
        for frames, next_frames in zip(parts.leaves(arrays["observations"]),
                                       parts.leaves(arrays["next_observations"])):
            if not np.array_equal(next_frames[:-1][~ends[:-1]], frames[1:][~ends[:-1]]):  # as every source makes them
                raise ValueError(f"rows {start}-{stop}: a next frame inside a trajectory is not the following row's")
        arrays[END_FRAMES] = rows_of(arrays.pop("next_observations"), ends)
    flat = {label: value for key, values in arrays.items() for label, value in parts.labelled(key, values)}
    feature = {
        key: tf.train.Feature(bytes_list=tf.train.BytesList(value=[tf.io.serialize_tensor(value).numpy()]))
        for key, value in flat.items()
    }
    feature["block"] = tf.train.Feature(int64_list=tf.train.Int64List(value=[block]))
    feature["shard"] = tf.train.Feature(int64_list=tf.train.Int64List(value=[shard]))
    # Deterministic: the features are a protobuf map, whose order otherwise differs from process to process.
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString(deterministic=True)


# What counting a record's rows reads: the protobuf parser skips the other features without copying them.
_COUNT_FEATURES = {"rewards": tf.io.FixedLenFeature([], tf.string), **_POSITION}


def _stored_fields(metadata: DatasetMetadata) -> Dict[str, Tuple[str, Optional[str], tf.DType]]:
    """A record's bytes features, each with the transition key and part (None: the whole observation) it holds
    and its dtype."""
    fields = {}
    for key in _STORED if metadata.frames_once else TRANSITION_KEYS:
        if key not in (*OBSERVATION_KEYS, END_FRAMES):
            fields[key] = (key, None, tf.float32)
        elif metadata.parts:
            fields.update({f"{key}/{part.name}": (key, part.name, tf.as_dtype(part.dtype)) for part in metadata.parts})
        else:
            fields[key] = (key, None, tf.as_dtype(metadata.observation_dtype))
    return fields


def _parse(record: tf.Tensor, metadata: DatasetMetadata, next_frames: bool = True):
    """A record's block number, shard and arrays (observations of parts as dicts); blocks that hold each frame once
    with their next observations rebuilt, or with `next_frames` False as stored (END_FRAMES)."""
    fields = _stored_fields(metadata)
    example = tf.io.parse_single_example(record, {**{name: tf.io.FixedLenFeature([], tf.string) for name in fields},
                                                  **_POSITION})
    arrays: Dict[str, Any] = {}
    for name, (key, part, dtype) in fields.items():
        value = tf.io.parse_tensor(example[name], dtype)
        if part is None:
            arrays[key] = value
        else:
            arrays.setdefault(key, {})[part] = value
    if metadata.frames_once and next_frames:
        arrays["next_observations"] = parts.map_parts(
            lambda frames, end_frames: _next_frames(frames, end_frames, arrays["dones"]), arrays["observations"],
            arrays.pop(END_FRAMES))
    return example["block"], example["shard"], arrays


def _next_frames(observations: tf.Tensor, end_frames: tf.Tensor, dones: tf.Tensor) -> tf.Tensor:
    """A block's next observations (of one part): the following row's frame, or the stored one where `_ends` says
    (scattered over the shifted frames: measured 4.6 times as fast as choosing every row's with tf.where)."""
    following = tf.concat([observations[1:], observations[-1:]], axis=0)
    return tf.tensor_scatter_nd_update(following, tf.where(_block_ends(dones)), end_frames)


def parse_block(record: tf.Tensor, metadata: DatasetMetadata) -> Dict[str, tf.Tensor]:
    """One record's block of transitions, keyed as TRANSITION_KEYS (for streaming), as `metadata` describes them."""
    return _parse(record, metadata)[2]


def verified_paths(directory: "str | pathlib.Path", metadata: DatasetMetadata, fix: str = "re-run the conversion"
                   ) -> List[str]:
    """The shard files of a converted directory (a local path or a tf.io.gfile URI), each present and
    matching its sha256 in metadata.json (the files are read through in threads, never held whole); a
    mismatch is a UserError naming the file."""
    directory = storage.normalise(directory)
    paths = [storage.join(directory, shard.file) for shard in metadata.shards]
    _check_files(directory, paths, fix)
    for path, shard, digest in zip(paths, metadata.shards, checksums.files_sha256(paths)):
        if digest != shard.sha256:
            raise UserError(
                f"{path}: sha256 does not match {storage.join(directory, 'metadata.json')} (the shard is corrupt, truncated "
                f"or from another conversion); {fix}"
            )
    return paths


def check_counts(directory: "str | pathlib.Path", paths: List[str], metadata: DatasetMetadata,
                 fix: str = "re-run the conversion") -> None:
    """The blocks of the shards at `paths` (verified by `verified_paths`) are numbered in order and hold as many
    transitions as metadata.json says, per shard (for a stream, which never holds the data: `read_shards` checks
    the same of what it reads)."""

    def counted(record: tf.Tensor):
        example = tf.io.parse_single_example(record, _COUNT_FEATURES)
        return example["block"], example["shard"], tf.shape(tf.io.parse_tensor(example["rewards"], tf.float32))[0]

    dataset = tf.data.TFRecordDataset(paths, num_parallel_reads=len(paths)).map(counted, tf.data.AUTOTUNE)
    try:
        blocks = sorted((int(block), int(shard), int(rows)) for block, shard, rows in dataset)
    except tf.errors.OpError as error:
        unreadable = _unreadable_shard(paths, storage.normalise(directory), metadata)
        raise UserError(f"{unreadable}: cannot be read as TFRecord ({first_line(error)}); the shard is corrupt or "
                        f"truncated; {fix}") from error
    _check_block_counts(storage.normalise(directory), metadata, blocks, fix)


def read_shards(directory: "str | pathlib.Path", metadata: DatasetMetadata, fix: str = "re-run the conversion",
                next_frames: bool = True) -> Dict[str, tf.Tensor]:
    """All transitions of a converted directory as whole tensors (float32, images uint8), verified against the
    metadata. Images held once (`metadata.frames_once`) with `next_frames` False: no next observations, but the
    frames of the end rows (END_FRAMES) and each row's next frame as an index (NEXT_FRAME, int32) into the
    observations followed by the end frames.

    Checksums are verified first (in threads), then the shards are read in parallel with tf.data; any
    mismatch or read error is a UserError naming the file and saying `fix`.
    """
    paths = verified_paths(directory, metadata, fix)
    directory = storage.normalise(directory)
    dataset = tf.data.TFRecordDataset([str(path) for path in paths], num_parallel_reads=len(paths))
    dataset = dataset.map(lambda record: _parse(record, metadata, next_frames),
                          num_parallel_calls=tf.data.AUTOTUNE)
    try:
        blocks = sorted(((int(block), int(shard), arrays) for block, shard, arrays in dataset), key=lambda b: b[0])
    except tf.errors.OpError as error:
        raise UserError(
            f"{_unreadable_shard(paths, directory, metadata)}: cannot be read as TFRecord "
            f"({first_line(error)}); "
            f"the shard is corrupt or truncated; {fix}"
        ) from error
    _check_blocks(directory, metadata, blocks, fix)
    whole = {key: parts.map_parts(lambda *values: tf.concat(values, axis=0), *[arrays[key] for _, _, arrays in blocks])
             for key in blocks[0][2]}
    if END_FRAMES in whole:
        ends = tf.concat([_block_ends(arrays["dones"]) for _, _, arrays in blocks], axis=0)
        rows = tf.shape(ends)[0]
        whole[NEXT_FRAME] = tf.where(ends, rows + tf.cumsum(tf.cast(ends, tf.int32)) - 1, tf.range(rows) + 1)
    return whole


def _check_files(directory: str, paths: List[str], fix: str) -> None:
    for path in paths:
        if not storage.is_file(path):
            raise UserError(f"{path}: shard listed in metadata.json is missing; {fix}")
    for path in sorted(set(storage.glob(directory, SHARD_GLOB)) - set(paths)):
        raise UserError(
            f"{path}: shard not listed in metadata.json (the directory mixes conversions); "
            "convert into a new directory"
        )


def _unreadable_shard(paths: List[str], directory: str, metadata: DatasetMetadata) -> str:
    """The first shard TensorFlow fails to read (only called after a failed parallel read)."""
    for path in paths:
        try:
            for record in tf.data.TFRecordDataset(str(path)).map(lambda r: _parse(r, metadata)):
                del record
        except tf.errors.OpError:
            return path
    return directory


def _check_blocks(directory: str, metadata: DatasetMetadata, blocks: list, fix: str) -> None:
    """Block order, per-shard counts and array shapes agree with metadata.json."""
    observation_shapes = metadata.observation_shapes()
    expected = {"observations": observation_shapes, "next_observations": observation_shapes,
                "actions": metadata.action_shape}
    for _, shard, arrays in blocks:
        rows = int(arrays["rewards"].shape[0])
        shapes = {key: parts.map_parts(lambda shape: [rows, *shape], expected.get(key, []))
                  for key in TRANSITION_KEYS}
        if END_FRAMES in arrays:  # a frame for each row `_ends` marks (the next frames' indices count on it)
            ends = int(tf.reduce_sum(tf.cast(_block_ends(arrays["dones"]), tf.int32)))
            shapes[END_FRAMES] = parts.map_parts(lambda shape: [ends, *shape], observation_shapes)
        for key in [key for key in shapes if key in arrays]:
            for (label, shape), (_, array) in zip(parts.labelled(key, shapes[key]), parts.labelled(key, arrays[key])):
                if array.shape.as_list() != shape:
                    raise UserError(
                        f"{storage.join(directory, metadata.shards[shard].file)}: field {label!r} has shape "
                        f"{array.shape.as_list()} but metadata.json implies {shape}; {fix}"
                    )
    _check_block_counts(directory, metadata, [(block, shard, int(arrays["rewards"].shape[0]))
                                              for block, shard, arrays in blocks], fix)


def _check_block_counts(directory: str, metadata: DatasetMetadata, blocks: List[Tuple[int, int, int]],
                        fix: str) -> None:
    """Blocks (block, shard, rows), sorted by block: numbered 0..n-1, and each shard's rows as metadata.json says."""
    if [block for block, _, _ in blocks] != list(range(len(blocks))):
        raise UserError(f"{storage.join(directory, 'metadata.json')}: the shards' blocks are not numbered "
                        f"0..{len(blocks) - 1}; {fix}")
    counts = np.zeros(len(metadata.shards), np.int64)
    for _, shard, rows in blocks:
        counts[shard] += rows
    for shard, count in zip(metadata.shards, counts):
        if count != shard.num_transitions:
            raise UserError(
                f"{storage.join(directory, shard.file)}: holds {count} transitions but metadata.json says "
                f"{shard.num_transitions}; {fix}"
            )
