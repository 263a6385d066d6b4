"""What a source names (`resolve`), and reading it into validated transitions (`read`).

A source is a converted directory, a D4RL-style .npz / .hdf5 / .h5 file, a .csv / .parquet table (read with
a column mapping, `tables.py`), an in-memory source (`in_memory.py`: arrays, a DataFrame, a tf.data.Dataset),
a Minari id in the local Minari root (read with minari's own API, never downloaded unless `download=True`),
an OGBench single-task name `ogbench:NAME` (read with ogbench's own API, `ogbench_source.py`), or one of the
project's generated ids not generated yet. `resolve` finds out which, once, and keeps what it
loaded; `read` returns a `SourceData`: the transitions plus what the metadata needs (evaluation env,
flattening order, space bounds, reference scores), with every problem of the arrays recorded in a
`validation.Report`. Files, tables and in-memory rows all go through one row path (`_read_rows`).
"""

import dataclasses
import json
import os
import pathlib
import zipfile
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import gymnasium as gym
import h5py
import minari
import numpy as np
from absl import logging
from minari.storage.datasets_root_dir import get_dataset_path

from iql_tf import envs
from iql_tf.data import checksums, generated, ogbench_source, parts, rlds_source, storage, tables, validation
from iql_tf.data import statistics as statistics_lib
from iql_tf.data import transitions as transitions_lib
from iql_tf.data.in_memory import InMemorySource, plain
from iql_tf.data.metadata import METADATA_FILE
from iql_tf.errors import UserError

ARRAY_SUFFIXES = (".npz", ".hdf5", ".h5")
FILE_SUFFIXES = ARRAY_SUFFIXES + tables.TABLE_SUFFIXES
REQUIRED_FIELDS = validation.REQUIRED_ROW_FIELDS
OPTIONAL_FIELDS = ("next_observations", "episode_id")  # episode ids stand in for missing timeouts
_NPZ_MAGIC, _NPY_MAGIC = b"PK", b"\x93NUMPY"  # an npz is a zip archive of .npy files

CONVERTED, FILE, MINARI, GENERATED, ARRAYS, OGBENCH, RLDS = ("converted", "file", "minari", "generated", "arrays",
                                                             "ogbench", "rlds")

# Minari's locomotion datasets carry no reference scores (Minari issue 323): D4RL's, from D4RL's
# infos.py (REF_MIN_SCORE / REF_MAX_SCORE), by environment name.
D4RL_LOCOMOTION_SCORES = {
    "hopper": (-20.272305, 3234.3),
    "halfcheetah": (-280.178953, 12135.0),
    "walker2d": (1.629008, 4592.3),
}


@dataclasses.dataclass(frozen=True)
class Source:
    """A source string, resolved: its kind, its path or Minari dataset, and the files it consists of."""

    name: str  # as the user gave it; for ARRAYS the in-memory source's name
    kind: str  # CONVERTED, FILE, MINARI, GENERATED, ARRAYS or OGBENCH
    path: Optional[pathlib.Path] = None  # the converted directory or the file (OGBENCH: the training split)
    files: Tuple[pathlib.Path, ...] = ()  # what checksums and cache keys cover (FILE, MINARI, OGBENCH)
    dataset: Optional[minari.MinariDataset] = None  # MINARI: loaded once, here
    columns: Optional[Mapping[str, Any]] = None  # FILE tables: which columns hold each field
    in_memory: Optional[InMemorySource] = None  # ARRAYS
    ogbench: Optional[ogbench_source.OGBenchName] = None  # OGBENCH
    builder: Any = None  # RLDS: the TFDS builder
    rlds_options: Optional[rlds_source.RLDSOptions] = None  # RLDS: how its steps are read


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
    validation: Optional[transitions_lib.Transitions] = None  # the source's own held-out split (OGBench's -val)


def minari_dataset_exists(dataset_id: str) -> bool:
    """Whether the local Minari root holds `dataset_id` (minari's own test: its `data` folder exists)."""
    try:
        return (get_dataset_path(dataset_id) / "data").is_dir()
    except (ValueError, TypeError):  # not shaped like an id
        return False


