"""A converted dataset streamed through tf.data, for data larger than memory: shards read in parallel, rows
shuffled through a buffer, batched, preprocessed and prefetched, consumed by the compiled update loop.

    shard files (reshuffled every epoch) -> interleave(TFRecordDataset) -> parse blocks of rows
      -> rebatch into chunks of `shuffle_buffer` rows -> repeat -> permute each chunk's rows (seeded, new
      seeds every epoch) -> rebatch(members x batch_size) -> preprocess -> prefetch

An RLDS dataset streamed as it is (its metadata's `stream_of`) enters the same chain with one block per
episode, its transitions made inside tf.data from its own shards (`rlds_source.stream_rows`).

Everything moves in blocks and chunks, never row by row (which tf.data does a hundred times slower).
Sampling differs from the in-memory replay buffer's: each epoch holds every row once (without replacement),
and a batch is drawn from one chunk of `shuffle_buffer` rows: consecutive blocks (65536 rows each) of the
shards read side by side, two or three blocks at the default (so neighbouring rows of the data are more
likely to share a batch when the chunk is much smaller than the data; raise `shuffle_buffer` to mix more);
the in-memory buffer draws uniformly with replacement.
The iterator is part of the run's checkpoint (its position and its buffers), so a resumed run reads exactly
the batches an uninterrupted one would. Shard checksums and the transitions each shard holds are verified
once, at start, reading each file through without holding it; a shard damaged later stops the run in one
line, its last checkpoint kept.
"""

import math
import pathlib
from typing import Any, Callable, Dict, Optional, Sequence

import tensorflow as tf

from iql_tf.data import frame_stacks, rlds_source, shards
from iql_tf.data.parts import leaves, map_parts
from iql_tf.data.metadata import DatasetMetadata
from iql_tf.data.preprocessing import Preprocessing
from iql_tf.data.transitions import TRANSITION_KEYS
from iql_tf.errors import UserError, first_line

_PARALLEL_SHARDS = 4
GROUP = 100  # batches fetched from the stream at once: the compiled (XLA) update loop runs over a group
# Images: a group, and the default shuffle buffer, bounded in bytes instead (a group of 100 batches of 256 stacks of
# three 64x64x3 frames would be 1.9 GB; the pipeline holds several chunks and groups at a time: with chunks of
# 1 GB, a 64x64 run of three-frame stacks was killed for memory at 7.3 GB).
IMAGE_GROUP_BYTES = 128 * 2**20
IMAGE_SHUFFLE_BYTES = 256 * 2**20
DEFAULT_SHUFFLE_BUFFER = 100_000  # rows, for vectors


def _observation_dtypes(metadata: DatasetMetadata) -> Any:
    """What observations are held as: float32, images uint8 (until the networks scale them), or per part."""
    if metadata.parts:
        return {part.name: tf.as_dtype(part.dtype) for part in metadata.parts}
    return tf.as_dtype(metadata.observation_dtype)


def row_bytes(metadata: DatasetMetadata, frame_stack: int) -> int:
    """The bytes of one row as the stream holds it: its observation and next observation (stacked), its action
    and three numbers."""
    sizes = map_parts(lambda shape, dtype: math.prod(shape) * dtype.size, metadata.observation_shapes(frame_stack),
                      _observation_dtypes(metadata))
    return 2 * sum(leaves(sizes)) + 4 * (math.prod(metadata.action_shape) + 3)


