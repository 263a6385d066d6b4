"""Reading the three source shapes (local Minari dataset, D4RL-style HDF5, npz) into validated transitions.

Each reader returns a `SourceData`: the transitions (see `transitions.py`) plus what the metadata needs
(evaluation env, flattening order, space bounds, reference scores). Minari datasets are read with minari's
own API and are never downloaded unless `download=True`. (The project's own generated ids are generated when
missing by `generate.generate_if_missing`, called where sources are resolved, not here.)
"""

import dataclasses
import json
import pathlib
import zipfile
from typing import Any, Dict, List, Mapping, Optional, Tuple

import gymnasium as gym
import h5py
import minari
import numpy as np
from absl import logging
from minari.storage.datasets_root_dir import get_dataset_path

from iql_tf import envs
from iql_tf.data import minari_root, validation
from iql_tf.data import transitions as transitions_lib
from iql_tf.data.metadata import METADATA_FILE, parse_json_object
from iql_tf.errors import UserError

FILE_SUFFIXES = (".npz", ".hdf5", ".h5")
REQUIRED_FIELDS = ("observations", "actions", "rewards", "terminals", "timeouts")
OPTIONAL_FIELDS = ("next_observations",)

# SPEC.md section 8: Minari's locomotion datasets carry no reference scores (Minari issue 323); D4RL's.
D4RL_LOCOMOTION_SCORES = {
    "hopper": (-20.272305, 3234.3),
    "halfcheetah": (-280.178953, 12135.0),
    "walker2d": (1.629008, 4592.3),
}


@dataclasses.dataclass(frozen=True)
class SourceData:
    """A source read into memory: transitions and the facts about its environment."""

    transitions: transitions_lib.Transitions
    num_episodes: int
    env_id: Optional[str]
    env_kwargs: Dict[str, Any]
    max_episode_steps: Optional[int]
    observation_keys: Optional[List[str]]
    observation_low: np.ndarray
    observation_high: np.ndarray
    action_low: np.ndarray
    action_high: np.ndarray
    ref_min_score: Optional[float]
    ref_max_score: Optional[float]


def is_file_source(source: str) -> bool:
    return pathlib.Path(source).suffix.lower() in FILE_SUFFIXES


def source_files(source: str, download: bool = False) -> List[pathlib.Path]:
    """The files a source consists of (for checksums and cache keys), sorted."""
    if is_file_source(source):
        path = pathlib.Path(source).expanduser()
        if not path.is_file():
            raise UserError(f"{source}: file not found; pass an existing .npz / .hdf5 file, a Minari id or a "
                            "converted dataset directory")
        return [path.resolve()]
    path = pathlib.Path(source).expanduser()
    if path.is_file():
        raise UserError(f"{source}: not a dataset file (expected .npz, .hdf5 or .h5), nor a Minari id or a "
                        "converted dataset directory")
    if path.is_dir() and not minari_root.dataset_exists(source):
        raise UserError(
            f"{source}: a directory without {METADATA_FILE}, so not a converted dataset (nor a Minari id); convert "
            f"a source into it with `python -m iql_tf.data.convert --source=FILE_OR_MINARI_ID --output={source}`, "
            "or pass a .npz/.hdf5/.h5 file or a Minari id (e.g. D4RL/door/human-v2, not its directory)"
        )
    data_path = pathlib.Path(load_minari(source, download).spec.data_path)
    return sorted(path.resolve() for path in data_path.iterdir() if path.is_file())


def load_minari(dataset_id: str, download: bool = False) -> minari.MinariDataset:
    """The local Minari dataset `dataset_id`; a missing one is one UserError saying how to get it, unless
    `download` allows the network."""
    try:
        return minari.load_dataset(dataset_id, download=False)
    except FileNotFoundError:
        pass
    except ValueError as error:  # malformed id or unsupported Minari version
        raise UserError(f"{dataset_id}: not a usable Minari dataset ({error})") from error
    if not download:
        raise UserError(
            f"{dataset_id}: no such file, converted directory or local Minari dataset (Minari root "
            f"{get_dataset_path()}); get it on a connected machine with "
            f"`pip install minari && minari download {dataset_id}` and copy the root here (point "
            "MINARI_DATASETS_PATH at it), or allow the download (make_dataset.download = True when training, "
            "--download for the converter)"
        )
    logging.info("downloading Minari dataset %s", dataset_id)
    try:
        return minari.load_dataset(dataset_id, download=True)
    except Exception as error:  # network and server errors come in many types
        raise UserError(f"{dataset_id}: download failed ({error}); check the id and the network") from error