def identity(source: Source) -> Any:
    """What a conversion cache entry of `source` is keyed on: an in-memory source's digest, else its files'
    paths, sizes and modification times (an edited file is converted again)."""
    if source.kind == ARRAYS:
        return source.in_memory.digest
    if source.kind == RLDS:
        return rlds_source.identity(source.builder, source.rlds_options)
    return [[str(f), f.stat().st_size, f.stat().st_mtime_ns] for f in source.files]


def checksum(source: Source) -> str:
    """The sha256 that metadata records of a FILE, MINARI or ARRAYS source (of its files, or its digest)."""
    if source.kind == ARRAYS:
        return source.in_memory.digest
    if source.kind == RLDS:
        return rlds_source.checksum(source.builder, source.rlds_options)
    return checksums.combined_sha256(source.files)


def resolve(source: Any, download: bool = False, generate: bool = False,
            columns: Optional[Mapping[str, Any]] = None, ogbench_dir: Optional[str] = None,
            tfds_data_dir: Optional[str] = None, rlds_options: Optional[rlds_source.RLDSOptions] = None) -> Source:
    """Finds out what `source` (a path, an id or an `InMemorySource`) is; anything that is no dataset is one
    UserError saying what to pass. With `generate`, a missing generated id is generated and resolved as the
    Minari dataset it then is. `columns`: for .csv / .parquet tables, which columns hold each field.
    `ogbench_dir`: the folder of OGBench's files (default OGBench's own). `tfds_data_dir` and `rlds_options`:
    for `rlds:` / `tfds:` sources, TFDS's data folder and how their steps are read."""
    if rlds_source.is_rlds(source):
        builder = rlds_source.open_builder(source, tfds_data_dir, download)
        return Source(source, RLDS, builder=builder, rlds_options=rlds_options or rlds_source.RLDSOptions())
    if tfds_data_dir is not None or (rlds_options is not None and rlds_options != rlds_source.RLDSOptions()):
        raise UserError(f"{source}: TFDS / RLDS settings given (make_dataset.tfds_data_dir, observation_keys, "
                        "action_keys, rlds_final_step), but the source is no rlds:DIR or tfds:NAME; drop them")
    if ogbench_source.is_ogbench(source):
        resolved = _resolve_ogbench(source, download, ogbench_dir)
    elif ogbench_dir is not None:
        raise UserError(f"{source}: make_dataset.ogbench_dir / --ogbench_dir given, but the source is no "
                        "ogbench:NAME; drop it")
    else:
        resolved = _resolve(source, download, generate, columns)
    if columns and resolved.columns is None:
        raise UserError(f"{resolved.name}: columns {dict(columns)!r} given, but it is no .csv / .parquet table (its "
                        "fields are named already); drop make_dataset.columns / --columns")
    return resolved


def _resolve_ogbench(source: str, download: bool, ogbench_dir: Optional[str]) -> Source:
    name = ogbench_source.parse(source)
    train, val = ogbench_source.split_files(name, ogbench_dir or ogbench_source.DEFAULT_DATA_DIR, download)
    if val is None:
        logging.warning("%s: no validation split %s-val.npz beside %s; training without it", source, name.dataset,
                        train)
    files = tuple(path.resolve() for path in (train, val) if path is not None)
    return Source(source, OGBENCH, path=train.resolve(), files=files, ogbench=name)


