"""`DIR/metadata.json` of a converted dataset: what the shards hold and how to evaluate on them.

Written by the converter, read by the loader and by evaluation (env id and kwargs, flattening order,
action bounds, reference scores). Infinite bounds are stored as the strings "inf" / "-inf".
"""

import dataclasses
import math
import pathlib
from typing import Any, Dict, List, Optional, Sequence

from iql_tf import json_records
from iql_tf.data import parts as parts_lib
from iql_tf.data import storage
from iql_tf.data.transitions import stacked_shape
from iql_tf.errors import UserError

# 3: statistics; 4: content_sha256; 5: stream_of; 6: observation_dtype; 7: image shards hold each frame once
# (`shards.END_FRAMES`); 8: observations of parts (`observation_parts`).
FORMAT_VERSION = 8
FRAMES_ONCE_VERSION = 7
IMAGES_VERSION = 6  # the first format with images (their next frames stored whole, a second time)
# Versions still read, with what their files lack: a version 3 dataset is identified by its shards' bytes.
_BEFORE_IMAGES = {"observation_dtype": "float32"}
_BEFORE_PARTS = {"observation_parts": None}
_OLDER_VERSIONS = {3: {"content_sha256": None, "stream_of": None, **_BEFORE_IMAGES, **_BEFORE_PARTS},
                   4: {"stream_of": None, **_BEFORE_IMAGES, **_BEFORE_PARTS}, 5: {**_BEFORE_IMAGES, **_BEFORE_PARTS},
                   IMAGES_VERSION: _BEFORE_PARTS, FRAMES_ONCE_VERSION: _BEFORE_PARTS}
PARTS = "parts"
OBSERVATION_DTYPES = ("float32", "uint8", PARTS)  # vectors; images [height, width, channels]; parts
METADATA_FILE = "metadata.json"
_BOUND_FIELDS = ("observation_low", "observation_high", "action_low", "action_high")


@dataclasses.dataclass(frozen=True)
class ShardInfo:
    """One TFRecord shard: its file name inside the dataset directory, size and sha256."""

    file: str
    num_transitions: int
    sha256: str


