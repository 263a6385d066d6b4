"""Transitions held in memory as tf.Variables and sampled uniformly inside the compiled train step.

Variables (not graph constants) keep a 1M-transition dataset out of the traced graph. The buffer is
preallocated to its final size (the offline dataset plus every online transition to come), so growing it
during fine-tuning neither reallocates nor retraces: `size` says how much of it is filled.

The agent draws batches from this buffer and from a stream (`data/streaming.py`) alike, through the two calls
of `Batches`.
"""

from typing import Any, Dict, Mapping, Optional, Protocol, Sequence

import numpy as np
import tensorflow as tf

from iql_tf.data import frame_stacks, shards
from iql_tf.data.parts import is_parts, map_parts
from iql_tf.data.transitions import is_image

# What one gradient update reads; masks are 1 - terminal (a truncation keeps its bootstrap).
BATCH_KEYS = ("observations", "actions", "rewards", "masks", "next_observations")
_UNLIMITED = 2**31 - 1  # batches a buffer can give at once: as many as a compiled call may count


class Batches(Protocol):
    """Where the compiled updates draw their batches from: a `ReplayBuffer`, or a `streaming.StreamedBatches`."""

    batch_size: int  # transitions per member in each batch

    def available(self) -> int:
        """Batches the next compiled call may draw (called eagerly, between calls)."""

    def sample(self, generators: Sequence[tf.random.Generator]) -> Dict[str, tf.Tensor]:
        """The next batch, [members, batch_size, ...] tensors keyed as BATCH_KEYS (inside the compiled call)."""