def _resolve(source: Any, download: bool, generate: bool, columns: Optional[Mapping[str, Any]]) -> Source:
    if isinstance(source, InMemorySource):
        return Source(source.name, ARRAYS, in_memory=source)
    if not isinstance(source, (str, os.PathLike)):
        raise UserError(f"{source!r}: not a source; pass a path, a Minari id, a converted directory or an in-memory "
                        "source (iql_tf.data.from_arrays, from_pandas, from_tf_dataset)")
    source = os.fspath(source)
    if storage.is_uri(source):  # a tf.io.gfile filesystem (gs://...): converted directories only
        if not storage.is_file(storage.join(source, METADATA_FILE)):
            raise UserError(f"{source}: no {METADATA_FILE} there; a URI names a converted dataset directory (convert "
                            "the source locally and copy the directory there, or bind make_dataset.cache_dir to a "
                            "URI and pass the source itself)")
        return Source(source, CONVERTED, path=source)
    path = pathlib.Path(source).expanduser()
    if (path / METADATA_FILE).is_file():
        return Source(source, CONVERTED, path=path)
    if path.suffix.lower() in FILE_SUFFIXES:
        if not path.is_file():
            raise UserError(f"{source}: file not found; pass an existing .npz / .hdf5 / .csv / .parquet file, a "
                            "Minari id or a converted dataset directory")
        table = path.suffix.lower() in tables.TABLE_SUFFIXES
        return Source(source, FILE, path=path.resolve(), files=(path.resolve(),),
                      columns=dict(columns or {}) if table else None)
    if path.is_file():
        raise UserError(f"{source}: not a dataset file (expected .npz, .hdf5, .h5, .csv or .parquet), nor a Minari "
                        "id or a converted dataset directory")
    # Run from inside the Minari root, an id is also a directory: the id wins.
    if minari_dataset_exists(source) or (download and not path.is_dir()):
        dataset = _load_minari(source, download)
        files = tuple(sorted(p.resolve() for p in pathlib.Path(dataset.spec.data_path).iterdir() if p.is_file()))
        return Source(source, MINARI, files=files, dataset=dataset)
    if path.is_dir():
        raise UserError(
            f"{source}: a directory without {METADATA_FILE}, so not a converted dataset (nor a Minari id); convert "
            f"a source into it with `python -m iql_tf.convert --source=FILE_OR_MINARI_ID --output={source}`, "
            "or pass a .npz/.hdf5/.h5 file or a Minari id (e.g. D4RL/door/human-v2, not its directory)"
        )
    if generated.is_generated(source):
        if not generate:
            return Source(source, GENERATED)
        generated.generate(source, minari_dataset_exists)
        return _resolve(source, False, False, None)
    hint = ""
    if source.startswith(generated.NAMESPACE):
        hint = f" (ids in {generated.NAMESPACE} are made by `python -m iql_tf.generate`)"
    raise UserError(
        f"{source}: no such file, converted directory or local Minari dataset (Minari root "
        f"{get_dataset_path()}){hint}; get it on a connected machine with "
        f"`pip install minari && minari download {source}` and copy the root here (point "
        "MINARI_DATASETS_PATH at it), or allow the download (make_dataset.download = True when training, "
        "--download for the converter)"
    )


def _load_minari(dataset_id: str, download: bool) -> minari.MinariDataset:
    if download and not minari_dataset_exists(dataset_id):
        logging.info("downloading Minari dataset %s", dataset_id)
    try:
        return minari.load_dataset(dataset_id, download=download)
    except (ValueError, FileNotFoundError, OSError, KeyError) as error:  # malformed id or files, unsupported version
        raise UserError(f"{dataset_id}: not a usable Minari dataset ({str(error).splitlines()[0]}); its files are "
                        "truncated, corrupt or of another Minari version: download, copy or generate it again"
                        ) from error
    except Exception as error:  # network and server errors come in many types
        if not download:
            raise
        raise UserError(f"{dataset_id}: download failed ({error}); check the id and the network") from error


