"""In-memory sources: D4RL-style rows held by the caller (numpy arrays, a pandas DataFrame, a tf.data.Dataset)
as a dataset source that `sources.resolve` takes like a file, with the same validation, conversion and cache.

Building one only gathers the rows as numpy arrays and fingerprints them; every check of their shapes and
values is `sources`' row path, the same as for a file, so the messages are iql-validate's. TensorFlow and
pandas are imported only by the constructor that needs them, so `import iql_tf.data` stays cheap.
"""

import dataclasses
import hashlib
import json
import types
from typing import Any, Dict, Iterator, Mapping, Optional, Tuple

import numpy as np

from iql_tf.data import parts
from iql_tf.data.transitions import is_image
from iql_tf.errors import UserError, first_line

ROW_FIELDS = ("observations", "actions", "rewards", "terminals", "timeouts", "next_observations", "episode_id")
_REQUIRED_FIELDS = ("observations", "actions", "rewards", "terminals")
_BLOCK = 65536  # elements of a tf.data.Dataset read at once when their shapes are static

ActionBounds = Optional[Tuple[Any, Any]]


@dataclasses.dataclass(frozen=True, eq=False)
class InMemorySource:
    """Rows keyed as `ROW_FIELDS` (read-only numpy arrays: numbers as float32, flags as given when bool, episode
    ids as given), the name that metadata records, and the environment facts `sources.read` would otherwise
    be given. Two sources are equal when their digests are."""

    arrays: Mapping[str, np.ndarray]
    name: str
    digest: str  # sha256 of the arrays (bytes, dtypes, shapes), the name given and the settings below
    action_bounds: ActionBounds = None
    env_id: Optional[str] = None
    env_kwargs: Optional[Dict[str, Any]] = None

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, InMemorySource) and other.digest == self.digest

    def __hash__(self) -> int:
        return hash(self.digest)

    def __repr__(self) -> str:  # the arrays can be millions of rows
        return f"InMemorySource(name={self.name!r}, digest={self.digest[:12]!r})"


def from_arrays(observations: Any, actions: Any, rewards: Any, terminals: Any, timeouts: Any = None,
                next_observations: Any = None, episode_ids: Any = None, action_bounds: ActionBounds = None,
                env_id: Optional[str] = None, env_kwargs: Optional[Mapping[str, Any]] = None,
                name: Optional[str] = None) -> InMemorySource:
    """A source of D4RL-style rows: observations [N, obs] (or uint8 images [N, height, width, channels], kept as
    uint8, or a dict of named parts of either kind with one image at least, e.g. {"image": [N, 64, 64, 3],
    "state": [N, 9]}), actions [N, act] (in the environment's units), rewards [N], terminals [N] (true terminations: no
    bootstrap), timeouts [N] (truncations), optional next_observations (as observations), as numpy arrays or
    anything numpy makes arrays of.

    Episode ends come from `timeouts`; without them from `episode_ids` (one id per row, the rows of an episode
    together: the last row of each episode that is not terminal is a timeout); with neither, the rows are one
    continuous log: besides the terminals, its last row is the only episode end. `action_bounds` (low, high),
    `env_id` and `env_kwargs` are used as if given to the converter (make_dataset.*); `name` is what the
    converted metadata records (default arrays-DIGEST).
    """
    arrays = dict(observations=observations, actions=actions, rewards=rewards, terminals=terminals,
                  timeouts=timeouts, next_observations=next_observations, episode_id=episode_ids)
    return _source(arrays, name or "from_arrays", name, action_bounds, env_id, env_kwargs)


def from_pandas(frame: Any, columns: Optional[Mapping[str, Any]] = None, action_bounds: ActionBounds = None,
                env_id: Optional[str] = None, env_kwargs: Optional[Mapping[str, Any]] = None,
                name: Optional[str] = None) -> InMemorySource:
    """A source of a DataFrame's rows; `columns` maps fields to columns as for .csv / .parquet files (see
    `iql_tf.data.tables`: by default the column named as the field, or FIELD_0, FIELD_1, ...; observations of
    parts as a column per part, observations/NAME; episode ends from a timeouts column, else from an episode_id
    column). The other arguments are `from_arrays`'."""
    from iql_tf.data import tables  # imports pandas

    where = name or "DataFrame"
    return _source(tables.frame_arrays(frame, where, columns), where, name, action_bounds, env_id, env_kwargs)


