"""Image encoders: uint8 images [B, height, width, channels] -> features [B, F], scaled by 1/255 inside.

One definition per encoder (`forward`: a function of its parameters), run on Keras weights in training
(`ImageEncoder`, one set per ensemble member) and on constants in the export, so both compute the same thing.

- 'impala_small': the IMPALA ResNet as the FQL repository (seohongpark/fql, utils/encoders.py, `impala_small`)
  and OGBench's agents (impls/utils/encoders.py) use it on 64x64 images: three stacks of 16/32/32 channels,
  each a 3x3 convolution, a 3x3 max-pool of stride 2 and one residual block (relu, conv, relu, conv, plus the
  input); a relu, then a 512-unit dense layer with GELU (tanh form, Flax's nn.gelu). Kernels Glorot uniform,
  biases zero, as Flax's defaults there.
- 'conv_small': three 3x3 convolutions of 32 channels (strides 2, 2, 1) with relu, then a 256-unit dense layer
  with GELU: far fewer operations than impala_small (its first convolution runs at a quarter of the resolution),
  for small images on CPUs.

Observations of parts (`data/parts.py`) go through a `PartsEncoder`: an encoder of the kind for each image part,
each vector part as it is, concatenated in the parts' order (`concatenated`).
"""

import math
from typing import Callable, Dict, Mapping, Sequence, Tuple

import keras
import numpy as np
import tensorflow as tf

from iql_tf.data.parts import Part
from iql_tf.options import ENCODERS
from iql_tf.seeding import derived_seed

_IMPALA_STACKS = (16, 32, 32)
_SMALL_CONVS = ((32, 2), (32, 2), (32, 1))
FEATURES = {"impala_small": 512, "conv_small": 256}


def _gelu(x: tf.Tensor) -> tf.Tensor:
    return keras.activations.gelu(x, approximate=True)


def parameter_shapes(kind: str, image_shape: Sequence[int]) -> Dict[str, Tuple[int, ...]]:
    """The shape of every parameter of encoder `kind` for images of `image_shape` [height, width, channels]."""
    height, width, channels = image_shape
    shapes: Dict[str, Tuple[int, ...]] = {}

    def conv(name: str, inputs: int, outputs: int) -> None:
        shapes[f"{name}/kernel"], shapes[f"{name}/bias"] = (3, 3, inputs, outputs), (outputs,)

    if kind == "impala_small":
        for index, size in enumerate(_IMPALA_STACKS):
            conv(f"stack{index}", channels, size)
            conv(f"stack{index}_residual_a", size, size)
            conv(f"stack{index}_residual_b", size, size)
            channels, height, width = size, math.ceil(height / 2), math.ceil(width / 2)
    elif kind == "conv_small":
        for index, (size, stride) in enumerate(_SMALL_CONVS):
            conv(f"conv{index}", channels, size)
            channels, height, width = size, math.ceil(height / stride), math.ceil(width / stride)
    else:
        raise ValueError(f"encoder {kind!r} is not one of {', '.join(ENCODERS)}")
    shapes["features/kernel"], shapes["features/bias"] = (height * width * channels, FEATURES[kind]), (FEATURES[kind],)
    return shapes


def forward(kind: str, parameters: Mapping[str, tf.Tensor], images: tf.Tensor) -> tf.Tensor:
    """Encoder `kind` with `parameters` (keyed as `parameter_shapes`) on uint8 `images` [B, h, w, c]: [B, F]."""

    def conv(name: str, x: tf.Tensor, stride: int = 1) -> tf.Tensor:
        return tf.nn.conv2d(x, parameters[f"{name}/kernel"], stride, "SAME") + parameters[f"{name}/bias"]

    x = tf.cast(images, tf.float32) / 255.0
    if kind == "impala_small":
        for index in range(len(_IMPALA_STACKS)):
            x = tf.nn.max_pool2d(conv(f"stack{index}", x), 3, 2, "SAME")
            block = conv(f"stack{index}_residual_a", tf.nn.relu(x))
            x = x + conv(f"stack{index}_residual_b", tf.nn.relu(block))
        x = tf.nn.relu(x)
    else:
        for index, (_, stride) in enumerate(_SMALL_CONVS):
            x = tf.nn.relu(conv(f"conv{index}", x, stride))
    x = tf.reshape(x, [-1, int(np.prod(x.shape[1:]))])
    return _gelu(tf.matmul(x, parameters["features/kernel"]) + parameters["features/bias"])