def read(source: Source, report: validation.Report, env_id: Optional[str] = None,
         env_kwargs: Optional[Mapping[str, Any]] = None,
         action_bounds: Optional[Tuple[Sequence[float], Sequence[float]]] = None) -> Optional[SourceData]:
    """Reads a FILE, ARRAYS or MINARI source, recording its problems in `report`; None when they leave nothing
    to read. `env_id`/`env_kwargs` set the evaluation env (files carry none); `action_bounds` (low, high) give
    the action space of data that names no environment. An in-memory source's own settings count as given."""
    if source.kind == FILE:
        arrays, names = _file_arrays(source)
        data = _read_rows(arrays, str(source.path), report, names)
    elif source.kind == ARRAYS:
        env_id, env_kwargs, action_bounds = _in_memory_settings(source, env_id, env_kwargs, action_bounds)
        data = _read_rows(dict(source.in_memory.arrays), source.name, report)
    elif source.kind == MINARI:
        data = _read_minari(source.dataset, report)
    elif source.kind == RLDS:
        data = _read_rlds(source, report)
    elif source.kind == OGBENCH:
        data = _read_ogbench(source, report)
        if data is not None and env_id is None:
            env_id = source.ogbench.env_id  # a task's data is evaluated in that task's environment
    else:
        raise UserError(f"{source.name}: a {source.kind} dataset, not a source to read: "
                        + ("load it with make_dataset or load_converted" if source.kind == CONVERTED
                           else "it is generated when training or converting it"))
    if data is None:
        return None
    data, bounds_from = _in_its_spaces(source, data, env_id, env_kwargs, action_bounds)
    report.check_actions(str(source.path or source.name), data.transitions["actions"], data.action_low,
                         data.action_high, bounds_from)
    return data


def read_streamed(source: Source, layout: rlds_source.Layout, report: validation.Report,
                  env_id: Optional[str] = None, env_kwargs: Optional[Mapping[str, Any]] = None,
                  action_bounds: Optional[Tuple[Sequence[float], Sequence[float]]] = None,
                  ) -> "tuple[SourceData, statistics_lib.Gathered]":
    """An RLDS source read once as `layout` says, without holding it (`read`'s checks, episode by episode), for
    streaming it as it is: its facts, with the first episode's transitions alone, and the statistics and
    counts gathered on the way. Stops at the first problem (in `report`)."""
    assert source.kind == RLDS, source.kind
    episodes = rlds_source.checked_episodes(source.name, source.builder, source.rlds_options.split, layout)
    gathered = statistics_lib.Gathered()
    data = None
    for index, rows in enumerate(episodes):
        _check_rlds_rows(f"{source.name}, episode {index}", rows, report)
        if data is None and len(rows["rewards"]) and not report.problems:
            data, bounds_from = _in_its_spaces(source, _rlds_data(source, rows, layout.flattening_order), env_id,
                                               env_kwargs, action_bounds)
        if data is not None:
            report.check_actions(f"{source.name}, episode {index}", rows["actions"], data.action_low,
                                 data.action_high, bounds_from)
        if report.problems:
            break
        gathered.add(rows)
    if data is None and not report.problems:
        raise UserError(f"{source.name}: no transitions (every episode has a single step); give episodes of two "
                        "steps or more")
    return data, gathered


def _in_its_spaces(source: Source, data: SourceData, env_id: Optional[str], env_kwargs: Optional[Mapping[str, Any]],
                   action_bounds: Any) -> "tuple[SourceData, Optional[str]]":
    """`data` with its evaluation env and action bounds as given (checked against the source's own), and
    reference scores; and what the bounds come from (None: the default [-1, 1])."""
    if env_id is not None:
        data = _with_env(data, source.name, env_id, dict(env_kwargs or {}))
    bounds_from = data.env_id or (f"Minari dataset {source.name}" if source.kind == MINARI else None)
    if action_bounds is not None:
        given = _action_bounds(action_bounds, data.action_low.size)
        if bounds_from is not None:
            # Bounds that say what the environment says are no conflict (from_arrays(..., action_bounds) with an
            # evaluation env); others are.
            if not (np.allclose(given["action_low"], data.action_low) and np.allclose(given["action_high"],
                                                                                     data.action_high)):
                raise UserError(f"{source.name}: action_bounds {action_bounds} given, but {bounds_from} has its own "
                                f"action space {validation.format_bounds(data.action_low, data.action_high)}; drop "
                                "make_dataset.action_bounds / --action_bounds")
        data = dataclasses.replace(data, **given)
        bounds_from = "make_dataset.action_bounds / --action_bounds"
    return _with_reference_fallback(data), bounds_from