def from_tf_dataset(dataset: Any, action_bounds: ActionBounds = None, env_id: Optional[str] = None,
                    env_kwargs: Optional[Mapping[str, Any]] = None, name: Optional[str] = None,
                    max_rows: Optional[int] = None) -> InMemorySource:
    """A source of a tf.data.Dataset of transitions in order, each element a dict of tensors keyed as
    `ROW_FIELDS` (observations [obs], or a dict of parts, actions [act], rewards [], terminals [], timeouts [] or
    episode_id [], next_observations as observations; other keys are ignored), read to the end or to `max_rows` elements. Episode ends
    and the other arguments are as in `from_arrays`."""
    import tensorflow as tf

    where = name or "tf.data.Dataset"
    if not isinstance(dataset, tf.data.Dataset):
        raise UserError(f"{where}: expected a tf.data.Dataset, got {type(dataset).__name__}")
    specs = _element_specs(where, dataset)
    if max_rows is not None:
        dataset = dataset.take(max_rows)
    elif dataset.cardinality() == tf.data.INFINITE_CARDINALITY:
        raise UserError(f"{where}: the dataset repeats forever; pass max_rows=N (the transitions to read) or drop "
                        "its .repeat()")
    dataset = dataset.map(lambda element: {key: element[key] for key in specs})
    blocks: list = []
    try:
        blocks.extend(_blocks(where, dataset, specs))
    except tf.errors.OpError as error:  # e.g. a generator that yields an element of another structure
        raise UserError(f"{where}: element {_first_unreadable(dataset)} cannot be read ({first_line(error)}); every "
                        "element needs the keys and shapes of the first") from error
    arrays = {key: tf.nest.map_structure(lambda spec, *values: np.concatenate(values) if values else np.zeros(
        (0, *(size or 0 for size in spec.shape)), spec.dtype.as_numpy_dtype), spec,
        *[block[key] for block in blocks]) for key, spec in specs.items()}
    return _source(arrays, where, name, action_bounds, env_id, env_kwargs)


def _element_specs(where: str, dataset: Any) -> Dict[str, Any]:
    """The TensorSpecs of the row fields of the dataset's elements; a missing required key is a UserError."""
    import tensorflow as tf

    spec = dataset.element_spec
    if not isinstance(spec, Mapping):
        raise UserError(f"{where}: elements are {spec}; from_tf_dataset takes a dataset of dicts of tensors, one "
                        "transition each, e.g. {'observations': ..., 'actions': ..., 'rewards': ..., 'terminals': "
                        "..., 'timeouts': ...}")
    from iql_tf.data import validation  # here: it imports gymnasium, which `import iql_tf.data` does not need

    keys = [str(key) for key in spec]
    for field in _REQUIRED_FIELDS:
        if field not in spec:
            guess = validation.likely_name(field, keys)
            hint = f"; did you mean {guess!r}? rename it" if guess else ""
            raise UserError(f"{where}: element 0 has no key {field!r} (its keys: {', '.join(keys)}){hint}; every "
                            f"element needs {', '.join(_REQUIRED_FIELDS)} (and timeouts or episode_id)")
    specs = {key: spec[key] for key in ROW_FIELDS if key in spec}
    for key, field_spec in specs.items():
        # (observations of parts: a dict of tensors, one per part)
        parted = key.endswith("observations") and isinstance(field_spec, Mapping)
        if not all(isinstance(leaf, tf.TensorSpec) for leaf in (field_spec.values() if parted else [field_spec])):
            raise UserError(f"{where}: element 0 holds {key!r} as {field_spec}; give it as a dense tensor"
                            + (" (or observations as a dict of dense tensors, one per part)" if key.endswith(
                                "observations") else ""))
    return specs


def _first_unreadable(dataset: Any) -> int:
    """The index of the first element that fails to read (after a failed read in blocks, which cannot say)."""
    import tensorflow as tf

    index = 0
    try:
        for _ in dataset:
            index += 1
    except tf.errors.OpError:
        pass
    return index