def default_shuffle_buffer(metadata: DatasetMetadata, frame_stack: int) -> int:
    """make_dataset.shuffle_buffer's default: DEFAULT_SHUFFLE_BUFFER rows, for images as many as fit in
    IMAGE_SHUFFLE_BYTES (3,600 stacks of three 64x64x3 frames with their next stacks)."""
    if not metadata.images:
        return DEFAULT_SHUFFLE_BUFFER
    return max(1, min(DEFAULT_SHUFFLE_BUFFER, IMAGE_SHUFFLE_BYTES // row_bytes(metadata, frame_stack)))


class StreamedBatches(tf.Module):
    """Batches of `members` x `batch_size` transitions from a converted directory, as the networks see them.

    The stream yields groups of GROUP batches (of images: as many as fit in IMAGE_GROUP_BYTES). The current group
    and the position in it are variables, so the compiled update loop samples from them like from the replay
    buffer (inside XLA, where no iterator can run: the two answer the same calls, see `replay_buffer.py`), and
    `available` fetches the next group between compiled calls; the checkpoint holds both and the iterator, so the
    batches never depend on where the calls stop.
    """

    def __init__(self, directory: pathlib.Path, metadata: DatasetMetadata, preprocessing: Preprocessing,
                 members: int, batch_size: int, shuffle_buffer: int, seed: int, fix: str = "re-run the conversion",
                 frame_stack: int = 1):
        super().__init__(name="streamed_batches")
        self.directory = directory
        self.members, self.batch_size = members, batch_size
        self.group_size = GROUP if not metadata.images else max(1, min(GROUP, IMAGE_GROUP_BYTES // (
            members * batch_size * row_bytes(metadata, frame_stack))))
        self._preprocessing, self._metadata = preprocessing, metadata

        def shaped(blocks: tf.data.Dataset, observation_shape: Any) -> tf.data.Dataset:
            shapes = {"observations": observation_shape, "next_observations": observation_shape,
                      "actions": metadata.action_shape}
            return blocks.map(lambda block: {key: map_parts(lambda values, shape: tf.ensure_shape(
                values, [None, *shape]), block[key], shapes.get(key, [])) for key in TRANSITION_KEYS})

        stack = None
        if frame_stack > 1:
            stack = lambda blocks: frame_stacks.stack_blocks(  # noqa: E731
                shaped(blocks, metadata.observation_shapes()), frame_stack)
        if metadata.stream_of is None:
            blocks = _shard_blocks(directory, metadata, seed, fix, stack)
        else:  # an RLDS dataset streamed as it is: a block per episode, each a trajectory of its own
            blocks = rlds_source.stream_rows(metadata.stream_of, seed)
            if stack:  # (a single-step episode is a block of no rows: nothing to stack)
                blocks = stack(blocks.filter(lambda block: tf.size(block["rewards"]) > 0))
        observation_shape = metadata.observation_shapes(frame_stack)
        blocks = shaped(blocks, observation_shape)
        chunks = blocks.rebatch(shuffle_buffer).repeat()
        # Seeds drawn after the repeat: every epoch permutes its chunks anew (stateless, so checkpointable).
        chunks = tf.data.Dataset.zip(chunks, tf.data.Dataset.random(seed=seed + 1).batch(2))
        rows = chunks.map(_permuted, num_parallel_calls=2, deterministic=True)
        groups = rows.rebatch(self.group_size * members * batch_size, drop_remainder=True)
        groups = groups.map(self._prepare, num_parallel_calls=2, deterministic=True).prefetch(2)
        self.iterator = iter(groups)
        widths = {"observations": observation_shape, "next_observations": observation_shape,
                  "actions": metadata.action_shape, "rewards": [], "masks": []}
        self.group = {key: map_parts(lambda shape, dtype, name=key: tf.Variable(
            tf.zeros([self.group_size, members, batch_size, *shape], dtype), trainable=False, name=name),
            shape, _dtype(key, metadata)) for key, shape in widths.items()}
        self.position = tf.Variable(self.group_size, dtype=tf.int32, trainable=False, name="position")  # used up

    def _prepare(self, batch: Dict[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
        """The preprocessing of the in-memory path (`pipeline.make_dataset`), on one group of batches."""
        prepared = dict(self._preprocessing.transitions(batch, tf.clip_by_value), masks=1.0 - batch["terminals"])
        shape = [self.group_size, self.members, self.batch_size]
        return {key: map_parts(lambda values, dtype: tf.reshape(tf.cast(values, dtype), [*shape, *values.shape[1:]]),
                               value, _dtype(key, self._metadata)) for key, value in prepared.items()}

    def available(self) -> int:
        """Batches left in the current group, after fetching the next group when it is used up (eager)."""
        if int(self.position) >= self.group_size:
            try:
                group = next(self.iterator)
            except tf.errors.OpError as error:  # checked whole at the start: changed since (DataLossError, ...)
                raise UserError(f"{self.directory}: a shard could not be read while training ({first_line(error)}); it "
                                "changed after the run started: check the disk and the files (convert the source "
                                "again if they are damaged), then re-run the same command to resume from the last "
                                "checkpoint") from error
            for key, value in group.items():
                map_parts(lambda variable, values: variable.assign(values), self.group[key], value)
            self.position.assign(0)
        return self.group_size - int(self.position)

    def sample(self, generators: Sequence[tf.random.Generator]) -> Dict[str, tf.Tensor]:
        """The next batch of the current group, [members, batch_size, ...], as `ReplayBuffer.sample`; its order
        was drawn by tf.data from the run's seed, so the members' generators have nothing to draw here. The
        caller makes at most `available()` calls before the next `available()`."""
        del generators
        index = self.position.read_value()
        self.position.assign_add(1)
        return {key: map_parts(lambda variable: tf.gather(variable, index), value) for key, value in self.group.items()}


def _dtype(key: str, metadata: DatasetMetadata) -> Any:
    """What a batch holds: float32, but image observations, which stay uint8 until the networks scale them."""
    return _observation_dtypes(metadata) if key in shards.OBSERVATION_KEYS else tf.float32


def _shard_blocks(directory: pathlib.Path, metadata: DatasetMetadata, seed: int, fix: str,
                  stack: Optional[Callable[[tf.data.Dataset], tf.data.Dataset]] = None) -> tf.data.Dataset:
    """One epoch of a converted directory's blocks of rows, its shard files in a seeded order (new every
    epoch) read side by side, each through `stack` (frame stacks) in its order; checksums and counts verified
    first."""
    paths = shards.verified_paths(directory, metadata, fix)
    shards.check_counts(directory, paths, metadata, fix)  # what the in-memory path checks as it reads
    files = tf.data.Dataset.from_tensor_slices([str(path) for path in paths])
    files = files.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
    parse = lambda record: shards.parse_block(record, metadata)  # noqa: E731
    if stack:  # each shard parsed and stacked in its order (an image shard starts a trajectory)
        return files.interleave(lambda path: stack(tf.data.TFRecordDataset(path).map(parse)),
                                cycle_length=min(len(paths), _PARALLEL_SHARDS), num_parallel_calls=tf.data.AUTOTUNE,
                                deterministic=True)
    records = files.interleave(tf.data.TFRecordDataset, cycle_length=min(len(paths), _PARALLEL_SHARDS),
                               num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return records.map(parse, num_parallel_calls=2, deterministic=True)


def _permuted(chunk: Dict[str, tf.Tensor], seed: tf.Tensor) -> Dict[str, tf.Tensor]:
    """The chunk's rows in a random order, the same for every key."""
    order = tf.random.experimental.stateless_shuffle(tf.range(tf.shape(chunk["rewards"])[0]), seed)
    return tf.nest.map_structure(lambda value: tf.gather(value, order), chunk)


def converted_bytes(metadata: DatasetMetadata) -> int:
    """The size of the converted shards (what holding the dataset in memory takes, roughly: images too, each
    frame held once)."""
    return int(metadata.statistics["shards_bytes"])