class ImageEncoder(keras.layers.Layer):
    """Encoder `kind` of every ensemble member: images [members, B, h, w, c] -> [members, B, F], each member with
    its own parameters (a single member: [B, h, w, c] -> [B, F], as the networks call it after dropping the
    member axis). Kernels start Glorot uniform, seeded per member and parameter from the member's seed and the
    encoder's `name`; biases zero."""

    def __init__(self, kind: str, image_shape: Sequence[int], seeds: Sequence[int], name: str):
        super().__init__(name=name)
        self.kind, self.members = kind, len(seeds)
        self.image_shape, self.features = tuple(image_shape), FEATURES[kind]
        self.parameters_by_name = {}
        for index, (key, shape) in enumerate(parameter_shapes(kind, image_shape).items()):
            if key.endswith("/bias"):
                values = np.zeros((self.members, *shape), np.float32)
            else:
                values = np.stack([keras.initializers.GlorotUniform(derived_seed(seed, name, index))(shape).numpy()
                                   for seed in seeds])
            single = self.members == 1
            self.parameters_by_name[key] = self.add_weight(
                shape=values.shape[1:] if single else values.shape,
                initializer=keras.initializers.Constant(values[0] if single else values), name=key.replace("/", "_"))
            # An attribute each, for tf.train.Checkpoint sees a Keras layer's attributes, not its dicts: the target
            # critics' encoder, which no optimiser holds, is saved and restored only so.
            setattr(self, key.replace("/", "_"), self.parameters_by_name[key])

    def call(self, images: tf.Tensor) -> tf.Tensor:
        if self.members == 1:
            return forward(self.kind, self.parameters_by_name, images)
        return tf.stack([forward(self.kind, self.member_parameters(k), images[k]) for k in range(self.members)])

    def example(self) -> tf.Tensor:
        """A batch of one black image per member, [members, 1, h, w, c] (what builds a network)."""
        return tf.zeros([self.members, 1, *self.image_shape], tf.uint8)

    def member_parameters(self, member: int) -> Dict[str, tf.Tensor]:
        """One member's parameters, keyed as `parameter_shapes`."""
        if self.members == 1:
            return dict(self.parameters_by_name)
        return {key: value[member] for key, value in self.parameters_by_name.items()}

    def member_arrays(self, member: int) -> Dict[str, np.ndarray]:
        """One member's parameters as arrays (what the export makes constants of)."""
        return {key: np.asarray(value) for key, value in self.member_parameters(member).items()}


def concatenated(parts: Sequence[Part], image_features: Callable[[str, tf.Tensor], tf.Tensor],
                 observations: Mapping[str, tf.Tensor]) -> tf.Tensor:
    """The features of observations of `parts`: each image part's by `image_features(name, images)`, each vector
    part as it is, concatenated in the parts' order."""
    return tf.concat([image_features(part.name, observations[part.name]) if part.image else
                      tf.cast(observations[part.name], tf.float32) for part in parts], axis=-1)


class PartsEncoder(keras.layers.Layer):
    """Observations of `parts` (images stacked as the networks take them) -> features, with an `ImageEncoder` of
    `kind` per image part (named NAME_PART) and the vector parts as they are; members as `ImageEncoder`'s."""

    def __init__(self, kind: str, parts: Sequence[Part], seeds: Sequence[int], name: str):
        super().__init__(name=name)
        self.kind, self.parts, self.members = kind, list(parts), len(seeds)
        self.image_encoders = {}
        for part in self.parts:
            if part.image:  # an attribute each (tf.train.Checkpoint sees a Keras layer's attributes, not its dicts)
                self.image_encoders[part.name] = ImageEncoder(kind, part.shape, seeds, f"{name}_{part.name}")
                setattr(self, f"encoder_{part.name}", self.image_encoders[part.name])
        self.features = sum(FEATURES[kind] if part.image else part.shape[0] for part in self.parts)

    def call(self, observations: Mapping[str, tf.Tensor]) -> tf.Tensor:
        return concatenated(self.parts, lambda name, images: self.image_encoders[name](images), observations)

    def example(self) -> Dict[str, tf.Tensor]:
        """A batch of one zero observation per member, each part [members, 1, ...]."""
        return {part.name: tf.zeros([self.members, 1, *part.shape], part.dtype) for part in self.parts}

    def member_arrays(self, member: int) -> Dict[str, np.ndarray]:
        """One member's parameters as arrays, keyed PART/PARAMETER."""
        return {f"{name}/{key}": value for name, encoder in self.image_encoders.items()
                for key, value in encoder.member_arrays(member).items()}
