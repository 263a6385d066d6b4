"""Fitted Q evaluation (Le, Voloshin & Yue, ICML 2019): the Q function of a fixed policy pi, fitted by TD on a
dataset's transitions, Q(s, a) <- r + discount * mask * Q_target(s', pi(s')), as d3rlpy's FQE does it.

The policy is fixed, so pi(s') of every transition is computed once, before training (`estimation.py`), and
an update regresses one Q network onto a table: one network and its Polyak target, where IQL's update trains a
value network, twin critics and an actor.

With `fqe.ensemble_size` = E > 1 the estimate is bootstrapped FQE (Hao et al., ICML 2021): E Q networks, each
with its own initialisation and trained on its own resample (with replacement) of the transitions, updated
together as the ensemble members of one network; the spread of their values is the estimate's uncertainty,
which grows where the policy acts unlike the data (the members extrapolate apart).
"""

from typing import Dict, Mapping

import keras
import numpy as np
import tensorflow as tf

from iql_tf import losses
from iql_tf.agent import batch_generator
from iql_tf.networks import ValueNetwork
from iql_tf.seeding import derived_seed
from iql_tf.settings import FQESettings

# The table FQE regresses on, [N, ...] each: concat(s, a) and concat(s', pi(s')) as the network takes them,
# rewards (scaled) and masks (1 - terminal).
TABLE_KEYS = ("inputs", "next_inputs", "rewards", "masks")
METRIC_NAMES = ("td_loss", "q_mean", "target_mean")


class FittedQ(tf.Module):
    """Q(s, a) of one fixed policy, its target network and optimiser, trained on `table` (held as variables
    outside what `checkpoint` saves: the table is rebuilt from the data and the policy, never stored)."""

    def __init__(self, table: Mapping[str, np.ndarray], settings: FQESettings):
        super().__init__(name="fitted_q")
        self.settings = settings
        input_dim = int(table["inputs"].shape[1])
        # member 0 is the single network of a plain estimate (the same numbers with or without an ensemble)
        seeds = tuple(derived_seed(settings.seed, "fqe" if member == 0 else f"fqe member {member}")
                      for member in range(settings.ensemble_size))
        self.q = ValueNetwork(input_dim, settings.hidden_dims, settings.activation, seeds, name="fqe_q")
        self.target_q = ValueNetwork(input_dim, settings.hidden_dims, settings.activation, seeds, name="fqe_target_q")
        self.target_q.set_weights(self.q.get_weights())
        self.optimizer = keras.optimizers.Adam(learning_rate=settings.learning_rate, epsilon=1e-8)
        self.optimizer.build(self.q.trainable_variables)
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        self.generator = batch_generator(derived_seed(settings.seed, "fqe batches"))
        self._table = [tf.Variable(np.asarray(table[key], np.float32), trainable=False) for key in TABLE_KEYS]
        self._size = int(table["rewards"].shape[0])
        # each member's resample of the transitions' indices, drawn once; none for a single network
        self._resamples = None if settings.ensemble_size == 1 else tf.constant(
            np.random.default_rng(derived_seed(settings.seed, "fqe resamples")).integers(
                0, self._size, size=(settings.ensemble_size, self._size)), tf.int64)
        self._updates = tf.function(self._run_updates, jit_compile=settings.jit_compile)

    def checkpoint(self) -> tf.train.Checkpoint:
        """What a resumed estimate restores: the networks, the optimiser, the step and the batch generator."""
        return tf.train.Checkpoint(q=self.q, target_q=self.target_q, optimizer=self.optimizer, step=self.step,
                                   generator=self.generator)

    def _update(self) -> Dict[str, tf.Tensor]:
        indices = self.generator.uniform([self.settings.ensemble_size, self.settings.batch_size], 0, self._size,
                                         dtype=tf.int64)
        if self._resamples is not None:
            indices = tf.gather(self._resamples, indices, batch_dims=1)
        inputs, next_inputs, rewards, masks = (tf.gather(column, indices) for column in self._table)
        target = losses.td_target(rewards, masks, self.target_q(next_inputs), self.settings.discount)
        with tf.GradientTape() as tape:
            q = self.q(inputs)
            # the members share no weights: the sum's gradient is each member's own
            loss = tf.reduce_sum(losses.squared_td_error(q, target))
        variables = self.q.trainable_variables
        self.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        rate = self.settings.target_update_rate
        for target_variable, variable in zip(self.target_q.variables, self.q.variables):
            target_variable.assign((1.0 - rate) * target_variable + rate * variable)
        self.step.assign_add(1)
        return {"td_loss": loss / self.settings.ensemble_size, "q_mean": tf.reduce_mean(q),
                "target_mean": tf.reduce_mean(target)}

    def _run_updates(self, num_updates: tf.Tensor) -> Dict[str, tf.Tensor]:
        # Mean metrics of K updates in one call; stops at the first non-finite loss so that the caller names it.
        totals = {name: tf.constant(0.0) for name in METRIC_NAMES}
        count = tf.constant(0.0)
        for _ in tf.range(num_updates):
            metrics = self._update()
            totals = {name: totals[name] + metrics[name] for name in METRIC_NAMES}
            count += 1.0
            if not tf.math.is_finite(metrics["td_loss"]):
                break
        return {name: totals[name] / count for name in METRIC_NAMES}

    def run_updates(self, num_updates: int) -> Dict[str, float]:
        """`num_updates` updates in one compiled call; their mean metrics (the call ends at a non-finite loss)."""
        return {name: float(value) for name, value in self._updates(tf.constant(num_updates, tf.int32)).items()}

    def values(self, inputs: "np.ndarray | tf.Tensor", batch: int = 65536) -> np.ndarray:
        """Each member's Q of each row of `inputs` (concat(s, a) as in the table), [members, N], in batches (once
        per estimate: eagerly)."""
        members = self.settings.ensemble_size
        return np.concatenate([self.q(tf.repeat(tf.convert_to_tensor(inputs[i:i + batch], tf.float32)[tf.newaxis],
                                                members, axis=0)).numpy()
                               for i in range(0, int(inputs.shape[0]), batch)], axis=1)

    def table_values(self) -> np.ndarray:
        """Each member's Q(s, a) of every transition of the table, at the data's actions, [members, N]."""
        return self.values(self._table[0])
