"""Keras models of IQL for an ensemble of independent members: value V(s), twin critics Q1/Q2(s, a) and the
Gaussian actor.

Every weight has a leading member axis ([members, in, out] kernels), so N independently seeded agents train
through batched matmuls in one compiled step (`train.num_seeds`); a single run is the ensemble of one.
Inputs and outputs carry the same axis: observations [members, B, obs] -> values [members, B].

Five options depart from the IQL paper's networks, for configs that follow later practice (OGBench's IQL
baselines, e.g. the FQL paper's): layer normalisation after each hidden activation of the value and critic
networks (`layer_norm`), a constant policy std of 1 instead of a learned one (`constant_std`), a linear
policy mean, clipped to [-1, 1] where actions are taken, instead of a tanh'd one (`tanh_mean=False`),
Glorot-uniform kernels with a near-zero policy mean layer instead of orthogonal ones (`kernel_init`), and the
tanh approximation of GELU (`activation_function('gelu_tanh')`).
"""

import math
from typing import Any, Callable, List, Optional, Sequence, Union

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from iql_tf.encoders import ImageEncoder, PartsEncoder
from iql_tf.options import KERNEL_INITS
from iql_tf.seeding import derived_seed

tfd = tfp.distributions
Encoder = Union[ImageEncoder, PartsEncoder]

LOG_STD_MIN = -5.0
LOG_STD_MAX = 2.0

# How kernels start: 'orthogonal', gain sqrt(2) for every layer, output layers included (the IQL reference's);
# 'glorot_uniform', Flax's variance_scaling(1, 'fan_avg', 'uniform'), with the policy mean layer's scale 0.01
# so that the first policy acts near 0 (OGBench's IQL baselines, e.g. FQL's utils/networks.py).
POLICY_MEAN_GLOROT_SCALE = 0.01

# Activations by name beyond Keras' own: Flax's nn.gelu is the tanh approximation (OGBench's IQL baselines), where
# Keras' 'gelu' is the exact one.
_MORE_ACTIVATIONS = {"gelu_tanh": lambda x: keras.activations.gelu(x, approximate=True)}


def activation_function(name: str) -> Callable[[tf.Tensor], tf.Tensor]:
    """The activation named `name`: a Keras activation, or 'gelu_tanh'; ValueError for an unknown name."""
    return _MORE_ACTIVATIONS.get(name) or keras.activations.get(name)


SeededInitializer = Callable[[int], keras.initializers.Initializer]  # seed -> the initialiser of one member's kernel


def kernel_initializer(scheme: str, policy_mean: bool = False) -> SeededInitializer:
    """The kernel initialiser of `scheme` (one of KERNEL_INITS), per seed; `policy_mean` for the actor's mean layer."""
    if scheme == "orthogonal":
        return lambda seed: keras.initializers.Orthogonal(gain=math.sqrt(2.0), seed=seed)
    if scheme == "glorot_uniform":
        scale = POLICY_MEAN_GLOROT_SCALE if policy_mean else 1.0
        return lambda seed: keras.initializers.VarianceScaling(scale, mode="fan_avg", distribution="uniform", seed=seed)
    raise ValueError(f"kernel initialisation {scheme!r} is not one of {', '.join(KERNEL_INITS)}")