def _in_memory_settings(source: Source, env_id: Optional[str], env_kwargs: Optional[Mapping[str, Any]],
                        action_bounds: Any) -> Tuple[Optional[str], Optional[Mapping[str, Any]], Any]:
    """An in-memory source's env_id, env_kwargs and action_bounds where none are given; one given that differs
    from the source's is an error."""
    own = source.in_memory
    given = {"env_id": env_id, "env_kwargs": dict(env_kwargs or {}) or None, "action_bounds": plain(action_bounds)}
    settings = {"env_id": own.env_id, "env_kwargs": own.env_kwargs, "action_bounds": own.action_bounds}
    for name, value in given.items():
        if value is None or value == settings[name]:
            continue
        if settings[name] is not None:
            raise UserError(f"{source.name}: {name}={value!r} given, but the in-memory source has {name}="
                            f"{settings[name]!r}; give it once (make_dataset.{name} or the source's {name}=)")
        settings[name] = value
    return settings["env_id"], settings["env_kwargs"], settings["action_bounds"]


def _read_rows(arrays: Mapping[str, np.ndarray], where: str, report: validation.Report,
               names: Optional[Sequence[str]] = None) -> Optional[SourceData]:
    """D4RL-style rows keyed by field (timeouts or episode_id), of any source; `names`: all that the source
    holds, for the message of a missing field."""
    required = [field for field in REQUIRED_FIELDS if field != "timeouts" or "episode_id" not in arrays]
    if not report.check_keys(where, arrays, required, names):
        return None
    report.check_not_misnamed(where, "next_observations", arrays, names or list(arrays))
    observations = _checked_observations(report, where, "observations", arrays["observations"])
    if observations is None:
        return None
    rows = parts.row_count(observations)
    actions = report.check_array(where, "actions", arrays["actions"], (rows, None))
    rewards = report.check_array(where, "rewards", arrays["rewards"], (rows,))
    terminals = _check_flags(arrays, where, "terminals", rows, report)
    timeouts = _check_flags(arrays, where, "timeouts", rows, report) if "timeouts" in arrays else \
        _timeouts_of_episodes(arrays, where, rows, terminals, report)
    next_observations = None
    if "next_observations" in arrays:
        next_observations = _checked_observations(report, where, "next_observations", arrays["next_observations"],
                                                  observations)
        if next_observations is None:
            return None
    if any(values is None for values in (actions, rewards, terminals, timeouts)):
        return None
    report.check_not_empty(where, rows)
    if rows == 0:
        return None
    data = transitions_lib.from_rows(observations, actions, rewards, terminals, timeouts, next_observations)
    report.check_not_empty(where, len(data["rewards"]))
    return _without_environment(data)


def _checked_observations(report: validation.Report, where: str, field: str, values: Any, like: Any = None) -> Any:
    """Observations (an array, or a dict of parts) checked by `report`; `like`: the observations (checked) whose
    rows, parts and shapes these must have. None when unusable."""
    if parts.is_parts(values) != parts.is_parts(like) and like is not None:
        report.add(where, field, "is " + ("a dict of parts" if parts.is_parts(values) else "one array") +
                   " and observations are not", "give next_observations as observations are given")
        return None
    if not parts.is_parts(values):
        return report.check_observations(where, field, values, *(() if like is None else (len(like), like.shape[1:])))
    if like is not None and list(values) != list(like):
        report.add(where, field, f"has the parts {list(values)}, observations {list(like)}",
                   "give next_observations the parts of observations, in the same order")
        return None
    for name in values:
        if parts.bad_name(name):
            report.add(where, f"{field}/{name}", "cannot name a model input",
                       "name each part with a letter, then letters, digits or underscores (e.g. 'wrist_image'), "
                       f"other than {', '.join(parts.RESERVED_NAMES)} (the export's own)")
            return None
    if not any(np.ndim(part) == 4 for part in values.values()):
        report.add(where, field, f"is a dict of vectors ({', '.join(values)})", "observations of parts hold an image "
                   "[N, height, width, channels] at least: give vectors as one array, np.concatenate([...], axis=1)")
        return None
    checked, rows = {}, None if like is None else parts.row_count(like)
    for name, part in values.items():
        shape = None if like is None else like[name].shape[1:]
        checked[name] = report.check_observations(where, f"{field}/{name}", part, rows, shape)
        if checked[name] is None:
            return None
        rows = len(checked[name])
    return checked