@dataclasses.dataclass(frozen=True)
class DatasetMetadata:
    """Everything a converted dataset records besides its arrays (see docs/data.md)."""

    source: str  # the Minari id or file path the user gave
    source_checksum: str  # sha256 over the source file(s)
    env_id: Optional[str]  # evaluation environment (Minari's eval_env_spec where present), None if unknown
    env_kwargs: Dict[str, Any]
    max_episode_steps: Optional[int]
    observation_keys: Optional[List[str]]  # flattening order of dict observations, None for Box
    observation_shape: List[int]
    action_shape: List[int]
    observation_low: List[float]
    observation_high: List[float]
    action_low: List[float]  # the action space, in the units the shards store actions in
    action_high: List[float]
    num_transitions: int
    num_episodes: int
    ref_min_score: Optional[float]
    ref_max_score: Optional[float]
    shards: List[ShardInfo]
    # What preprocessing needs from the whole dataset, computed once at conversion: observation_mean and
    # observation_std (per dimension), trajectory_return_min / _max, trajectory_length_max (what frame stacks are
    # checked against; absent from conversions by an earlier iql-tf), and the converted bytes (shards_bytes).
    statistics: Dict[str, Any]
    # sha256 of the converted arrays themselves (`transitions.content_sha256`): what identifies the data, whatever
    # the bytes of its shards (None for a version 3 dataset).
    content_sha256: Optional[str] = None
    # An RLDS dataset streamed as it is, without shards of its own: where it is and how its steps are read
    # (`rlds_source.stream_rows`); None for shards.
    stream_of: Optional[Dict[str, Any]] = None
    # How observations are stored: 'float32' vectors, 'uint8' images [height, width, channels], or 'parts'.
    observation_dtype: str = "float32"
    # The file's format: a dataset of vectors is written in format 5, as before images, and one of images in format
    # 7, so that an earlier iql-tf sharing the cache reads them (None: the format the metadata is written in).
    format_version: Optional[int] = None
    # Observations of parts (`parts.py`): [{name, shape, dtype}] in order, observation_shape and the observation
    # bounds then empty; None for one array.
    observation_parts: Optional[List[Dict[str, Any]]] = None

    def __post_init__(self):
        if self.format_version is None:
            version = {"uint8": FRAMES_ONCE_VERSION, PARTS: FORMAT_VERSION}.get(self.observation_dtype, 5)
            object.__setattr__(self, "format_version", version)

    def to_json(self) -> str:
        return json_records.to_json(self, _encoded)

    @classmethod
    def from_json(cls, text: str, where: str, fix: str = "re-run the conversion") -> "DatasetMetadata":
        """Parses and checks the JSON; any problem is a UserError naming `where` (and the field)."""
        metadata = json_records.from_json(cls, text, where, fix, FORMAT_VERSION, _decode, _OLDER_VERSIONS)
        metadata.check(where, fix)
        return metadata

    def check(self, where: str, fix: str) -> None:
        """Internal consistency: shapes, bounds and counts agree with each other."""
        columns = 0 if self.observation_parts else _size(self.observation_shape)
        problems = [
            ("observation_low", len(self.observation_low) != columns),
            ("observation_high", len(self.observation_high) != columns),
            ("action_low", len(self.action_low) != _size(self.action_shape)),
            ("action_high", len(self.action_high) != _size(self.action_shape)),
            ("action_high", not all(math.isfinite(low) and math.isfinite(high) and low < high
                                    for low, high in zip(self.action_low, self.action_high))),
            ("num_transitions", self.stream_of is None and self.num_transitions != sum(
                s.num_transitions for s in self.shards)),
            ("num_transitions", self.num_transitions <= 0),
            ("num_episodes", not 0 < self.num_episodes <= self.num_transitions),
            ("observation_dtype", self.observation_dtype not in OBSERVATION_DTYPES or
             (self.observation_dtype == "uint8") != (len(self.observation_shape) == 3)),
            ("observation_parts", (self.observation_dtype == PARTS) != bool(self.observation_parts) or
             bool(self.observation_parts) and (self.observation_shape != [] or not self._parts_valid())),
        ]
        for field, wrong in problems:
            if wrong:
                raise UserError(f"{where}: field {field!r} disagrees with the shapes, bounds or shard counts; {fix}")

    def _parts_valid(self) -> bool:
        try:
            described = parts_lib.from_records(self.observation_parts)
        except (KeyError, TypeError):
            return False
        return any(part.image for part in described) and all(
            not parts_lib.bad_name(part.name) and len(part.shape) == (3 if part.image else 1) and
            part.dtype in ("uint8", "float32") for part in described) and len({p.name for p in described}) == len(
            described)

    @property
    def images(self) -> bool:
        """Whether the observations are images (uint8 [height, width, channels]) or hold one (parts)."""
        return self.observation_dtype in ("uint8", PARTS)

    @property
    def parts(self) -> Optional[List[parts_lib.Part]]:
        """The parts of observations of parts, in order; None for one array."""
        return parts_lib.from_records(self.observation_parts) if self.observation_parts else None

    def observation_shapes(self, frame_stack: int = 1) -> Any:
        """One observation's shape as the networks take it (images stacked `frame_stack` frames along their
        channels): a list, or a dict of them per part."""
        if self.parts:
            return {part.name: list(part.stacked(frame_stack).shape) for part in self.parts}
        return stacked_shape(self.observation_shape, frame_stack) if self.images else list(self.observation_shape)

    @property
    def image_shape(self) -> Optional[List[int]]:
        """One image observation's [height, width, channels]; None for vectors and parts."""
        return list(self.observation_shape) if self.observation_dtype == "uint8" else None

    @property
    def frames_once(self) -> bool:
        """Whether the shards hold each frame once: next frames rebuilt from the following rows' (format 7)."""
        return self.images and self.format_version >= FRAMES_ONCE_VERSION

    @property
    def content_checksum(self) -> str:
        """Identifies the converted data (what a run records of it): the sha256 of its arrays, the same for every
        conversion of the same source with the same settings. A version 3 dataset has only its shards' digests
        (the source's alone would miss a re-conversion with other settings)."""
        if self.content_sha256 is not None:
            return self.content_sha256
        return json_records.digest([self.source_checksum] + [shard.sha256 for shard in self.shards])


def _encoded(fields: Dict[str, Any]) -> Dict[str, Any]:
    """The JSON fields: infinite bounds as strings; no observation_dtype in the formats before images, no
    observation_parts before parts."""
    fields = dict(fields, **{name: [json_records.encode_float(v) for v in fields[name]] for name in _BOUND_FIELDS})
    if fields["format_version"] < IMAGES_VERSION:
        del fields["observation_dtype"]
    if fields["format_version"] < FORMAT_VERSION:
        del fields["observation_parts"]
    return fields


def _decode(fields: Dict[str, Any]) -> Dict[str, Any]:
    fields = dict(fields, **{name: [float(value) for value in fields[name]] for name in _BOUND_FIELDS})
    fields["shards"] = [ShardInfo(**shard) for shard in fields["shards"]]
    return fields


def _size(shape: Sequence[int]) -> int:
    return math.prod(shape)


def write_metadata(directory: pathlib.Path, metadata: DatasetMetadata) -> None:
    (directory / METADATA_FILE).write_text(metadata.to_json())


def load_metadata(directory: "str | pathlib.Path", fix: str = "re-run the conversion") -> DatasetMetadata:
    """Reads `directory/metadata.json` (a local path or a tf.io.gfile URI); a missing or invalid file is a
    UserError saying how to fix it."""
    path = storage.join(storage.normalise(directory), METADATA_FILE)
    if not storage.is_file(path):
        raise UserError(
            f"{path}: not found, so {directory} is not a converted dataset; create it with "
            f"`python -m iql_tf.convert --source=... --output={directory}`"
        )
    return DatasetMetadata.from_json(storage.read_text(path), path, fix)