class EnsembleDense(keras.layers.Layer):
    """`members` independent Dense layers: [members, B, in] -> [members, B, out].

    Member k's kernel is what a plain Dense initialised by `initializer(seeds[k])` would hold (by default
    orthogonal with gain sqrt(2), the reference's initialisation), and its bias is zero. A single
    member is a plain Dense ([in, out] kernel, [B, in] inputs): its networks drop the member axis on the way
    in and add it back on the way out, so one seed runs the plain matmuls it would run without ensembles.
    """

    def __init__(self, units: int, seeds: Sequence[int], activation: Optional[str] = None,
                 initializer: SeededInitializer = kernel_initializer("orthogonal"), **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.seeds = list(seeds)
        self.activation = activation_function(activation)
        self.initializer = initializer

    def build(self, input_shape):
        fan_in = int(input_shape[-1])
        kernels = np.stack([
            self.initializer(seed)((fan_in, self.units)).numpy() for seed in self.seeds
        ])
        bias_shape = (len(self.seeds), 1, self.units)
        if len(self.seeds) == 1:
            kernels, bias_shape = kernels[0], (self.units,)
        self.kernel = self.add_weight(shape=kernels.shape, initializer=keras.initializers.Constant(kernels),
                                      name="kernel")
        self.bias = self.add_weight(shape=bias_shape, initializer="zeros", name="bias")

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        return self.activation(tf.matmul(inputs, self.kernel) + self.bias)  # batched over members when 3-D

    def member(self, index: int) -> tuple:
        """(kernel [in, out], bias [out]) of one member, as arrays."""
        if len(self.seeds) == 1:
            return self.kernel.numpy(), self.bias.numpy()
        return self.kernel[index].numpy(), self.bias[index, 0].numpy()


class EnsembleLayerNorm(keras.layers.Layer):
    """Layer normalisation over the features, with a scale and offset per member (Keras' LayerNormalization
    would share them across the member axis); epsilon 1e-6 as Flax's."""

    def __init__(self, members: int, epsilon: float = 1e-6, **kwargs):
        super().__init__(**kwargs)
        self.members, self.epsilon = members, epsilon

    def build(self, input_shape):
        units = int(input_shape[-1])
        shape = (units,) if self.members == 1 else (self.members, 1, units)
        self.scale = self.add_weight(shape=shape, initializer="ones", name="scale")
        self.offset = self.add_weight(shape=shape, initializer="zeros", name="offset")

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        mean, variance = tf.nn.moments(inputs, axes=[-1], keepdims=True)
        return (inputs - mean) * tf.math.rsqrt(variance + self.epsilon) * self.scale + self.offset


class _EnsembleModel(keras.Model):
    """Takes and returns a leading member axis; inside, a single member runs without it."""

    def __init__(self, members: int, name: str):
        super().__init__(name=name)
        self.members = members

    def build(self, *input_shapes):
        """Nothing to build from shapes: `__init__` builds the model by calling it on an example (Keras would
        otherwise try to trace a call on symbolic dict inputs, which initialising an `EnsembleDense` cannot)."""

    def _enter(self, x: tf.Tensor) -> tf.Tensor:
        return x[0] if self.members == 1 else x

    def _leave(self, y: tf.Tensor) -> tf.Tensor:
        return y[None] if self.members == 1 else y


def layer_seeds(seeds: Sequence[int], network: str, layer: int) -> List[int]:
    """Per member, the seed of layer `layer` (output heads come after the hidden layers) of the network named
    `network`, derived from the member's seed: no two layers of any networks or seeds start alike."""
    return [derived_seed(seed, network, layer) for seed in seeds]


def mlp(input_dim: int, hidden_dims: Sequence[int], activation: str, seeds: Sequence[int],
        prefix: str, layer_norm: bool = False, kernel_init: str = "orthogonal") -> keras.Sequential:
    """The hidden layers of an ensemble MLP named `prefix`, kernels started as `kernel_init` (one of KERNEL_INITS)
    says and seeded by `layer_seeds`; with `layer_norm`, each activation is followed by layer normalisation.

    A Sequential, not a Python list: Keras 3 does not expose layer lists to tf.train.Checkpoint.
    """
    layers = []
    for i, units in enumerate(hidden_dims):
        layers.append(EnsembleDense(units, layer_seeds(seeds, prefix, i), activation, kernel_initializer(kernel_init),
                                    name=f"{prefix}_hidden_{i}"))
        if layer_norm:
            layers.append(EnsembleLayerNorm(len(seeds), name=f"{prefix}_norm_{i}"))
    shape = (input_dim,) if len(seeds) == 1 else (None, input_dim)
    return keras.Sequential([keras.Input(shape), *layers], name=f"{prefix}_trunk")


def _encoded(encoder: Optional[Encoder], members: int, observations: Any, trains: bool = True) -> tf.Tensor:
    """Image observations [members, B, h, w, c] (or parts, each [members, B, ...]) through `encoder` ([members, B,
    F]), without a gradient into it unless it `trains` (an encoder another network trains); vectors as they are."""
    if encoder is None:
        return observations
    if members == 1:
        features = encoder(tf.nest.map_structure(lambda part: part[0], observations))[None]
    else:
        features = encoder(observations)
    return features if trains else tf.stop_gradient(features)


class ValueNetwork(_EnsembleModel):
    """V(s) per member: MLP with a scalar head, [members, B, obs] -> [members, B]; with an `encoder`, images
    [members, B, h, w, c] are encoded first (`input_dim` is then the encoder's features), by an encoder it trains
    or, `encoder_trains` False, one another network trains (its features then carry no gradient)."""

    def __init__(self, input_dim: int, hidden_dims: Sequence[int], activation: str, seeds: Sequence[int],
                 name="value", layer_norm: bool = False, kernel_init: str = "orthogonal",
                 encoder: Optional[Encoder] = None, encoder_trains: bool = True):
        super().__init__(len(seeds), name)
        self.encoder, self.encoder_trains = encoder, encoder_trains
        input_dim = encoder.features if encoder else input_dim
        self.trunk = mlp(input_dim, hidden_dims, activation, seeds, name, layer_norm, kernel_init)
        self.head = EnsembleDense(1, layer_seeds(seeds, name, len(hidden_dims)),
                                  initializer=kernel_initializer(kernel_init), name=f"{name}_out")
        self(encoder.example() if encoder else tf.zeros([len(seeds), 1, input_dim]))

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        inputs = _encoded(self.encoder, self.members, inputs, self.encoder_trains)
        return self._leave(tf.squeeze(self.head(self.trunk(self._enter(inputs))), -1))


class TwinCritic(keras.Model):
    """Two independent Q networks per member over concat(s, a); returns (Q1, Q2), each [members, B]. With an
    `encoder`, image observations are encoded once for both (as the FQL repository's critic shares its encoder)."""

    def __init__(self, observation_dim: int, action_dim: int, hidden_dims: Sequence[int], activation: str,
                 seeds: Sequence[int], name="critic", layer_norm: bool = False, kernel_init: str = "orthogonal",
                 encoder: Optional[Encoder] = None):
        super().__init__(name=name)
        self.encoder, self.members = encoder, len(seeds)
        observation_dim = encoder.features if encoder else observation_dim
        self.q1 = ValueNetwork(observation_dim + action_dim, hidden_dims, activation, seeds, name=f"{name}_q1",
                               layer_norm=layer_norm, kernel_init=kernel_init)
        self.q2 = ValueNetwork(observation_dim + action_dim, hidden_dims, activation, seeds,
                               name=f"{name}_q2", layer_norm=layer_norm, kernel_init=kernel_init)
        if encoder:
            self(encoder.example(), tf.zeros([len(seeds), 1, action_dim]))

    def build(self, *input_shapes):
        """As `_EnsembleModel.build`."""

    def call(self, observations: tf.Tensor, actions: tf.Tensor) -> tuple:
        inputs = tf.concat([_encoded(self.encoder, self.members, observations), actions], axis=-1)
        return self.q1(inputs), self.q2(inputs)


class GaussianActor(_EnsembleModel):
    """pi(a|s) = N(mean, exp(clip(log_std)) * temperature) with mean = tanh(Dense(MLP(s))), a state-independent
    std per member, learned, or fixed at 1 (log_std 0) with `constant_std`; with `tanh_mean=False` the mean is
    Dense(MLP(s)), which whoever acts clips to [-1, 1] (evaluation, exploration, the export). An `encoder` as the
    value network's.

    Dropout (kitchen/adroit) is stateless and seeded by the caller with one seed per member, so each member's
    checkpointed random generator drives its own masks and a resumed run repeats them.
    """

    def __init__(self, observation_dim: int, action_dim: int, hidden_dims: Sequence[int], activation: str,
                 seeds: Sequence[int], dropout_rate: Optional[float] = None, name="actor", constant_std: bool = False,
                 tanh_mean: bool = True, kernel_init: str = "orthogonal", encoder: Optional[Encoder] = None,
                 encoder_trains: bool = True):
        super().__init__(len(seeds), name)
        self.squash = tf.tanh if tanh_mean else tf.identity
        self.encoder, self.encoder_trains = encoder, encoder_trains
        observation_dim = encoder.features if encoder else observation_dim
        self.trunk = mlp(observation_dim, hidden_dims, activation, seeds, name, kernel_init=kernel_init)
        self.mean_head = EnsembleDense(action_dim, layer_seeds(seeds, name, len(hidden_dims)),
                                       initializer=kernel_initializer(kernel_init, policy_mean=True),
                                       name=f"{name}_mean")
        self.log_std = self.add_weight(shape=(len(seeds), 1, action_dim), initializer="zeros", name="log_std",
                                       trainable=not constant_std)
        self.dropout_rate = dropout_rate or 0.0
        self(encoder.example() if encoder else tf.zeros([len(seeds), 1, observation_dim]))

    def call(self, observations: tf.Tensor, dropout_seeds: Optional[tf.Tensor] = None) -> tf.Tensor:
        """The mean tanh(Dense(h)) (or Dense(h)); dropout only when seeds ([members, 2]) are given."""
        x = self._enter(_encoded(self.encoder, self.members, observations, self.encoder_trains))
        if dropout_seeds is None or self.dropout_rate == 0:
            return self._leave(self.squash(self.mean_head(self.trunk(x))))
        layer_seeds = _layer_seeds(dropout_seeds, len(self.trunk.layers))
        for i, layer in enumerate(self.trunk.layers):
            x = layer(x)
            # Per member, so that each member's masks are those it would draw alone.
            if self.members == 1:
                x = tf.nn.experimental.stateless_dropout(x, rate=self.dropout_rate, seed=layer_seeds[0][i])
            else:
                x = tf.stack([tf.nn.experimental.stateless_dropout(x[k], rate=self.dropout_rate, seed=seeds[i])
                              for k, seeds in enumerate(layer_seeds)])
        return self._leave(self.squash(self.mean_head(x)))

    def std(self) -> tf.Tensor:
        """exp(clip(log_std, -5, 2)), [members, 1, action_dim]."""
        return tf.exp(tf.clip_by_value(self.log_std, LOG_STD_MIN, LOG_STD_MAX))

    def distribution(self, observations: tf.Tensor, temperature: float = 1.0,
                     dropout_seeds: Optional[tf.Tensor] = None) -> tfd.Distribution:
        """The policy as a TFP distribution over [members, B, action_dim]; temperature 0 is the mean."""
        # A Gaussian over raw actions with its mean (tanh'd or linear), not a tanh-squashed distribution: a
        # squashed one trains badly with AWR (d3rlpy #171, CORL #38).
        return tfd.MultivariateNormalDiag(
            loc=self(observations, dropout_seeds=dropout_seeds), scale_diag=self.std() * temperature
        )


def _layer_seeds(dropout_seeds: tf.Tensor, num_layers: int) -> List[List[tf.Tensor]]:
    """Per member, one stateless seed per hidden layer, split from the member's seed."""
    members = dropout_seeds.shape[0]
    return [tf.unstack(tf.random.experimental.stateless_split(dropout_seeds[k], num=num_layers))
            for k in range(members)]
