"""RLDS and TFDS episode datasets as a source: `rlds:DIR` (a TFDS dataset folder, as
`tfds.builder_from_directory` opens it: local or on any tf.io.gfile filesystem) and `tfds:NAME/CONFIG:VERSION` (a
registered TFDS builder in TFDS's data folder, or `make_dataset.tfds_data_dir`; downloaded and prepared only with
`make_dataset.download = True`). Needs tensorflow-datasets (`pip install 'iql-tf[rlds]'`).

RLDS (Ramos et al., 2021; github.com/google-research/rlds) stores episodes of steps; a step holds `observation`,
`action`, `reward`, `discount`, `is_first`, `is_last`, `is_terminal`, where the action is taken at the step's
observation and the reward follows it. The last step of an episode (`is_last`) holds the final observation; by
RLDS's convention its action, reward and discount are not part of any transition. Transitions are therefore
(o_t, a_t, r_t, o_{t+1}) for every step t but the last, terminal (no bootstrap) where step t + 1 `is_terminal`;
an episode whose last step is not terminal was truncated and keeps its bootstrap. Robot datasets that put a real
action and the episode's reward on the last step (reward 1 at success, `is_terminal` set) are read with
`make_dataset.rlds_final_step = 'transition'`: the last step is then a transition of its own, terminal (its s'
is its own observation, which a terminal transition never reads), or dropped when it is not terminal (it has
no next observation). docs/data.md has the table of fields.

TFDS's D4RL builders (`tensorflow_datasets/d4rl/dataset_utils.py`, version 1.2.0) cut D4RL's rows into
episodes at terminals and timeouts, set `discount` 0 on the step into a terminal, and append a final step
(zero action and reward, `is_last`) to an episode that ends in a terminal (its observation: zeros, or a next
observation) or when the file has next observations. The observation of an appended final step is the *file's*
last next observation for every episode (`steps['next_observation'][-1]`), so for an episode that ends in a
timeout it is wrong but in the last episode: for `d4rl_*` builders the transition into a non-terminal final
step whose discount is 0 (an appended one) is dropped, as D4RL's own `qlearning_dataset` drops a timeout row
without its next observation. A terminal's s' is never read; for `d4rl_*` builders (whose appended terminal
observation is zeros or another episode's) it is stored as s itself, as for .npz rows without next observations.

Observations and actions may be dicts (`image`, `wrist_image`, `state`, ...): `make_dataset.observation_keys` /
`action_keys` select and order the parts (default: every numeric part, sorted), flattened and concatenated;
strings (language instructions) and other step or episode metadata never reach the networks. An image (uint8
[height, width, channels]) is read as it is when it is the whole observation (one camera selected alone); beside
other parts the observation is one of parts (`parts.py`): each selected key a part of its own, named as the key
('/' as '_'), images as they are and vectors flattened.
"""

import dataclasses
import difflib
import pathlib
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
from absl import logging

from iql_tf.data import checksums, parts as parts_lib, storage, transitions as transitions_lib
from iql_tf.errors import UserError, first_line

PREFIXES = ("rlds:", "tfds:")
_REQUIRED = ("observation", "action", "reward", "is_last", "is_terminal")
_INSTALL = "pip install 'iql-tf[rlds]' (tensorflow-datasets)"
_PARALLEL_SHARDS = 4  # shard files read side by side


def is_rlds(source: object) -> bool:
    return isinstance(source, str) and source.startswith(PREFIXES)


