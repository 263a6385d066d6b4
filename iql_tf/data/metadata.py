"""`DIR/metadata.json` of a converted dataset: what the shards hold and how to evaluate on them.

Written by the converter, read by the loader and by evaluation (env id and kwargs, flattening order,
reference scores). Non-finite bounds are stored as the strings "inf" / "-inf" so the file is strict JSON.
"""

import dataclasses
import json
import math
import pathlib
from typing import Any, Dict, List, Optional, Sequence

from iql_tf.errors import UserError

FORMAT_VERSION = 1
METADATA_FILE = "metadata.json"


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
    action_low: List[float]
    action_high: List[float]
    num_transitions: int
    num_episodes: int
    ref_min_score: Optional[float]
    ref_max_score: Optional[float]
    shards: List[ShardInfo]
    format_version: int = FORMAT_VERSION

    def to_json(self) -> str:
        """Strict JSON (no NaN/Infinity literals)."""
        fields = dataclasses.asdict(self)
        for name in _BOUND_FIELDS:
            fields[name] = [_encode_float(value) for value in fields[name]]
        return json.dumps(fields, indent=2, allow_nan=False)

    @classmethod
    def from_json(cls, text: str, where: str) -> "DatasetMetadata":
        """Parses and checks the JSON; any problem is a UserError naming `where` (and the field)."""
        fields = parse_json_object(text, where, "re-run the conversion")
        expected = {field.name for field in dataclasses.fields(cls)}
        missing = sorted(expected - fields.keys())
        if missing:
            raise UserError(f"{where}: missing field {missing[0]!r}; re-run the conversion")
        if fields["format_version"] != FORMAT_VERSION:
            raise UserError(
                f"{where}: field 'format_version' is {fields['format_version']!r}, this iql-tf reads "
                f"{FORMAT_VERSION}; re-run the conversion with this version"
            )
        try:
            for name in _BOUND_FIELDS:
                fields[name] = [float(value) for value in fields[name]]
            fields["shards"] = [ShardInfo(**shard) for shard in fields["shards"]]
            metadata = cls(**{name: fields[name] for name in expected})
            metadata.check(where)
        except (TypeError, ValueError) as error:
            raise UserError(f"{where}: malformed field ({error}); re-run the conversion") from error
        return metadata

    def check(self, where: str) -> None:
        """Internal consistency: shapes, bounds and counts agree with each other."""
        problems = [
            ("observation_low", len(self.observation_low) != _size(self.observation_shape)),
            ("observation_high", len(self.observation_high) != _size(self.observation_shape)),
            ("action_low", len(self.action_low) != _size(self.action_shape)),
            ("action_high", len(self.action_high) != _size(self.action_shape)),
            ("num_transitions", self.num_transitions != sum(s.num_transitions for s in self.shards)),
            ("num_transitions", self.num_transitions <= 0),
            ("num_episodes", not 0 < self.num_episodes <= self.num_transitions),
        ]
        for field, wrong in problems:
            if wrong:
                raise UserError(
                    f"{where}: field {field!r} disagrees with the shapes or shard counts; re-run the conversion"
                )


def parse_json_object(text: str, where: str, fix: str) -> Dict[str, Any]:
    """A JSON object; invalid JSON or another type is a UserError naming `where` and saying `fix`."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise UserError(f"{where}: not valid JSON ({error}); {fix}") from error
    if not isinstance(value, dict):
        raise UserError(f"{where}: expected a JSON object, got {text[:40]!r}; {fix}")
    return value


_BOUND_FIELDS = ("observation_low", "observation_high", "action_low", "action_high")


def _encode_float(value: float) -> Any:
    return value if math.isfinite(value) else ("inf" if value > 0 else "-inf")


def _size(shape: Sequence[int]) -> int:
    return math.prod(shape)


def write_metadata(directory: pathlib.Path, metadata: DatasetMetadata) -> None:
    (directory / METADATA_FILE).write_text(metadata.to_json() + "\n")


def load_metadata(directory: "str | pathlib.Path") -> DatasetMetadata:
    """Reads `directory/metadata.json`; a missing or invalid file is a UserError saying how to fix it."""
    path = pathlib.Path(directory) / METADATA_FILE
    if not path.is_file():
        raise UserError(
            f"{path}: not found, so {directory} is not a converted dataset; create it with "
            f"`python -m iql_tf.data.convert --source=... --output={directory}`"
        )
    return DatasetMetadata.from_json(path.read_text(), str(path))
