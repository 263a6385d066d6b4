"""Observations of several named parts: a dict such as {"image": uint8 [N, 64, 64, 3], "wrist_image": uint8 [N, 64,
64, 3], "state": float32 [N, 9]}, as a robot logs a camera or two beside its joint states.

A part is an image (uint8 [height, width, channels], scaled by the networks) or a vector (float32 [size]); the
parts keep the order they were given in, which is the order the networks concatenate their features in. An
observation of parts has at least one image: a dict of vectors alone is one vector (the parts flattened in order,
as Minari's Dict spaces are read, `make_dataset.observation_keys`). TensorFlow-free: the sources and metadata use it.
"""

import collections.abc
import dataclasses
import re
from typing import Any, Callable, Dict, List, Mapping, Sequence, Tuple

import numpy as np

_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*\Z")  # what a SavedModel, TFLite and ONNX input may be named


@dataclasses.dataclass(frozen=True)
class Part:
    """One named part of an observation: its shape per row and its dtype ('uint8' images, 'float32' vectors)."""

    name: str
    shape: Tuple[int, ...]
    dtype: str

    @property
    def image(self) -> bool:
        return self.dtype == "uint8"

    def stacked(self, frame_stack: int) -> "Part":
        """As a policy takes it: an image's last `frame_stack` frames along its channels; a vector as it is."""
        if not self.image or frame_stack == 1:
            return self
        return dataclasses.replace(self, shape=(*self.shape[:-1], self.shape[-1] * frame_stack))

    def record(self) -> Dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}


def is_parts(observations: Any) -> bool:
    """Whether `observations` are a dict of named parts (anything else is one array, a DataFrame included).
    collections.abc's Mapping, not typing's: inside a tf.function, autograph's isinstance sees the wrapper a
    tf.Module puts around a dict as the former only."""
    return isinstance(observations, collections.abc.Mapping)


def map_parts(function: Callable[..., Any], *observations: Any) -> Any:
    """`function` applied to each part of `observations` (several: part by part, alike), or to the array."""
    if is_parts(observations[0]):
        return {name: function(*(values[name] for values in observations)) for name in observations[0]}
    return function(*observations)


def leaves(observations: Any) -> List[Any]:
    """The parts' arrays in order, or the array alone."""
    return list(observations.values()) if is_parts(observations) else [observations]


def labelled(field: str, values: Any) -> List[Tuple[str, Any]]:
    """(FIELD, array) for one array, or (FIELD/NAME, array) for each part in order: what a part is called in the
    shards' features, in digests and in messages."""
    if is_parts(values):
        return [(f"{field}/{name}", part) for name, part in values.items()]
    return [(field, values)]


def row_count(observations: Any) -> int:
    return len(leaves(observations)[0])


def describe(observations: Mapping[str, np.ndarray]) -> List[Part]:
    """The parts of observations held as arrays, [N, ...] each."""
    return [Part(name, tuple(int(size) for size in values.shape[1:]), str(values.dtype))
            for name, values in observations.items()]


def from_records(records: Sequence[Mapping[str, Any]]) -> List[Part]:
    return [Part(record["name"], tuple(record["shape"]), record["dtype"]) for record in records]


def stacked(parts: Sequence[Part], frame_stack: int) -> List[Part]:
    return [part.stacked(frame_stack) for part in parts]


# The export's own inputs and output (`policy/exported.py`): a part of one of these names would be confused with them.
RESERVED_NAMES = ("observations", "actions", "temperature", "seed")


def bad_name(name: Any) -> bool:
    """Whether `name` cannot name a part (a model input): a letter, then letters, digits or underscores, and none of
    RESERVED_NAMES."""
    return not (isinstance(name, str) and _NAME.match(name)) or name in RESERVED_NAMES
