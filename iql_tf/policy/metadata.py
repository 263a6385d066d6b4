"""`assets/metadata.json` of an exported policy: one schema for the exporter and every reader (evaluation,
policy rollouts, deployment code), and what it says of the data (`data_record`). TensorFlow-free, so readers
that only need the metadata stay fast."""

import dataclasses
import math
import pathlib
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional

from iql_tf import json_records
from iql_tf.data import parts as parts_lib
from iql_tf.data.transitions import stacked_shape
from iql_tf.errors import UserError

if TYPE_CHECKING:
    from iql_tf.data.metadata import DatasetMetadata
    from iql_tf.data.preprocessing import Preprocessing

FORMAT_VERSION = 4
IMAGES_VERSION = 3
# What an older format lacks: format 1 (iql-tf 0.5 and earlier) had no ONNX model, 1 and 2 no images, 3 no parts.
_IMAGE_FIELDS = {"image_shape": None, "frame_stack": 1}  # what a policy of vectors leaves out (format 2)
_PARTS_FIELDS = {"observation_parts": None}  # what a policy of one array leaves out (formats 2 and 3)
_OLDER = {1: {"onnx": None, **_IMAGE_FIELDS, **_PARTS_FIELDS}, 2: {**_IMAGE_FIELDS, **_PARTS_FIELDS},
          IMAGES_VERSION: _PARTS_FIELDS}
METADATA_PATH = pathlib.Path("assets") / "metadata.json"
TFLITE_FILE = "policy.tflite"
ONNX_FILE = "policy.onnx"
_FIX = "export the policy again (re-run the training command: a finished run only exports)"


@dataclasses.dataclass(frozen=True)
class PolicyMetadata:
    """What a deployed policy needs to be fed and judged: its environment, observation layout and action
    bounds, and where it came from."""

    env_id: Optional[str]  # None when the dataset named no environment
    env_kwargs: Dict[str, Any]
    max_episode_steps: Optional[int]
    observation_keys: Optional[List[str]]  # flattening order of dict observations; None for Box
    observation_dim: int  # 0 for observations of parts
    action_dim: int
    action_low: List[float]  # serving_default returns actions in [action_low, action_high]
    action_high: List[float]
    observation_normalization: Optional[Dict[str, List[float]]]  # mean/std applied inside the model, or None
    ref_min_score: Optional[float]
    ref_max_score: Optional[float]
    dataset: str
    dataset_checksum: str
    seed: int
    step: int  # gradient updates the policy was trained with
    evaluation: Dict[str, float]  # the last evaluation ({} when the run had none)
    gin_config: str
    tflite: Optional[str] = TFLITE_FILE  # the TensorFlow Lite model beside the SavedModel
    onnx: Optional[str] = ONNX_FILE  # the ONNX model beside it (None in exports of iql-tf 0.5 and earlier)
    # Image observations: [height, width, channels] of one frame (observation_dim is its size); None: vectors.
    image_shape: Optional[List[int]] = None
    # Frames stacked along the channels, oldest first: the policy takes uint8 [B, height, width, frame_stack *
    # channels] (`envs.stack_frames` builds them from an environment's frames).
    frame_stack: int = 1
    # The file's format: a policy of vectors is written in format 2, as before images, and one of images in format
    # 3, so that an earlier iql-tf reads them (None: the format the metadata is written in).
    format_version: Optional[int] = None
    # Observations of parts (`data/parts.py`): [{name, shape, dtype}] of one frame each, in order; the policy takes
    # one input per part, named as the part (images stacked as `frame_stack` says). None: one array.
    observation_parts: Optional[List[Dict[str, Any]]] = None

    def __post_init__(self):
        if self.format_version is None:
            version = FORMAT_VERSION if self.observation_parts else IMAGES_VERSION if self.image_shape else 2
            object.__setattr__(self, "format_version", version)

    def to_json(self) -> str:
        return json_records.to_json(self, _without_images)

    @property
    def input_shape(self) -> Optional[List[int]]:
        """What the policy takes per observation when it takes images: one frame, or a stack of them."""
        return input_shape_of(vars(self))

    @property
    def input_parts(self) -> Optional[List[parts_lib.Part]]:
        """The inputs of a policy of parts, images stacked; None for one array."""
        return input_parts_of(vars(self))