def _without_environment(data: transitions_lib.Transitions, observation_keys: Optional[List[str]] = None,
                         reference: Tuple[Optional[float], Optional[float]] = (None, None)) -> SourceData:
    """Transitions of a source that names no environment: unbounded observations (parts: no bounds), actions in
    [-1, 1] unless `read` is given bounds, no episode length."""
    observations = data["observations"]
    columns = 0 if parts.is_parts(observations) else int(np.prod(observations.shape[1:]))
    action_dim = data["actions"].shape[1]
    return SourceData(transitions=data, num_episodes=int(data["dones"].sum()), env_id=None, env_kwargs={},
                      max_episode_steps=None, observation_keys=observation_keys,
                      observation_low=np.full(columns, -np.inf), observation_high=np.full(columns, np.inf),
                      action_low=np.full(action_dim, -1.0), action_high=np.full(action_dim, 1.0),
                      ref_min_score=reference[0], ref_max_score=reference[1])


def _check_flags(arrays: Mapping[str, np.ndarray], where: str, field: str, rows: int, report: validation.Report
                 ) -> Optional[np.ndarray]:
    values = report.check_array(where, field, arrays[field], (rows,))
    if values is not None:
        report.check_flags(where, field, values)
    return values


def _timeouts_of_episodes(arrays: Mapping[str, np.ndarray], where: str, rows: int,
                          terminals: Optional[np.ndarray], report: validation.Report) -> Optional[np.ndarray]:
    """Without timeouts: the last row of each episode of `episode_id` that is not terminal."""
    episode_ends = report.check_episode_ids(where, "episode_id", arrays["episode_id"], rows)
    if episode_ends is None or terminals is None:
        return None
    return episode_ends & (terminals == 0)


def _file_arrays(source: Source) -> Tuple[Dict[str, np.ndarray], List[str]]:
    """The row arrays of a FILE source, and all the names the file holds."""
    if source.columns is not None:
        arrays = tables.read_table(source.path, source.columns)
        return arrays, list(arrays)
    return _load_arrays(source.path)


def _load_arrays(path: pathlib.Path) -> Tuple[Dict[str, np.ndarray], List[str]]:
    """The D4RL fields of an npz or HDF5 file as numpy arrays (other fields are ignored), and the names of
    everything at the file's root."""
    fields = REQUIRED_FIELDS + OPTIONAL_FIELDS
    try:
        if path.suffix.lower() == ".npz":
            _check_is_npz(path)
            with np.load(path, allow_pickle=False) as file:
                arrays = {key: _npz_field(path, file, key) for key in fields if key in file.files}
                for key in ("observations", "next_observations"):  # parts stored as observations/NAME
                    named = {name[len(key) + 1:]: _npz_field(path, file, name) for name in file.files
                             if name.startswith(f"{key}/")}
                    if named and key not in arrays:
                        arrays[key] = named
                return arrays, sorted({name.split("/")[0] for name in file.files})
        with h5py.File(path, "r") as file:
            arrays = {key: np.asarray(file[key][()]) for key in fields if isinstance(file.get(key), h5py.Dataset)}
            for key in ("observations", "next_observations"):  # parts: a group of datasets
                if isinstance(file.get(key), h5py.Group):
                    arrays[key] = {name: np.asarray(part[()]) for name, part in file[key].items()
                                   if isinstance(part, h5py.Dataset)}
            return arrays, list(file.keys())
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise UserError(
            f"{path}: cannot be read as {path.suffix} ({error}); the file is corrupt or truncated"
        ) from error


def _check_is_npz(path: pathlib.Path) -> None:
    """np.load reads what is no zip archive as .npy or pickle, so other files would be reported as those."""
    with open(path, "rb") as file:
        start = file.read(len(_NPY_MAGIC))
    if start.startswith(_NPZ_MAGIC):
        return
    kind = "an .npy file (one array)" if start == _NPY_MAGIC else "no zip archive"
    raise UserError(f"{path}: not an npz file ({kind}); write the fields with np.savez({path.name!r}, "
                    "observations=..., actions=..., rewards=..., terminals=..., timeouts=...), or give a table its "
                    ".csv / .parquet suffix")