def _blocks(where: str, dataset: Any, specs: Dict[str, Any]) -> Iterator[Dict[str, np.ndarray]]:
    """The elements as numpy blocks of rows. With static shapes tf.data guarantees them for every element, so
    blocks of elements are batched; otherwise each element's shapes are checked against the first's."""
    import tensorflow as tf

    if all(spec.shape.is_fully_defined() for spec in tf.nest.flatten(specs)):
        yield from dataset.batch(_BLOCK).as_numpy_iterator()
        return
    first: Dict[str, Tuple[int, ...]] = {}
    for index, element in enumerate(dataset.as_numpy_iterator()):
        shapes = {label: np.shape(value) for key, values in element.items()
                  for label, value in parts.labelled(key, values)}
        first = first or shapes
        for key, shape in shapes.items():
            if shape != first[key]:
                raise UserError(f"{where}: element {index} has {key!r} of shape {list(shape)}, element 0 of "
                                f"{list(first[key])}; every element is one transition of one shape (a batched "
                                "dataset: pass dataset.unbatch())")
        yield tf.nest.map_structure(lambda value: np.expand_dims(value, 0), element)


def _source(arrays: Dict[str, Any], where: str, name: Optional[str], action_bounds: ActionBounds,
            env_id: Optional[str], env_kwargs: Optional[Mapping[str, Any]]) -> InMemorySource:
    """The source of `arrays`, fingerprinted. Timeouts win over episode ids; with neither, one episode."""
    if arrays.get("timeouts") is not None:
        arrays = {key: value for key, value in arrays.items() if key != "episode_id"}
    elif arrays.get("episode_id") is None:
        observations = arrays["observations"]
        rows = np.shape(next(iter(observations.values())) if parts.is_parts(observations) and observations else
                        observations)[:1]
        arrays = dict(arrays, episode_id=np.zeros(rows, np.int64))
    if name is not None and not (isinstance(name, str) and name):
        raise UserError(f"name={name!r} must be a non-empty string (what the converted metadata records)")
    rows = {field: _row_array(where, field, value) for field, value in arrays.items() if value is not None}
    settings = {"name": name, "action_bounds": plain(action_bounds), "env_id": env_id,
                "env_kwargs": dict(env_kwargs) if env_kwargs else None}
    digest = _digest(rows, settings)
    return InMemorySource(arrays=types.MappingProxyType(rows), name=name or f"arrays-{digest[:12]}", digest=digest,
                          action_bounds=settings["action_bounds"], env_id=env_id, env_kwargs=settings["env_kwargs"])


def _row_array(where: str, field: str, value: Any) -> Any:
    """Observations of parts: a dict of `_one_row_array`s (their names and kinds are checked by the row path,
    `sources`, as a file's)."""
    if not (field.endswith("observations") and parts.is_parts(value)):
        return _one_row_array(where, field, value)
    return {name: _one_row_array(where, f"{field}/{name}", part) for name, part in value.items()}


def _one_row_array(where: str, field: str, value: Any) -> np.ndarray:
    """A read-only copy of `value` (the digest must stay true of the source): numbers as float32 but episode
    ids, which float32 could merge, and images (uint8, stored as they are)."""
    try:
        array = np.asarray(value)
    except (ValueError, TypeError) as error:  # ragged rows
        raise UserError(f"{where}: {field} cannot be made an array ({error}); give one row per step, every row of "
                        "one size") from error
    if array.dtype.kind == "O":
        raise UserError(f"{where}: {field} is an array of Python objects; give numbers (float, int or bool)")
    with np.errstate(over="ignore"):  # overflow to inf is reported by the validation
        keep = field == "episode_id" or is_image(array) and field.split("/")[0].endswith("observations")
        array = array.astype(np.float32) if array.dtype.kind in "iuf" and not keep else array.copy()
    array.flags.writeable = False
    return array


def _digest(rows: Dict[str, np.ndarray], settings: Dict[str, Any]) -> str:
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=repr).encode())
    for field in sorted(rows):
        for label, array in parts.labelled(field, rows[field]):
            digest.update(f"\n{label} {array.dtype.str} {list(array.shape)}\n".encode())
            digest.update(np.ascontiguousarray(array).data)
    return digest.hexdigest()


def plain(value: Any) -> Any:
    """`value` with numpy arrays and tuples as lists, so that settings compare and hash as JSON."""
    if isinstance(value, (np.ndarray, np.generic)):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    return value

