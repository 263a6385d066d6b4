"""The trained policy as a SavedModel (and a TensorFlow Lite model) that deployment code loads with
TensorFlow alone.

`DIR/export/policy/` (one per seed, `DIR/export/seed_K/policy/`, for a run of several seeds) holds:
- a SavedModel with the signatures `serving_default` (raw observations -> deterministic actions in the
  environment's units; image observations as the camera gives them, uint8 [B, height, width, channels];
  observations of parts as one input per part, named as the part) and
  `sample` (observations, temperature, seed -> sampled actions, clipped to the
  action bounds);
- `policy.tflite`, `serving_default` for TensorFlow Lite / LiteRT;
- `policy.onnx`, `serving_default` as an ONNX model (opset `ONNX_OPSET`, converted by tf2onnx) for onnxruntime
  and the deployment stacks that take ONNX: the same input `observations` and output `actions`;
- `assets/metadata.json` (`PolicyMetadata`);
- `SHA256SUMS`, the sha256 of every other file, checked before loading (`checks.py`).
The weights, the observation normalisation and the action bounds are constants of the graph, not variables:
that keeps the model self-contained and lets TFLite and tf2onnx convert it (variables come out as NaN with XNNPACK).
The directory is replaced atomically, so it holds a complete export at every instant.
"""

import pathlib
from typing import TYPE_CHECKING, Any, Dict, Optional, Sequence

import numpy as np
import tensorflow as tf

from iql_tf import encoders, files
from iql_tf.data.parts import Part
from iql_tf.errors import first_line
from iql_tf.data.preprocessing import Preprocessing
from iql_tf.networks import LOG_STD_MAX, LOG_STD_MIN, activation_function
from iql_tf.policy.checks import write_checksums
from iql_tf.policy.metadata import METADATA_PATH, ONNX_FILE, TFLITE_FILE, PolicyMetadata

if TYPE_CHECKING:
    from iql_tf.agent import IQLAgent

# ONNX Runtime runs opset 17 since 1.13 (2022), and so do most deployment runtimes that take ONNX.
ONNX_OPSET = 17

# Activations written otherwise in the export. Keras' (and TensorFlow's) exact GELU is x/2 erfc(-x/sqrt 2), and
# tf2onnx converts no Erfc: x/2 (1 + erf(x/sqrt 2)) is the same function within float32 rounding (1e-7 absolute).
_EXPORTED_ACTIVATIONS = {"gelu": lambda x: 0.5 * x * (1.0 + tf.math.erf(x * np.float32(1 / np.sqrt(2))))}


class ExportedPolicy(tf.Module):
    """The actor of one member with its preprocessing, as graph constants behind fixed input signatures."""

    def __init__(self, weights: Dict[str, np.ndarray], activation: str, preprocessing: Preprocessing,
                 tanh_mean: bool = True, encoder: Optional[str] = None, image_shape: Optional[Sequence[int]] = None,
                 parts: Optional[Sequence[Part]] = None):
        super().__init__(name="policy")
        self._parts = list(parts) if parts else None
        self._squash = tf.tanh if tanh_mean else tf.identity
        # numpy, not tensors: each is turned into a constant while tracing, so none becomes a captured variable.
        self._weights = weights
        self._activation = _EXPORTED_ACTIVATIONS.get(activation) or activation_function(activation)
        self._preprocessing = preprocessing
        self._encoder = encoder
        sampling = [tf.TensorSpec([], tf.float32, name="temperature"), tf.TensorSpec([2], tf.int32, name="seed")]
        if self._parts:  # an input per part, named as the part
            specs = [tf.TensorSpec([None, *part.shape], part.dtype, name=part.name) for part in self._parts]
            names = [part.name for part in self._parts]
            self.act = tf.function(lambda *inputs: self._act(dict(zip(names, inputs))), input_signature=specs)
            self.sample = tf.function(lambda *inputs: self._sample(dict(zip(names, inputs[:-2])), *inputs[-2:]),
                                      input_signature=specs + sampling)
            return
        if image_shape is not None:  # uint8 images, as the camera gives them: scaled inside
            observations = tf.TensorSpec([None, *image_shape], tf.uint8, name="observations")
        else:
            observations = tf.TensorSpec([None, weights["kernel_0"].shape[0]], tf.float32, name="observations")
        self.act = tf.function(self._act, input_signature=[observations])
        self.sample = tf.function(self._sample, input_signature=[observations, *sampling])

    def _mean(self, observations: Any) -> tf.Tensor:
        """tanh(Dense(MLP(normalised s))) (or Dense(...) without `tanh_mean`: `_to_env` clips it)."""
        parameters = {key[len("encoder/"):]: tf.constant(value) for key, value in self._weights.items()
                      if key.startswith("encoder/")}
        if self._parts:
            x = encoders.concatenated(self._parts, lambda name, images: encoders.forward(
                self._encoder, {key[len(name) + 1:]: value for key, value in parameters.items()
                                if key.startswith(f"{name}/")}, images), observations)
        elif self._encoder is not None:
            x = encoders.forward(self._encoder, parameters, observations)
        else:
            x = self._preprocessing.observations(observations)
        num_layers = sum(name.startswith("kernel_") for name in self._weights)
        for i in range(num_layers):
            x = tf.matmul(x, tf.constant(self._weights[f"kernel_{i}"])) + tf.constant(self._weights[f"bias_{i}"])
            if i < num_layers - 1:
                x = self._activation(x)
        return self._squash(x)

    def _to_env(self, unit_actions: tf.Tensor) -> tf.Tensor:
        return tf.cast(self._preprocessing.actions_to_env(unit_actions, tf.clip_by_value), tf.float32)

    def _act(self, observations: Any) -> Dict[str, tf.Tensor]:
        return {"actions": self._to_env(self._mean(observations))}

    def _sample(self, observations: Any, temperature: tf.Tensor, seed: tf.Tensor) -> Dict[str, tf.Tensor]:
        mean = self._mean(observations)
        std = tf.exp(tf.clip_by_value(tf.constant(self._weights["log_std"]), LOG_STD_MIN, LOG_STD_MAX))
        noise = tf.random.stateless_normal(tf.shape(mean), seed)
        return {"actions": self._to_env(mean + std * temperature * noise)}