def read_source(
    source: str, download: bool = False, env_id: Optional[str] = None, env_kwargs: Optional[Mapping] = None
) -> SourceData:
    """Reads and validates a source. `env_id`/`env_kwargs` set the evaluation env (npz/HDF5 carry none)."""
    if is_file_source(source):
        data = _read_rows(source_files(source)[0])
    else:
        data = _read_minari(load_minari(source, download))
    if env_id is not None:
        data = _with_env(data, source, env_id, dict(env_kwargs or {}))
    return _with_reference_fallback(data)


def _read_rows(path: pathlib.Path) -> SourceData:
    where = str(path)
    arrays = _load_arrays(path)
    validation.check_keys(where, arrays, REQUIRED_FIELDS)
    observations = validation.check_array(where, "observations", arrays["observations"], (None, None))
    rows, columns = observations.shape
    actions = validation.check_array(where, "actions", arrays["actions"], (rows, None))
    validation.check_actions(where, "actions", actions)
    rewards = validation.check_array(where, "rewards", arrays["rewards"], (rows,))
    flags = {}
    for field in ("terminals", "timeouts"):
        flags[field] = validation.check_array(where, field, arrays[field], (rows,))
        validation.check_flags(where, field, flags[field])
    next_observations = None
    if "next_observations" in arrays:
        next_observations = validation.check_array(
            where, "next_observations", arrays["next_observations"], (rows, columns)
        )
    validation.check_not_empty(where, rows)
    data = transitions_lib.from_rows(observations, actions, rewards, **flags, next_observations=next_observations)
    validation.check_not_empty(where, len(data["rewards"]))
    return SourceData(
        transitions=data,
        num_episodes=int(data["dones"].sum()),
        env_id=None,
        env_kwargs={},
        max_episode_steps=None,
        observation_keys=None,
        observation_low=np.full(columns, -np.inf),
        observation_high=np.full(columns, np.inf),
        action_low=np.full(actions.shape[1], -1.0),
        action_high=np.full(actions.shape[1], 1.0),
        ref_min_score=None,
        ref_max_score=None,
    )


def _load_arrays(path: pathlib.Path) -> Dict[str, np.ndarray]:
    """The D4RL fields of an npz or HDF5 file as numpy arrays (other fields are ignored)."""
    fields = REQUIRED_FIELDS + OPTIONAL_FIELDS
    try:
        if path.suffix.lower() == ".npz":
            with np.load(path, allow_pickle=False) as file:
                return {key: _npz_field(path, file, key) for key in fields if key in file.files}
        with h5py.File(path, "r") as file:
            return {key: np.asarray(file[key][()]) for key in fields if isinstance(file.get(key), h5py.Dataset)}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise UserError(
            f"{path}: cannot be read as {path.suffix} ({error}); the file is corrupt or truncated"
        ) from error


def _npz_field(path: pathlib.Path, file: Any, key: str) -> np.ndarray:
    try:
        return file[key]
    except ValueError as error:  # object arrays need pickle, which is never enabled
        raise UserError(
            f"{path}: field {key!r} is an object array ({error}); store it as a numeric array"
        ) from error