def _npz_field(path: pathlib.Path, file: Any, key: str) -> np.ndarray:
    try:
        return file[key]
    except ValueError as error:  # object arrays need pickle, which is never enabled
        raise UserError(
            f"{path}: field {key!r} is an object array ({error}); store it as a numeric array"
        ) from error


def _read_ogbench(source: Source, report: validation.Report) -> Optional[SourceData]:
    """The training split of an OGBench single-task dataset, relabelled by ogbench, with its validation split
    read and checked alike (a broken one is reported with its file)."""
    data = _read_rows(ogbench_source.load_split(source.ogbench, source.path), str(source.path), report)
    for val in source.files[1:]:
        held_out = _read_rows(ogbench_source.load_split(source.ogbench, val), str(val), report)
        if data is not None and held_out is not None:
            data = dataclasses.replace(data, validation=held_out.transitions)
    return data


def _read_rlds(source: Source, report: validation.Report) -> Optional[SourceData]:
    """An RLDS / TFDS dataset's episodes as transitions (`rlds_source.py`), checked like rows."""
    data, observation_keys = rlds_source.read(source.name, source.builder, source.rlds_options)
    _check_rlds_rows(source.name, data, report)
    return _rlds_data(source, data, observation_keys)


def _check_rlds_rows(where: str, rows: transitions_lib.Transitions, report: validation.Report) -> None:
    """Finite numbers (images, uint8, are)."""
    for key in ("observations", "actions", "rewards", "next_observations"):
        for label, values in parts.labelled(key, rows[key]):
            if not transitions_lib.is_image(values):
                report.check_array(where, label, values, (None,) * values.ndim)


def _rlds_data(source: Source, rows: transitions_lib.Transitions, observation_keys: Optional[List[str]]
               ) -> SourceData:
    name = source.builder.name  # D4RL's locomotion scores for TFDS's d4rl_mujoco_* builders, as for Minari's
    reference = D4RL_LOCOMOTION_SCORES.get(name[len("d4rl_mujoco_"):], (None, None)) if name.startswith(
        "d4rl_mujoco_") else (None, None)
    return _without_environment(rows, observation_keys, reference)


def _read_minari(dataset: minari.MinariDataset, report: validation.Report) -> Optional[SourceData]:
    keys = envs.observation_keys(dataset.observation_space)
    data_path = dataset.spec.data_path
    validation.check_action_space(f"Minari dataset {dataset.spec.dataset_id} ({data_path})", dataset.action_space)
    parts = []
    try:
        for episode in dataset.iterate_episodes():
            part = _read_episode(f"{data_path}: episode {episode.id}", episode, keys, report)
            if part is not None:
                parts.append(part)
    except (OSError, KeyError) as error:  # h5py on a truncated or damaged main_data.hdf5
        raise UserError(f"{data_path}: cannot be read ({str(error).splitlines()[0]}); the Minari dataset's files "
                        "are truncated or corrupt: download, copy or generate it again") from error
    report.check_not_empty(data_path, len(parts))
    if not parts:
        return None
    metadata = dataset.storage.metadata
    env_spec = json.loads(metadata.get("eval_env_spec") or metadata.get("env_spec") or "null") or {}
    observation_low, observation_high = (np.zeros(0), np.zeros(0)) if envs.has_parts(dataset.observation_space) \
        else _bounds(data_path, dataset.observation_space, keys)  # (parts: no bounds)
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


def _read_episode(where: str, episode: Any, keys: Optional[List[str]], report: validation.Report
                  ) -> Optional[transitions_lib.Transitions]:
    steps = len(episode.rewards)
    if steps == 0:
        return None
    observations = _check_observations(where, episode.observations, keys, steps + 1, report)
    actions = report.check_array(where, "actions", np.asarray(episode.actions), (steps, None))
    rewards = report.check_array(where, "rewards", np.asarray(episode.rewards), (steps,))
    terminations = report.check_array(where, "terminations", np.asarray(episode.terminations), (steps,))
    if any(array is None for array in (observations, actions, rewards, terminations)):
        return None
    return transitions_lib.from_episode(observations, actions, rewards, terminations)


