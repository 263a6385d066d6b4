"""Transitions held in memory as tf.Variables and sampled uniformly inside the compiled train step.

Variables (not graph constants) keep a 1M-transition dataset out of the traced graph, and the
`size` variable lets an online buffer grow behind the same sampling code.
"""

from typing import Dict, Mapping

import tensorflow as tf

# What one gradient update reads; masks are 1 - terminal (a truncation keeps its bootstrap).
BATCH_KEYS = ("observations", "actions", "rewards", "masks", "next_observations")


class ReplayBuffer(tf.Module):
    """Holds observations, actions, rewards, masks and next observations of N transitions."""

    def __init__(self, transitions: Mapping[str, tf.Tensor], name: str = "replay_buffer"):
        super().__init__(name=name)
        columns = {
            "observations": transitions["observations"],
            "actions": transitions["actions"],
            "rewards": transitions["rewards"],
            "masks": 1.0 - tf.convert_to_tensor(transitions["terminals"], tf.float32),
            "next_observations": transitions["next_observations"],
        }
        self.columns = {
            key: tf.Variable(tf.convert_to_tensor(value, tf.float32), trainable=False, name=key)
            for key, value in columns.items()
        }
        self.size = tf.Variable(int(columns["rewards"].shape[0]), dtype=tf.int64, trainable=False, name="size")

    def sample(self, generator: tf.random.Generator, batch_size: int) -> Dict[str, tf.Tensor]:
        """A batch of `batch_size` transitions drawn uniformly with replacement."""
        indices = generator.uniform([batch_size], minval=0, maxval=self.size, dtype=tf.int64)
        return {key: tf.gather(self.columns[key], indices) for key in BATCH_KEYS}