@dataclasses.dataclass(frozen=True)
class RLDSOptions:
    """How an RLDS dataset's steps become transitions (the `make_dataset` settings of the same names)."""

    observation_keys: Optional[Tuple[str, ...]] = None  # None: every numeric part, sorted
    action_keys: Optional[Tuple[str, ...]] = None
    final_step: str = "observation"  # one of options.RLDS_FINAL_STEPS, checked by DataSettings
    split: str = "train"

    def __post_init__(self):
        for name in ("observation_keys", "action_keys"):  # lists (gin, flags) as tuples: one key for a cache
            keys = getattr(self, name)
            object.__setattr__(self, name, tuple(keys) if keys else None)

    def record(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


def tfds_module():
    try:
        import tensorflow_datasets as tfds
    except ImportError as error:
        raise UserError(f"reading RLDS / TFDS datasets needs tensorflow-datasets: {_INSTALL}") from error
    return tfds


def open_builder(source: str, data_dir: Optional[str], download: bool) -> Any:
    """The TFDS builder of `rlds:DIR` or `tfds:NAME/CONFIG:VERSION`; what is no dataset is one UserError."""
    tfds = tfds_module()
    if source.startswith("rlds:"):
        directory = storage.normalise(source[len("rlds:"):])
        if not storage.is_file(storage.join(directory, "dataset_info.json")):
            raise UserError(f"{source}: no dataset_info.json in {directory}, so not a TFDS dataset folder; give the "
                            "folder that holds it (DATA_DIR/NAME/CONFIG/VERSION), e.g. "
                            "rlds:~/tensorflow_datasets/my_robot/1.0.0")
        try:
            return tfds.builder_from_directory(directory)
        except Exception as error:  # TFDS raises many kinds for unreadable or newer metadata
            raise UserError(f"{source}: the installed tensorflow-datasets {tfds.__version__} cannot read this dataset "
                            f"({first_line(error)}); install the version that wrote it") from error
    name = source[len("tfds:"):]
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as error:  # DatasetNotFoundError, an unknown config or version, ...
        raise UserError(f"{source}: {first_line(error)}; names look like tfds:d4rl_mujoco_hopper/v2-medium:1.2.0")
    if not storage.is_file(storage.join(builder.data_dir, "dataset_info.json")):
        if not download:
            raise UserError(f"{source}: not prepared in {builder.data_dir}; allow the download "
                            "(make_dataset.download = True, --download) on a connected machine, or point "
                            "make_dataset.tfds_data_dir / --tfds_data_dir at the folder that holds it")
        logging.info("downloading and preparing %s into %s", name, builder.data_dir)
        builder.download_and_prepare()
    return builder


def dataset_files(builder: Any, split: str) -> List[str]:
    """The files a conversion's cache key and checksum cover: dataset_info.json, features.json, the split's
    shards."""
    if split not in builder.info.splits:
        raise UserError(f"{builder.data_dir}: no split {split!r} (it has {', '.join(builder.info.splits)})")
    directory = str(builder.data_dir)
    names = [storage.join(directory, name) for name in ("dataset_info.json", "features.json")]
    return [name for name in names if storage.is_file(name)] + [str(path) for path in
                                                                builder.info.splits[split].filepaths]


def read(source: str, builder: Any, options: RLDSOptions
         ) -> "tuple[transitions_lib.Transitions, Optional[List[str]]]":
    """Every episode of the split as transitions, and the flattening order of dict observations (None for one
    array)."""
    layout = Layout.of(source, builder, options)
    parts = [part for part in checked_episodes(source, builder, options.split, layout) if len(part["rewards"])]
    if not parts:
        raise UserError(f"{source}: no transitions (every episode has a single step); give episodes of two steps "
                        "or more")
    return transitions_lib.concatenate(parts), layout.flattening_order


def checked_episodes(source: str, builder: Any, split: str, layout: "Layout") -> Iterator[transitions_lib.Transitions]:
    """Each episode's transitions (as `layout.rows` makes them in tf.data, episodes in parallel), its flags
    checked, one at a time."""
    import tensorflow as tf

    width = None
    try:
        for index, (rows, is_last, is_terminal) in enumerate(tfds_module().as_numpy(
                episodes(builder, split).map(layout.rows_and_flags, num_parallel_calls=tf.data.AUTOTUNE,
                                             deterministic=True))):
            _check_flags(f"{source}, episode {index}", is_last, is_terminal)
            if width is not None and rows["actions"].shape[1] != width:
                raise UserError(f"{source}: actions of varying length across episodes ({width} and "
                                f"{rows['actions'].shape[1]}); map one action layout with make_dataset.action_keys")
            width = rows["actions"].shape[1]
            yield rows
    except tf.errors.OpError as error:  # DataLossError of a damaged shard, and the like
        shards = ", ".join(pathlib.PurePath(path).name for path in builder.info.splits[split].filepaths)
        raise UserError(f"{source}: a shard could not be read ({first_line(error)}; shards {shards}); copy or "
                        "prepare the dataset again") from error


def episodes(builder: Any, split: str, shuffle_seed: Optional[int] = None) -> Any:
    """The split's episodes as a tf.data.Dataset of their steps, each field whole ([T, ...] tensors): decoded in
    one batch per episode rather than as TFDS's nested dataset of steps, whose reading op tf.data cannot
    checkpoint. With `shuffle_seed`, the shard files in a seeded order, reshuffled every epoch."""
    import tensorflow as tf

    tfds = tfds_module()

    class WholeSteps(tfds.decode.Decoder):
        def decode_example(self, serialized):
            return self.feature.feature.decode_batch_example(serialized)

    # Never TFDS's automatic in-memory cache of a small dataset: a stream holds no dataset, and a cache would
    # enter every checkpoint of its iterator. Read in TFDS's own order where no seed is given (a conversion: its
    # rows, and so its content checksum, as before) or the dataset's order is fixed (TFDS refuses to shuffle it).
    shuffled = shuffle_seed is not None and not getattr(builder.info, "disable_shuffling", False)
    read_config = tfds.ReadConfig(shuffle_seed=shuffle_seed, shuffle_reshuffle_each_iteration=True,
                                  interleave_cycle_length=_PARALLEL_SHARDS, try_autocache=False) if shuffled else \
        tfds.ReadConfig(try_autocache=False)
    dataset = builder.as_dataset(split=split, shuffle_files=shuffled, read_config=read_config,
                                 decoders={"steps": WholeSteps()})
    # an episode without steps holds no transition (and no last step to read)
    return dataset.map(lambda episode: episode["steps"]).filter(lambda steps: tf.size(steps["is_last"]) > 0)


@dataclasses.dataclass(frozen=True)
class Layout:
    """Which parts of a dataset's steps make observations and actions, and how its episodes end: what turns one
    episode's steps into transitions (`rows`)."""

    observation_keys: Optional[List[str]]
    action_keys: Optional[List[str]]
    final_step: str
    d4rl: bool  # TFDS's D4RL builders' appended final steps (the module docstring)
    observation_parts: bool = False  # images beside other parts: observations of parts, a part per key

    def record(self) -> Dict[str, Any]:
        """The fields a streamed dataset's description keeps (`conversion.describe_stream`); observation_parts only
        where set, so that the description, and the identity of the data hashed from it, of every dataset without
        parts stays what it was before parts."""
        fields = dataclasses.asdict(self)
        if not fields["observation_parts"]:
            del fields["observation_parts"]
        return fields

    @property
    def flattening_order(self) -> Optional[List[str]]:
        """What a dataset's metadata records as its observation_keys: the parts' keys, flattened in order (None
        for one array, and for parts, which name themselves)."""
        return None if self.observation_parts else self.observation_keys

    @classmethod
    def of(cls, source: str, builder: Any, options: RLDSOptions) -> "Layout":
        steps_feature = _steps_feature(source, builder.info.features)
        missing = [name for name in _REQUIRED if name not in steps_feature]
        if missing:
            raise UserError(f"{source}: its steps have no {', '.join(missing)} (they have "
                            f"{', '.join(steps_feature)}); iql-tf reads RLDS steps with observation, action, reward, "
                            "is_last and is_terminal")
        ignored = sorted(set(steps_feature) - {"observation", "action", "reward", "discount", "is_first", "is_last",
                                               "is_terminal"})
        if ignored:
            logging.info("%s: step fields %s are kept out of the networks", source, ", ".join(ignored))
        observation_keys = _select(source, "observation", steps_feature["observation"], options.observation_keys)
        with_parts = bool(observation_keys) and len(observation_keys) > 1 and any(
            _is_image_feature(steps_feature["observation"], key) for key in observation_keys)
        if with_parts:
            _check_part_names(source, observation_keys)
        return cls(observation_keys, _select(source, "action", steps_feature["action"], options.action_keys),
                   options.final_step, builder.name.startswith("d4rl_"), with_parts)

    def rows(self, steps: Dict[str, Any]) -> Dict[str, Any]:
        """One episode's steps [T, ...] -> its transitions [count, ...] (TensorFlow ops, for tf.data), read as
        the module docstring says; none for an episode of a single step. Assumes the flags `_check_flags`
        checks, which a conversion checks while reading and a stream's scan before it starts."""
        import tensorflow as tf

        if self.observation_parts:
            observations = {part_name(key): _flattened(steps["observation"], [key]) for key in self.observation_keys}
        else:
            observations = _flattened(steps["observation"], self.observation_keys)
        actions = _flattened(steps["action"], self.action_keys)

        def each(function, *values):  # (each part of observations alike)
            return parts_lib.map_parts(function, *values)

        steps_count = tf.shape(actions)[0]
        rewards = tf.cast(steps["reward"], tf.float32)
        discounts = tf.cast(steps["discount"], tf.float32) if "discount" in steps else tf.ones_like(rewards)
        terminal = tf.cast(steps["is_terminal"], tf.bool)[-1]
        count = steps_count - 1  # transitions into the next step's observation
        if self.d4rl:  # an appended final step with the file's last next observation
            count -= tf.cast(tf.logical_and(tf.logical_not(terminal), tf.equal(discounts[-1], 0.0)), tf.int32)
            count = tf.maximum(count, 0)  # a single appended step: no transition
        ends_terminal = tf.logical_and(terminal, tf.logical_and(tf.equal(count, steps_count - 1), count > 0))
        next_observations = each(lambda values: values[1:count + 1], observations)
        if self.d4rl:  # zeros or another episode's observation: never read, stored as s, as .npz rows without s'
            last = tf.equal(tf.range(count), count - 1)[:, tf.newaxis]
            next_observations = tf.where(tf.logical_and(ends_terminal, last), observations[:count], next_observations)
        if self.final_step == "transition":  # a terminal last step is a transition of its own
            keep_last = tf.cast(terminal, tf.int32)
            count = count * (1 - keep_last) + steps_count * keep_last
            ends_terminal = tf.logical_or(ends_terminal, terminal)
            # (a terminal episode keeps all its steps - 1 transitions above: its s' is its own observation)
            next_observations = each(lambda values, following: tf.cond(
                terminal, lambda: tf.concat([following, values[-1:]], 0), lambda: following), observations,
                next_observations)
        count = tf.maximum(count, 0)
        last = tf.cast(tf.equal(tf.range(count), count - 1), tf.float32)
        return {"observations": each(lambda values: values[:count], observations), "actions": actions[:count],
                "rewards": rewards[:count], "next_observations": each(lambda values: values[:count], next_observations),
                "terminals": last * tf.cast(ends_terminal, tf.float32), "dones": last}

    def rows_and_flags(self, steps: Dict[str, Any]) -> "tuple[Dict[str, Any], Any, Any]":
        import tensorflow as tf

        return self.rows(steps), tf.cast(steps["is_last"], tf.bool), tf.cast(steps["is_terminal"], tf.bool)


def _check_flags(where: str, is_last: np.ndarray, is_terminal: np.ndarray) -> None:
    """RLDS's flags: is_last on the last step alone, is_terminal on none before it."""
    if not is_last[-1] or is_last[:-1].any():
        raise UserError(f"{where}: is_last is set on steps {np.flatnonzero(is_last).tolist()} of {len(is_last)}; RLDS "
                        "sets it on an episode's last step only")
    if is_terminal[:-1].any():
        raise UserError(f"{where}: is_terminal is set before the last step (steps "
                        f"{np.flatnonzero(is_terminal[:-1]).tolist()}); RLDS marks only the final observation terminal")


def _steps_feature(source: str, features: Any) -> Dict[str, Any]:
    """The step features of an RLDS dataset (the `steps` Dataset feature of its episodes)."""
    if "steps" not in features:
        raise UserError(f"{source}: its examples have no 'steps' (they have {', '.join(features)}), so it is no RLDS "
                        "dataset of episodes")
    return dict(features["steps"].feature.items()) if hasattr(features["steps"], "feature") else \
        dict(features["steps"].items())


def _numeric_paths(feature: Any, prefix: str = "") -> List[str]:
    """The numeric leaves of a (nested) feature, as 'a/b' paths, sorted at every level."""
    if isinstance(feature, tfds_module().features.FeaturesDict):
        paths = []
        for key, inner in sorted(feature.items()):
            paths += _numeric_paths(inner, f"{prefix}{key}/")
        return paths
    dtype = np.dtype(feature.np_dtype)
    return [prefix.rstrip("/") or ""] if dtype.kind in "biuf" else []


def _select(source: str, field: str, feature: Any, keys: Optional[Sequence[str]]) -> Optional[List[str]]:
    """The parts of a dict `field` to read, in order (None: the field is one array)."""
    available = _numeric_paths(feature)
    if available == [""]:
        if keys:
            raise UserError(f"{source}: make_dataset.{field}_keys given, but its {field} is one array, not a dict; "
                            "drop the setting")
        return None
    for key in keys or ():
        if key not in available:
            close = difflib.get_close_matches(key, available, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise UserError(f"{source}: its {field} has no part {key!r}; {hint}its numeric parts are "
                            f"{', '.join(available)} (make_dataset.{field}_keys)")
    selected = list(keys) if keys else available
    images = [key for key in selected if _is_image_feature(feature, key)]
    if images and field != "observation":
        others = [key for key in available if not _is_image_feature(feature, key)]
        raise UserError(f"{source}: its {field} part {images[0]!r} is an image, which an action cannot be; select its "
                        f"other parts (make_dataset.{field}_keys = {others})")
    return selected


def part_name(key: str) -> str:
    """The name of the part an observation key ('a/b') becomes: 'a_b'."""
    return key.replace("/", "_")


def _check_part_names(source: str, keys: Sequence[str]) -> None:
    names = [part_name(key) for key in keys]
    bad = [key for key, name in zip(keys, names) if parts_lib.bad_name(name)]
    twice = [key for key, name in zip(keys, names) if names.count(name) > 1]
    if bad or twice:
        raise UserError(f"{source}: its observation part {(bad or twice)[0]!r} cannot name a model input"
                        + (" (two keys give one name)" if twice else "") + "; select other parts "
                        "(make_dataset.observation_keys)")


def _is_image_feature(feature: Any, key: str) -> bool:
    """Whether the part `key` ('a/b') of a feature is an image: uint8 of [height, width, channels]."""
    for name in key.split("/"):
        feature = feature[name]
    return np.dtype(feature.np_dtype) == np.uint8 and len(feature.shape) == 3


def _flattened(value: Any, keys: Optional[List[str]]) -> Any:
    """A step field [T, ...] (or a dict of them) -> float32 [T, D], the parts of `keys` concatenated in order; an
    image (uint8 [T, height, width, channels], the field's only part: `_select`) as it is."""
    import tensorflow as tf

    def flat(part: Any) -> Any:
        if part.dtype == tf.uint8 and part.shape.rank == 4:
            return part
        return tf.reshape(tf.cast(part, tf.float32), [tf.shape(part)[0], -1])

    if keys is None:
        return flat(value)
    parts = []
    for key in keys:
        part = value
        for name in key.split("/"):
            part = part[name]
        parts.append(flat(part))
    return parts[0] if len(parts) == 1 else tf.concat(parts, axis=1)


def split_bytes(builder: Any, options: RLDSOptions) -> int:
    """The size of the split's records, as TFDS recorded it when it wrote them."""
    dataset_files(builder, options.split)  # an unknown split is one line
    return int(builder.info.splits[options.split].num_bytes)


def stream_rows(stream_of: Dict[str, Any], seed: int) -> Any:
    """One epoch of a described RLDS dataset (`conversion.describe_stream`) as blocks of transitions, an
    episode each, for `streaming.StreamedBatches`: the shard files in a seeded order, new every epoch,
    read side by side; episodes decoded and turned into transitions in parallel, in a fixed order."""
    import tensorflow as tf

    # (a description written before observations of parts has no observation_parts: the field's default)
    layout = Layout(**{field.name: stream_of[field.name] for field in dataclasses.fields(Layout)
                       if field.name in stream_of})
    try:
        builder = tfds_module().builder_from_directory(stream_of["builder_dir"])
    except Exception as error:  # TFDS raises many kinds for a folder gone or changed
        raise UserError(f"{stream_of['builder_dir']}: the RLDS dataset to stream cannot be opened any more "
                        f"({first_line(error)}); it moved or changed after it was scanned: give its source again "
                        "(a changed dataset is scanned anew)") from error
    return episodes(builder, stream_of["split"], shuffle_seed=seed).map(
        layout.rows, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def identity(builder: Any, options: RLDSOptions) -> List[Any]:
    """What a conversion of the dataset is keyed on: its files' paths, sizes and modification times, and how its
    steps are read."""
    return [[[name, *storage.size_and_mtime(name)] for name in dataset_files(builder, options.split)],
            options.record()]


def checksum(builder: Any, options: RLDSOptions) -> str:
    """The sha256 of the dataset's files (their names and digests), read through tf.io.gfile where remote."""
    return checksums.combined_sha256(dataset_files(builder, options.split))