def _check_observations(where: str, observations: Any, keys: Optional[List[str]], rows: int,
                        report: validation.Report) -> Any:
    """A Minari episode's observations: one array, a Dict flattened in `keys` order, or parts (a Dict with an
    image: `envs.has_parts`)."""
    if keys is None and isinstance(observations, Mapping):
        checked = _checked_observations(report, where, "observations",
                                        {name: np.asarray(value) for name, value in observations.items()})
        if checked is not None and parts.row_count(checked) != rows:
            report.add(where, "observations", f"holds {parts.row_count(checked)} rows for {rows - 1} steps",
                       "an episode holds one observation more than its steps")
            return None
        return checked
    if keys is None:
        return report.check_observations(where, "observations", np.asarray(observations), rows)
    columns = [report.check_array(where, f"observations/{key}", np.asarray(envs.observation_part(observations, key)),
                                  (rows, None)) for key in keys]
    return None if any(column is None for column in columns) else envs.flatten_observation(observations, keys)


def _bounds(where: str, space: gym.Space, keys: Optional[List[str]]) -> Tuple[np.ndarray, np.ndarray]:
    """Flat low/high of a Box, or of a Dict of Boxes in the flattening order."""
    boxes = [space] if keys is None else [envs.observation_part(space, key) for key in keys]
    if not all(isinstance(box, gym.spaces.Box) for box in boxes):
        raise UserError(f"{where}: space {space} is not made of Box spaces: iql-tf handles continuous spaces only")
    return (
        np.concatenate([box.low.astype(np.float64).ravel() for box in boxes]),
        np.concatenate([box.high.astype(np.float64).ravel() for box in boxes]),
    )


def _action_bounds(bounds: Tuple[Sequence[float], Sequence[float]], action_dim: int) -> Dict[str, np.ndarray]:
    """`(low, high)`, each a number or one per action dimension, as the SourceData fields."""
    try:
        low, high = (np.broadcast_to(np.asarray(b, np.float64), (action_dim,)).copy() for b in bounds)
    except (ValueError, TypeError) as error:
        raise UserError(f"action_bounds {bounds!r}: expected (low, high), each a number or {action_dim} numbers, "
                        "e.g. (-2.0, 2.0)") from error
    if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high)) and np.all(low < high)):
        raise UserError(f"action_bounds {bounds!r}: need finite low < high in every dimension")
    return {"action_low": low, "action_high": high}


def _with_env(data: SourceData, source: str, env_id: str, env_kwargs: Dict[str, Any]) -> SourceData:
    """Records `env_id` as the evaluation env, with its spaces, after checking the data fits them."""
    env = envs.make_env(env_id, env_kwargs)
    try:
        keys = envs.observation_keys(env.observation_space)
        observations = data.transitions["observations"]
        held_parts = parts.describe(observations) if parts.is_parts(observations) else None
        image_shape = observations.shape[1:] if transitions_lib.is_image(observations) else None
        envs.check_env_fits(env, keys, 0 if held_parts else int(np.prod(observations.shape[1:])),
                            data.transitions["actions"].shape[1], source, image_shape, held_parts)
        where = f"{source}: environment {env_id}"
        validation.check_action_space(where, env.action_space)
        observation_low, observation_high = (np.zeros(0), np.zeros(0)) if held_parts else _bounds(
            where, env.observation_space, keys)  # (parts: no bounds, as without an environment)
        action_low, action_high = _bounds(where, env.action_space, None)
    finally:
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
    """D4RL's locomotion reference scores where the source has none."""
    if data.ref_min_score is not None and data.ref_max_score is not None or data.env_id is None:
        return data
    domain = data.env_id.lower().split("-")[0]
    if domain not in D4RL_LOCOMOTION_SCORES:
        return data
    ref_min_score, ref_max_score = D4RL_LOCOMOTION_SCORES[domain]
    return dataclasses.replace(data, ref_min_score=ref_min_score, ref_max_score=ref_max_score)