def export_policy(weights: Dict[str, np.ndarray], activation: str, preprocessing: Preprocessing,
                  directory: "str | pathlib.Path", metadata: PolicyMetadata, tanh_mean: bool = True,
                  encoder: Optional[str] = None) -> None:
    """Writes the SavedModel, the TFLite and ONNX models, the metadata and SHA256SUMS to `directory`, replacing an
    earlier export. `encoder`: the kind of the image encoder in `weights` (metadata.input_shape its images, or
    metadata.input_parts the parts)."""
    module = ExportedPolicy(weights, activation, preprocessing, tanh_mean, encoder, metadata.input_shape,
                            metadata.input_parts)
    with files.atomic_directory(directory, replace=True) as staging:
        tf.saved_model.save(module, str(staging), signatures={"serving_default": module.act, "sample": module.sample})
        converter = tf.lite.TFLiteConverter.from_saved_model(str(staging), signature_keys=["serving_default"])
        (staging / TFLITE_FILE).write_bytes(converter.convert())
        _write_onnx(module, staging / ONNX_FILE)
        (staging / METADATA_PATH).parent.mkdir(exist_ok=True)
        (staging / METADATA_PATH).write_text(metadata.to_json())
        write_checksums(staging)


def _write_onnx(module: ExportedPolicy, path: pathlib.Path) -> None:
    """`module.act` as an ONNX model at `path`. tf2onnx only logs the ops it cannot convert and writes a model that
    no runtime loads: ONNX's checker refuses it here, before the export is complete."""
    import onnx
    import tf2onnx  # tf2onnx's graph rewriter is loaded only where an export is written

    model, _ = tf2onnx.convert.from_function(module.act, input_signature=module.act.input_signature, opset=ONNX_OPSET)
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as error:
        raise RuntimeError(f"tf2onnx converted the policy into an invalid ONNX model: {first_line(error)}") from error
    path.write_bytes(model.SerializeToString())


def export_member(agent: "IQLAgent", member: int, preprocessing: Preprocessing, directory: "str | pathlib.Path",
                  data_record: Dict[str, Any], seed: int, evaluation: Dict[str, float], gin_config: str) -> None:
    """Exports member `member` of `agent` at its current step: the trainer's export and the API's alike.
    `data_record` is `metadata.data_record` of the training data (or a checkpoint's copy of it)."""
    metadata = PolicyMetadata(**data_record, seed=seed, step=int(agent.step), evaluation=evaluation,
                              gin_config=gin_config)
    export_policy(agent.member_weights(member), agent.settings.activation, preprocessing, directory, metadata,
                  tanh_mean=agent.settings.tanh_mean, encoder=agent.settings.encoder if agent.takes_images else None)
