"""An exported policy loaded as a `Policy`, for `iql-evaluate` and `iql-generate --kind=policy`: its metadata
read, its files and ops checked (`checks.py`), then its `serving_default` signature loaded with TensorFlow, or
its `policy.onnx` with onnxruntime when the path names that file (to evaluate the model a robot will run).

An ONNX model is a graph of ONNX's standard operators, which onnxruntime runs without code from the file (custom
operators run only when the caller registers their library, which this never does), so it needs no op check."""

import pathlib
from typing import Any, Dict, Tuple

import numpy as np

from iql_tf.data.parts import is_parts
from iql_tf.errors import UserError, first_line
from iql_tf.policy import Policy
from iql_tf.policy.checks import CHECKSUMS_FILE, check_export, verify_checksums
from iql_tf.policy.metadata import ONNX_FILE, PolicyMetadata, read_policy_metadata

ONNX_RUNTIME = "onnxruntime==1.32.0"


def load_policy(path: "str | pathlib.Path", trust: bool = False) -> Tuple[Policy, PolicyMetadata]:
    """The deterministic policy of an export (`serving_default` of the SavedModel in folder `path`, or the ONNX
    model when `path` is a `.onnx` file of an export) and its metadata.

    Anything that is not an export is a UserError saying what to pass instead; a damaged export, or one that
    would run ops iql-tf's exports never use (unless `trust`), is one line naming the file or the ops.
    """
    path = pathlib.Path(path).expanduser()
    if path.suffix == ".onnx":
        return _load_onnx(path)
    if not (path / "saved_model.pb").is_file():
        raise UserError(f"{path}: no SavedModel there (saved_model.pb not found); give the exported policy "
                        f"of a training run, RUN_DIR/export/policy (or its {ONNX_FILE})")
    metadata = read_policy_metadata(path)
    check_export(path, trust)
    import tensorflow as tf  # only loading needs TensorFlow

    try:
        serve = tf.saved_model.load(str(path)).signatures["serving_default"]
    except (OSError, ValueError, KeyError, IndexError, tf.errors.OpError) as error:  # IndexError: a truncated file
        raise UserError(f"{path}: cannot load the SavedModel's serving_default signature "
                        f"({first_line(error)}); export the policy again") from error
    return lambda observations: serve(**{name: tf.constant(value) for name, value in _feeds(
        metadata, observations).items()})["actions"].numpy(), metadata


def _input_dtypes(metadata: PolicyMetadata) -> Dict[str, type]:
    """The policy's inputs and what each takes: 'observations' (uint8 images, or float32 vectors), or a part each."""
    if metadata.observation_parts:
        return {part["name"]: np.dtype(part["dtype"]).type for part in metadata.observation_parts}
    return {"observations": np.uint8 if metadata.image_shape else np.float32}


def _feeds(metadata: PolicyMetadata, observations: Any) -> Dict[str, np.ndarray]:
    """Observations (a dict of parts for a policy of parts) as the policy's named inputs."""
    dtypes = _input_dtypes(metadata)
    if metadata.observation_parts:
        missing = [name for name in dtypes if not is_parts(observations) or name not in observations]
        if missing:
            raise UserError(f"observations: missing the part(s) {', '.join(missing)}; the policy takes a dict of the "
                            f"parts {', '.join(dtypes)}")
        return {name: np.asarray(observations[name], dtype) for name, dtype in dtypes.items()}
    return {"observations": np.asarray(observations, dtypes["observations"])}


def _load_onnx(path: pathlib.Path) -> Tuple[Policy, PolicyMetadata]:
    """The ONNX model of an export run by onnxruntime (its metadata is the export folder's, around it)."""
    if not path.is_file():
        raise UserError(f"{path}: not found; give the ONNX model of an export, RUN_DIR/export/policy/{ONNX_FILE}")
    if (path.parent / CHECKSUMS_FILE).is_file():  # a damaged file is named as such before anything parses it
        verify_checksums(path.parent)
    try:
        import onnxruntime
    except ImportError as error:
        raise UserError(f"{path}: running an ONNX model needs onnxruntime: pip install '{ONNX_RUNTIME}'") from error
    try:
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own types (InvalidProtobuf, Fail, InvalidGraph, ...)
        raise UserError(f"{path}: not an ONNX model onnxruntime can run ({first_line(error)}); give the "
                        f"{ONNX_FILE} of an export, or export the policy again") from error
    inputs = [node.name for node in session.get_inputs()]
    outputs = [node.name for node in session.get_outputs()]
    metadata = read_policy_metadata(path.parent)
    expected = list(_input_dtypes(metadata))
    if inputs != expected or outputs != ["actions"]:
        raise UserError(f"{path}: not a policy exported by iql-tf with the metadata beside it (inputs {inputs}, "
                        f"outputs {outputs}; this export takes {expected} and returns 'actions')")

    def act(observations: Any) -> np.ndarray:
        return session.run(["actions"], _feeds(metadata, observations))[0]

    return act, metadata


def require_environment(directory: "str | pathlib.Path", metadata: PolicyMetadata) -> str:
    """The env id an export was trained for; one that names none is a UserError saying how to give one."""
    if metadata.env_id is None:
        raise UserError(
            f"{directory}: the policy's dataset named no environment, so its metadata has none to roll it out in; "
            f"give one: `iql-evaluate {directory} --env_id=ENV` (no retraining needed), or bind "
            "make_dataset.env_id when training"
        )
    return metadata.env_id