class ReplayBuffer(tf.Module):
    """Observations, actions, rewards, masks and next observations of up to `capacity` transitions, sampled
    `batch_size` at a time."""

    def __init__(self, transitions: Mapping[str, Any], batch_size: int, capacity: Optional[int] = None,
                 name: str = "replay_buffer", frame_stack: int = 1):
        """`transitions`: tensors or arrays keyed as `BATCH_KEYS` but masks (`terminals` instead), and with
        `frame_stack` > 1 (image observations, stacked as they are sampled) `dones`, in order. Images held once
        (`shards.read_shards` without next frames) come with END_FRAMES and NEXT_FRAME instead of next
        observations: such a buffer holds its frames once, and takes no online transitions (nor do images)."""
        super().__init__(name=name)
        self.frames_once = shards.END_FRAMES in transitions
        columns = {
            "observations": transitions["observations"],
            "actions": transitions["actions"],
            "rewards": transitions["rewards"],
            "masks": 1.0 - tf.cast(transitions["terminals"], tf.float32),
        }
        if not self.frames_once:
            columns["next_observations"] = transitions["next_observations"]
        self.batch_size = int(batch_size)
        self.offline_size = int(columns["rewards"].shape[0])
        self.capacity = max(capacity or 0, self.offline_size)
        self.columns = {}
        for key, value in columns.items():
            # Frames held once: the end frames after the rows' own.
            extra = transitions[shards.END_FRAMES] if self.frames_once and key == "observations" else None
            if is_parts(value):
                self.columns[key] = {name: self._column(f"{key}_{name}", part, None if extra is None else extra[name])
                                     for name, part in value.items()}
            else:
                self.columns[key] = self._column(key, value, extra)
        self.size = tf.Variable(self.offline_size, dtype=tf.int64, trainable=False, name="size")
        self.frame_stack = int(frame_stack)
        if self.frame_stack > 1:  # each row's steps since its trajectory's start, for its stack of frames
            self.offsets = tf.Variable(frame_stacks.trajectory_offsets(transitions["dones"]), trainable=False,
                                       name="offsets")
        if self.frames_once:  # each row's next frame, indexed into the frames then the end frames
            self.next_frame = tf.Variable(transitions[shards.NEXT_FRAME], trainable=False, name="next_frame")
            return
        if is_parts(columns["observations"]):  # (takes no online transitions either)
            return
        # One transition travels as one float32 row, its columns flattened in BATCH_KEYS order.
        self._widths = [int(np.prod(self.columns[key].shape[1:])) for key in BATCH_KEYS]
        # Compiled once, with a fixed signature (never with XLA, which would copy the whole buffer to write one
        # row): appending never retraces.
        self.add = tf.function(self._add, input_signature=[tf.TensorSpec([sum(self._widths)], tf.float32)])

    def _column(self, name: str, value: Any, extra: Optional[tf.Tensor]) -> tf.Variable:
        """One column of `capacity` rows, the first `value`'s (`extra`: frames held once, after them)."""
        # Images stay uint8 (a quarter of float32's memory): the networks scale them.
        dtype = tf.uint8 if "observations" in name and is_image(value) else tf.float32
        # Allocated at full size, then filled: no second full-size copy of the data on the way.
        rows = self.capacity if extra is None else self.offline_size + int(extra.shape[0])
        column = tf.Variable(tf.zeros([rows, *value.shape[1:]], dtype), trainable=False, name=name)
        column[:self.offline_size].assign(tf.cast(value, dtype))
        if extra is not None:
            column[self.offline_size:].assign(extra)
        return column

    def available(self) -> int:
        """A buffer never runs dry: any number of batches."""
        return _UNLIMITED

    def sample(self, generators: Sequence[tf.random.Generator]) -> Dict[str, tf.Tensor]:
        """One batch per generator (ensemble member), uniform with replacement: [members, batch_size, ...]."""
        indices = tf.stack([
            generator.uniform([self.batch_size], minval=0, maxval=self.size, dtype=tf.int64)
            for generator in generators
        ])
        return self.transitions_at(indices)

    def transitions_at(self, indices: tf.Tensor) -> Dict[str, tf.Tensor]:
        """The transitions at `indices` (int64, any shape), keyed as BATCH_KEYS, frames stacked as sampled."""
        batch = {key: tf.gather(self.columns[key], indices) for key in ("actions", "rewards", "masks")}
        frames = self.columns["observations"]
        if self.frames_once:
            next_rows = tf.gather(self.next_frame, indices)
            next_frames = map_parts(lambda part: tf.gather(part, next_rows), frames)
        else:
            next_frames = map_parts(lambda part: tf.gather(part, indices), self.columns["next_observations"])
        if self.frame_stack == 1:
            return batch | {"observations": map_parts(lambda part: tf.gather(part, indices), frames),
                            "next_observations": next_frames}
        observations, next_observations = frame_stacks.gather(frames, next_frames, self.offsets,
                                                              tf.cast(indices, tf.int32), self.frame_stack)
        return batch | {"observations": observations, "next_observations": next_observations}

    def pack(self, transition: Mapping[str, np.ndarray]) -> np.ndarray:
        """One transition (arrays or numbers keyed as BATCH_KEYS) as the row `add` takes."""
        return np.concatenate([np.reshape(transition[key], [-1]) for key in BATCH_KEYS]).astype(np.float32)

    def _add(self, row: tf.Tensor) -> None:
        """Appends one transition packed by `pack`; the caller keeps size < capacity."""
        index = tf.reshape(self.size, [1, 1])
        for key, part in zip(BATCH_KEYS, tf.split(row, self._widths)):
            column = self.columns[key]
            column.scatter_nd_update(index, tf.reshape(part, [1, *column.shape[1:]]))
        self.size.assign_add(1)

    def online_transitions(self, start: int, stop: int) -> Dict[str, np.ndarray]:
        """Online transitions [start, stop) (counted from the end of the offline data), as numpy arrays."""
        first, last = self.offline_size + start, self.offline_size + stop
        return {key: column[first:last].numpy() for key, column in self.columns.items()}

    def restore_online(self, rows: Mapping[str, np.ndarray]) -> None:
        """Puts saved online transitions back after the offline data and sets `size` to match."""
        count = len(rows["rewards"])
        for key, column in self.columns.items():
            column[self.offline_size:self.offline_size + count].assign(rows[key])
        self.size.assign(self.offline_size + count)