def _read_minari(dataset: minari.MinariDataset) -> SourceData:
    keys = envs.observation_keys(dataset.observation_space)
    data_path = dataset.spec.data_path
    validation.check_action_space(f"Minari dataset {dataset.spec.dataset_id} ({data_path})", dataset.action_space)
    parts = []
    for episode in dataset.iterate_episodes():
        where = f"{data_path}: episode {episode.id}"
        steps = len(episode.rewards)
        if steps == 0:
            continue
        observations = _check_observations(where, episode.observations, keys, steps + 1)
        actions = validation.check_array(where, "actions", np.asarray(episode.actions), (steps, None))
        validation.check_actions(where, "actions", actions)
        rewards = validation.check_array(where, "rewards", episode.rewards, (steps,))
        terminations = validation.check_array(where, "terminations", episode.terminations, (steps,))
        parts.append(transitions_lib.from_episode(observations, actions, rewards, terminations))
    validation.check_not_empty(data_path, len(parts))
    metadata = dataset.storage.metadata
    env_spec = json.loads(metadata.get("eval_env_spec") or metadata.get("env_spec") or "null") or {}
    observation_low, observation_high = _bounds(data_path, dataset.observation_space, keys)
    action_low, action_high = _bounds(data_path, dataset.action_space, None)
    return SourceData(
        transitions=transitions_lib.concatenate(parts),
        num_episodes=len(parts),
        env_id=env_spec.get("id"),
        env_kwargs=env_spec.get("kwargs") or {},
        max_episode_steps=env_spec.get("max_episode_steps"),
        observation_keys=keys,
        observation_low=observation_low,
        observation_high=observation_high,
        action_low=action_low,
        action_high=action_high,
        ref_min_score=metadata.get("ref_min_score"),
        ref_max_score=metadata.get("ref_max_score"),
    )


def _check_observations(where: str, observations: Any, keys: Optional[List[str]], rows: int) -> np.ndarray:
    if keys is None:
        return validation.check_array(where, "observations", np.asarray(observations), (rows, None))
    for key in keys:
        part = np.asarray(envs.observation_part(observations, key))
        validation.check_array(where, f"observations/{key}", part, (rows, None))
    return envs.flatten_observation(observations, keys)


def _bounds(where: str, space: gym.Space, keys: Optional[List[str]]) -> Tuple[np.ndarray, np.ndarray]:
    """Flat low/high of a Box, or of a Dict of Boxes in the flattening order."""
    boxes = [space] if keys is None else [envs.observation_part(space, key) for key in keys]
    if not all(isinstance(box, gym.spaces.Box) for box in boxes):
        raise UserError(f"{where}: space {space} is not made of Box spaces: iql-tf handles continuous spaces only")
    return (
        np.concatenate([box.low.astype(np.float64).ravel() for box in boxes]),
        np.concatenate([box.high.astype(np.float64).ravel() for box in boxes]),
    )


def _with_env(data: SourceData, source: str, env_id: str, env_kwargs: Dict[str, Any]) -> SourceData:
    """Records `env_id` as the evaluation env, with its spaces, after checking the data fits them."""
    env = envs.make_env(env_id, env_kwargs)
    keys = envs.observation_keys(env.observation_space)
    envs.check_env_fits(env, keys, data.transitions["observations"].shape[1], data.transitions["actions"].shape[1],
                        source)
    where = f"{source}: environment {env_id}"
    validation.check_action_space(where, env.action_space)
    observation_low, observation_high = _bounds(where, env.observation_space, keys)
    action_low, action_high = _bounds(where, env.action_space, None)
    env.close()
    return dataclasses.replace(
        data,
        env_id=env_id,
        env_kwargs=env_kwargs,
        max_episode_steps=env.spec.max_episode_steps,
        observation_keys=keys,
        observation_low=observation_low,
        observation_high=observation_high,
        action_low=action_low,
        action_high=action_high,
    )


def _with_reference_fallback(data: SourceData) -> SourceData:
    """D4RL's locomotion reference scores where the source has none (SPEC.md section 8)."""
    if data.ref_min_score is not None and data.ref_max_score is not None or data.env_id is None:
        return data
    domain = data.env_id.lower().split("-")[0]
    if domain not in D4RL_LOCOMOTION_SCORES:
        return data
    ref_min_score, ref_max_score = D4RL_LOCOMOTION_SCORES[domain]
    return dataclasses.replace(data, ref_min_score=ref_min_score, ref_max_score=ref_max_score)


def parse_env_kwargs(text: str) -> Dict[str, Any]:
    """The --env_kwargs flag: a JSON object."""
    return parse_json_object(text, "--env_kwargs", "pass an object such as '{\"continuing_task\": false}'")
