"""Keras models of IQL: value V(s), twin critics Q1/Q2(s, a) and the Gaussian actor (SPEC.md section 1)."""

import math
from typing import Optional, Sequence

import keras
import tensorflow as tf
import tensorflow_probability as tfp

tfd = tfp.distributions

LOG_STD_MIN = -5.0
LOG_STD_MAX = 2.0


def _dense(units: int, activation: Optional[str], seed: int, name: str) -> keras.layers.Dense:
    # The reference initialises every Dense, output layers included, orthogonally with gain sqrt(2).
    return keras.layers.Dense(
        units,
        activation=activation,
        kernel_initializer=keras.initializers.Orthogonal(gain=math.sqrt(2.0), seed=seed),
        bias_initializer="zeros",
        name=name,
    )


def mlp(input_dim: int, hidden_dims: Sequence[int], activation: str, seed: int, prefix: str) -> keras.Sequential:
    """The hidden layers of an MLP, each Dense with its own initialiser seed.

    A Sequential, not a Python list: Keras 3 does not expose layer lists to tf.train.Checkpoint.
    """
    layers = [_dense(units, activation, seed + i, f"{prefix}_hidden_{i}") for i, units in enumerate(hidden_dims)]
    return keras.Sequential([keras.Input((input_dim,)), *layers], name=f"{prefix}_trunk")


class ValueNetwork(keras.Model):
    """V(s): MLP with a scalar head, output squeezed to [B]."""

    def __init__(self, observation_dim: int, hidden_dims: Sequence[int], activation: str, seed: int, name="value"):
        super().__init__(name=name)
        self.trunk = mlp(observation_dim, hidden_dims, activation, seed, name)
        self.head = _dense(1, None, seed + len(hidden_dims), f"{name}_out")
        self(tf.zeros([1, observation_dim]))

    def call(self, observations: tf.Tensor) -> tf.Tensor:
        return tf.squeeze(self.head(self.trunk(observations)), -1)


class TwinCritic(keras.Model):
    """Two independent Q networks over concat(s, a); returns (Q1, Q2), each [B]."""

    def __init__(
        self, observation_dim: int, action_dim: int, hidden_dims: Sequence[int], activation: str, seed: int,
        name="critic",
    ):
        super().__init__(name=name)
        self.q1 = ValueNetwork(observation_dim + action_dim, hidden_dims, activation, seed, name=f"{name}_q1")
        self.q2 = ValueNetwork(observation_dim + action_dim, hidden_dims, activation, seed + 100, name=f"{name}_q2")

    def call(self, observations: tf.Tensor, actions: tf.Tensor) -> tuple:
        inputs = tf.concat([observations, actions], axis=-1)
        return self.q1(inputs), self.q2(inputs)


class GaussianActor(keras.Model):
    """pi(a|s) = N(tanh(Dense(MLP(s))), exp(clip(log_std)) * temperature), a state-independent std.

    Dropout (kitchen/adroit) is stateless and seeded by the caller, so the agent's one checkpointed
    random generator drives it and a resumed run repeats the same masks.
    """

    def __init__(
        self,
        observation_dim: int,
        action_dim: int,
        hidden_dims: Sequence[int],
        activation: str,
        seed: int,
        dropout_rate: Optional[float] = None,
        name="actor",
    ):
        super().__init__(name=name)
        self.trunk = mlp(observation_dim, hidden_dims, activation, seed, name)
        self.mean_head = _dense(action_dim, None, seed + len(hidden_dims), f"{name}_mean")
        self.log_std = self.add_weight(shape=(action_dim,), initializer="zeros", name="log_std")
        self.dropout_rate = dropout_rate or 0.0
        self(tf.zeros([1, observation_dim]))

    def call(self, observations: tf.Tensor, dropout_seed: Optional[tf.Tensor] = None) -> tf.Tensor:
        """The deterministic action tanh(Dense(h)); dropout is applied only when a seed is given."""
        if dropout_seed is None or self.dropout_rate == 0:
            return tf.tanh(self.mean_head(self.trunk(observations)))
        x = observations
        seeds = tf.random.experimental.stateless_split(dropout_seed, num=len(self.trunk.layers))
        for layer, seed in zip(self.trunk.layers, tf.unstack(seeds)):
            x = tf.nn.experimental.stateless_dropout(layer(x), rate=self.dropout_rate, seed=seed)
        return tf.tanh(self.mean_head(x))

    def std(self) -> tf.Tensor:
        """The state-independent standard deviation exp(clip(log_std, -5, 2)), [action_dim]."""
        return tf.exp(tf.clip_by_value(self.log_std, LOG_STD_MIN, LOG_STD_MAX))

    def distribution(
        self, observations: tf.Tensor, temperature: float = 1.0, dropout_seed: Optional[tf.Tensor] = None
    ) -> tfd.Distribution:
        """The policy as a TFP distribution; temperature 0 collapses it onto the mean."""
        # A Gaussian over raw actions with a tanh'd mean, not a tanh-squashed distribution (SPEC.md 6.2).
        return tfd.MultivariateNormalDiag(
            loc=self(observations, dropout_seed=dropout_seed), scale_diag=self.std() * temperature
        )
