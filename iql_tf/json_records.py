"""Dataclasses kept as strict JSON files (a dataset's and an exported policy's metadata.json): one reader
and one set of checks, so every such file fails the same way: one UserError naming the file and field."""

import dataclasses
import hashlib
import json
import math
from typing import Any, Callable, Dict, Mapping, Optional, Type, TypeVar

from iql_tf.errors import UserError

Record = TypeVar("Record")


def parse_json(text: str, where: str, fix: str, kind: type = dict) -> Any:
    """A JSON value of type `kind` (an object by default); invalid JSON or another type is a UserError naming
    `where` and saying `fix`."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise UserError(f"{where}: not valid JSON ({error}); {fix}") from error
    if not isinstance(value, kind):
        expected = {dict: "object", list: "array"}.get(kind, kind.__name__)
        raise UserError(f"{where}: expected a JSON {expected}, got {text[:40]!r}; {fix}")
    return value


def parse_json_object(text: str, where: str, fix: str) -> Dict[str, Any]:
    return parse_json(text, where, fix, dict)


def encode_float(value: float) -> Any:
    """Strict JSON has no infinities: they are written as the strings "inf" / "-inf"."""
    return value if math.isfinite(value) else ("inf" if value > 0 else "-inf")


def to_json(record: Any, encode: Optional[Callable[[Dict[str, Any]], Dict[str, Any]]] = None) -> str:
    fields = dataclasses.asdict(record)
    return json.dumps(encode(fields) if encode else fields, indent=2, sort_keys=True, allow_nan=False) + "\n"


def from_json(cls: Type[Record], text: str, where: str, fix: str, format_version: int,
              decode: Optional[Callable[[Dict[str, Any]], Dict[str, Any]]] = None,
              older: Mapping[int, Mapping[str, Any]] = {}) -> Record:
    """Parses a record of `cls`, checking that every field is there and the format version is this one's, or one
    of the `older` versions still read: {version: the values of the fields it lacks}."""
    fields = parse_json_object(text, where, fix)
    version = fields.get("format_version")
    if "format_version" in fields and version != format_version and version not in older:
        raise UserError(f"{where}: field 'format_version' is {version!r}, this iql-tf reads {format_version}; {fix}")
    fields = {**older.get(version, {}), **fields}
    expected = [field.name for field in dataclasses.fields(cls)]
    missing = [name for name in expected if name not in fields]
    if missing:
        raise UserError(f"{where}: missing field {missing[0]!r}; {fix}")
    try:
        values = {name: fields[name] for name in expected}
        return cls(**(decode(values) if decode else values))
    except (TypeError, ValueError, KeyError) as error:
        raise UserError(f"{where}: malformed field ({error}); {fix}") from error


def digest(parts: Any) -> str:
    """A short, stable sha256 of JSON-serialisable `parts` (fingerprints, cache keys)."""
    return sha256_of(parts)[:16]


def sha256_of(parts: Any) -> str:
    """The whole sha256 of JSON-serialisable `parts` (what identifies data, as a content checksum does)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()