def agent_inputs(record: Mapping[str, Any]) -> Dict[str, Any]:
    """What `IQLAgent` takes of the observations a record describes: `image_shape` and `parts` (None each for
    vectors)."""
    return {"image_shape": input_shape_of(record), "parts": input_parts_of(record)}


def input_parts_of(record: Mapping[str, Any]) -> Optional[List[parts_lib.Part]]:
    """The parts a policy takes (images stacked), from its record (`data_record`, or PolicyMetadata's fields); None
    for one array."""
    records = record.get("observation_parts")
    return parts_lib.stacked(parts_lib.from_records(records), record["frame_stack"]) if records else None


def input_shape_of(record: Mapping[str, Any]) -> Optional[List[int]]:
    """The images a policy takes per observation, from its record (`data_record`, or PolicyMetadata's fields):
    one frame, or a stack of them; None for vectors (whose records have no image fields)."""
    image_shape = record.get("image_shape")
    return None if image_shape is None else stacked_shape(image_shape, record["frame_stack"])


def _without_images(fields: Dict[str, Any]) -> Dict[str, Any]:
    """No image fields in the formats before images, no parts before parts."""
    left_out = {**(_IMAGE_FIELDS if fields["format_version"] < IMAGES_VERSION else {}),
                **(_PARTS_FIELDS if fields["format_version"] < FORMAT_VERSION else {})}
    return {name: value for name, value in fields.items() if name not in left_out}


def read_policy_metadata(export_dir: "str | pathlib.Path") -> PolicyMetadata:
    """The metadata of an exported policy directory (DIR/export/policy); a missing or malformed file is a
    UserError naming it."""
    path = pathlib.Path(export_dir).expanduser() / METADATA_PATH
    if not path.is_file():
        raise UserError(f"{path}: not found; give an exported policy, RUN_DIR/export/policy "
                        "(RUN_DIR/export/seed_K/policy for a run of several seeds)")
    return json_records.from_json(PolicyMetadata, path.read_text(), str(path), _FIX, FORMAT_VERSION,
                                  older=_OLDER)


def data_record(dataset: "DatasetMetadata", preprocessing: "Preprocessing", frame_stack: int = 1) -> Dict[str, Any]:
    """The fields of `PolicyMetadata` that the data and its preprocessing decide (the environment, the
    observation layout, the action bounds, the normalisation, the reference scores, the dataset). A run keeps
    them in each checkpoint's record too, so that a policy can be exported from a checkpoint alone."""
    if dataset.parts:
        inputs = dict(observation_parts=[part.record() for part in dataset.parts], frame_stack=frame_stack)
    elif dataset.images:  # (a checkpoint of vectors keeps the record it had before images)
        inputs = dict(image_shape=list(dataset.observation_shape), frame_stack=frame_stack)
    else:
        inputs = {}
    return dict(env_id=dataset.env_id, env_kwargs=dataset.env_kwargs, max_episode_steps=dataset.max_episode_steps,
                observation_keys=dataset.observation_keys,
                observation_dim=0 if dataset.parts else math.prod(dataset.observation_shape),
                action_dim=math.prod(dataset.action_shape), action_low=preprocessing.action_low.tolist(),
                action_high=preprocessing.action_high.tolist(),
                observation_normalization=preprocessing.describe()["observation_normalization"],
                ref_min_score=dataset.ref_min_score, ref_max_score=dataset.ref_max_score,
                dataset=dataset.source, dataset_checksum=dataset.content_checksum, **inputs)
