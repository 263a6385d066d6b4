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
strings (language instructions) and other step or episode metadata never reach the networks.
"""

import dataclasses
import difflib
import pathlib
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
from absl import logging

from iql_tf.data import checksums, storage, transitions as transitions_lib
from iql_tf.errors import UserError, first_line

PREFIXES = ("rlds:", "tfds:")
_REQUIRED = ("observation", "action", "reward", "is_last", "is_terminal")
_INSTALL = "pip install 'iql-tf[rlds]' (tensorflow-datasets)"
_MAX_STEPS = 1 << 24  # steps of one episode read at once (all of it)


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
    tfds = tfds_module()
    steps_feature = _steps_feature(source, builder.info.features)
    missing = [name for name in _REQUIRED if name not in steps_feature]
    if missing:
        raise UserError(f"{source}: its steps have no {', '.join(missing)} (they have {', '.join(steps_feature)}); "
                        "iql-tf reads RLDS steps with observation, action, reward, is_last and is_terminal")
    observation_keys = _select(source, "observation", steps_feature["observation"], options.observation_keys)
    action_keys = _select(source, "action", steps_feature["action"], options.action_keys)
    ignored = sorted(set(steps_feature) - {"observation", "action", "reward", "discount", "is_first", "is_last",
                                           "is_terminal"})
    if ignored:
        logging.info("%s: step fields %s are kept out of the networks", source, ", ".join(ignored))
    d4rl = builder.name.startswith("d4rl_")
    parts: List[transitions_lib.Transitions] = []
    import tensorflow as tf

    # Each episode's steps (a nested dataset) as whole arrays [T, ...], decoded inside tf.data.
    episodes = builder.as_dataset(split=options.split, shuffle_files=False).map(
        lambda episode: episode["steps"].batch(_MAX_STEPS).get_single_element())
    try:
        for index, steps in enumerate(tfds.as_numpy(episodes)):
            where = f"{source}, episode {index}"
            observations = _flatten(where, "observation", steps["observation"], observation_keys)
            actions = _flatten(where, "action", steps["action"], action_keys)
            part = episode_transitions(where, observations, actions, np.asarray(steps["reward"], np.float32),
                                       np.asarray(steps.get("discount", np.ones(len(actions))), np.float32),
                                       np.asarray(steps["is_last"], bool), np.asarray(steps["is_terminal"], bool),
                                       options.final_step, d4rl)
            if part is not None:
                parts.append(part)
    except tf.errors.OpError as error:  # DataLossError of a damaged shard, and the like
        shards = ", ".join(pathlib.PurePath(path).name for path in builder.info.splits[options.split].filepaths)
        raise UserError(f"{source}: a shard could not be read ({first_line(error)}; shards {shards}); copy or "
                        "prepare the dataset again") from error
    if not parts:
        raise UserError(f"{source}: no transitions (every episode has a single step); give episodes of two steps "
                        "or more")
    widths = {part["actions"].shape[1] for part in parts}
    if len(widths) > 1:
        raise UserError(f"{source}: actions of varying length across episodes ({sorted(widths)}); map one action "
                        "layout with make_dataset.action_keys")
    return transitions_lib.concatenate(parts), observation_keys


def episode_transitions(where: str, observations: np.ndarray, actions: np.ndarray, rewards: np.ndarray,
                        discounts: np.ndarray, is_last: np.ndarray, is_terminal: np.ndarray, final_step: str,
                        d4rl: bool) -> Optional[transitions_lib.Transitions]:
    """One episode's steps [T, ...] -> its transitions (see the module docstring); None for a single step."""
    steps = len(actions)
    if not is_last[-1] or is_last[:-1].any():
        raise UserError(f"{where}: is_last is set on steps {np.flatnonzero(is_last).tolist()} of {steps}; RLDS sets it "
                        "on an episode's last step only")
    if is_terminal[:-1].any():
        raise UserError(f"{where}: is_terminal is set before the last step (steps "
                        f"{np.flatnonzero(is_terminal[:-1]).tolist()}); RLDS marks only the final observation terminal")
    terminal = bool(is_terminal[-1])
    count = steps - 1  # transitions into the next step's observation
    if d4rl and not terminal and discounts[-1] == 0.0:
        count -= 1  # TFDS's D4RL builders: an appended final step with the file's last next observation
    next_observations = observations[1:count + 1].copy()
    terminals = np.zeros(count, np.float32)
    if terminal and count == steps - 1 and count:
        terminals[-1] = 1.0
        if d4rl:  # zeros or another episode's observation: never read, stored as s, as .npz rows without s' store it
            next_observations[-1] = observations[count - 1]
    keep_last = final_step == "transition" and terminal
    if keep_last:
        next_observations = np.concatenate([next_observations, observations[-1:]])
        terminals = np.zeros(steps, np.float32)
        terminals[-1] = 1.0
        count = steps
    if count <= 0:
        return None
    dones = np.zeros(count, np.float32)
    dones[-1] = 1.0
    return {"observations": observations[:count].astype(np.float32), "actions": actions[:count].astype(np.float32),
            "rewards": rewards[:count].astype(np.float32), "next_observations": next_observations.astype(np.float32),
            "terminals": terminals, "dones": dones}


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
    if not keys:
        return available
    for key in keys:
        if key not in available:
            close = difflib.get_close_matches(key, available, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise UserError(f"{source}: its {field} has no part {key!r}; {hint}its numeric parts are "
                            f"{', '.join(available)} (make_dataset.{field}_keys)")
    return list(keys)


def _flatten(where: str, field: str, value: Any, keys: Optional[List[str]]) -> np.ndarray:
    """A step field [T, ...] (or a dict of them) -> float32 [T, D], the parts of `keys` concatenated in order."""
    if keys is None:
        array = np.asarray(value)
        return array.reshape(len(array), -1).astype(np.float32)
    parts = []
    for key in keys:
        part = value
        for name in key.split("/"):
            if not isinstance(part, dict) or name not in part:
                raise UserError(f"{where}: a step's {field} lacks {key!r}; its parts differ from the dataset's "
                                "features, so the dataset is damaged: prepare it again")
            part = part[name]
        part = np.asarray(part)
        parts.append(part.reshape(len(part), -1).astype(np.float32))
    return np.concatenate(parts, axis=1)


def identity(builder: Any, options: RLDSOptions) -> List[Any]:
    """What a conversion of the dataset is keyed on: its files' paths, sizes and modification times, and how its
    steps are read."""
    return [[[name, *storage.size_and_mtime(name)] for name in dataset_files(builder, options.split)],
            options.record()]


def checksum(builder: Any, options: RLDSOptions) -> str:
    """The sha256 of the dataset's files (their names and digests), read through tf.io.gfile where remote."""
    return checksums.combined_sha256(dataset_files(builder, options.split))
