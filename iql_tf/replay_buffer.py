"""Transitions held in memory as tf.Variables and sampled uniformly inside the compiled train step.

Variables (not graph constants) keep a 1M-transition dataset out of the traced graph. The buffer is
preallocated to its final size (the offline dataset plus every online transition to come), so growing it
during fine-tuning neither reallocates nor retraces: `size` says how much of it is filled.
"""

from typing import Dict, Mapping, Optional, Sequence

import numpy as np
import tensorflow as tf

# What one gradient update reads; masks are 1 - terminal (a truncation keeps its bootstrap).
BATCH_KEYS = ("observations", "actions", "rewards", "masks", "next_observations")


class ReplayBuffer(tf.Module):
    """Observations, actions, rewards, masks and next observations of up to `capacity` transitions."""

    def __init__(self, transitions: Mapping[str, np.ndarray], capacity: Optional[int] = None,
                 name: str = "replay_buffer"):
        super().__init__(name=name)
        columns = {
            "observations": transitions["observations"],
            "actions": transitions["actions"],
            "rewards": transitions["rewards"],
            "masks": 1.0 - np.asarray(transitions["terminals"], np.float32),
            "next_observations": transitions["next_observations"],
        }
        self.offline_size = int(np.shape(columns["rewards"])[0])
        self.capacity = max(capacity or 0, self.offline_size)
        self.columns = {}
        for key, value in columns.items():
            # Allocated at full size, then filled: no second full-size copy of the data on the way.
            column = tf.Variable(tf.zeros([self.capacity, *np.shape(value)[1:]], tf.float32), trainable=False, name=key)
            column[:self.offline_size].assign(np.asarray(value, np.float32))
            self.columns[key] = column
        self.size = tf.Variable(self.offline_size, dtype=tf.int64, trainable=False, name="size")
        # One transition travels as one float32 row, its columns flattened in BATCH_KEYS order.
        self._widths = [int(np.prod(self.columns[key].shape[1:])) for key in BATCH_KEYS]
        # Compiled once, with a fixed signature (never with XLA, which would copy the whole buffer to write one
        # row): appending never retraces.
        self.add = tf.function(self._add, input_signature=[tf.TensorSpec([sum(self._widths)], tf.float32)])

    def sample(self, generators: Sequence[tf.random.Generator], batch_size: int) -> Dict[str, tf.Tensor]:
        """One batch per generator (ensemble member), uniform with replacement: [members, batch_size, ...]."""
        indices = tf.stack([
            generator.uniform([batch_size], minval=0, maxval=self.size, dtype=tf.int64) for generator in generators
        ])
        return {key: tf.gather(self.columns[key], indices) for key in BATCH_KEYS}

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
