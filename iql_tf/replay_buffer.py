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

from iql_tf.data import frame_stacks
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
        `frame_stack` > 1 (image observations, stacked as they are sampled) `dones`, in order."""
        super().__init__(name=name)
        columns = {
            "observations": transitions["observations"],
            "actions": transitions["actions"],
            "rewards": transitions["rewards"],
            "masks": 1.0 - tf.cast(transitions["terminals"], tf.float32),
            "next_observations": transitions["next_observations"],
        }
        self.batch_size = int(batch_size)
        self.offline_size = int(columns["rewards"].shape[0])
        self.capacity = max(capacity or 0, self.offline_size)
        self.columns = {}
        for key, value in columns.items():
            # Images stay uint8 (a quarter of float32's memory): the networks scale them.
            dtype = tf.uint8 if key.endswith("observations") and is_image(value) else tf.float32
            # Allocated at full size, then filled: no second full-size copy of the data on the way.
            column = tf.Variable(tf.zeros([self.capacity, *value.shape[1:]], dtype), trainable=False, name=key)
            column[:self.offline_size].assign(tf.cast(value, dtype))
            self.columns[key] = column
        self.size = tf.Variable(self.offline_size, dtype=tf.int64, trainable=False, name="size")
        self.frame_stack = int(frame_stack)
        if self.frame_stack > 1:  # each row's steps since its trajectory's start, for its stack of frames
            self.offsets = tf.Variable(frame_stacks.trajectory_offsets(transitions["dones"]), trainable=False,
                                       name="offsets")
        # One transition travels as one float32 row, its columns flattened in BATCH_KEYS order.
        self._widths = [int(np.prod(self.columns[key].shape[1:])) for key in BATCH_KEYS]
        # Compiled once, with a fixed signature (never with XLA, which would copy the whole buffer to write one
        # row): appending never retraces.
        self.add = tf.function(self._add, input_signature=[tf.TensorSpec([sum(self._widths)], tf.float32)])

    def available(self) -> int:
        """A buffer never runs dry: any number of batches."""
        return _UNLIMITED

    def sample(self, generators: Sequence[tf.random.Generator]) -> Dict[str, tf.Tensor]:
        """One batch per generator (ensemble member), uniform with replacement: [members, batch_size, ...]."""
        indices = tf.stack([
            generator.uniform([self.batch_size], minval=0, maxval=self.size, dtype=tf.int64)
            for generator in generators
        ])
        if self.frame_stack == 1:
            return {key: tf.gather(self.columns[key], indices) for key in BATCH_KEYS}
        observations, next_observations = frame_stacks.gather(
            self.columns["observations"], self.columns["next_observations"], self.offsets, tf.cast(indices, tf.int32),
            self.frame_stack)
        return {key: tf.gather(self.columns[key], indices) for key in ("actions", "rewards", "masks")} | {
            "observations": observations, "next_observations": next_observations}

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
