"""The dataset the trainer sees: source -> (cached) TFRecord shards -> whole in-memory tensors.

`make_dataset` is the one gin-configurable entry point. A source that is not yet converted is converted
once into the cache (keyed by the source files' path, size and mtime, so an edited file is re-converted)
and always read back from the shards, so every run sees data that went through the same path.
"""

import hashlib
import json
import os
import pathlib
import re
from typing import Any, Dict, Mapping, NamedTuple, Optional, Tuple

import gin
import tensorflow as tf
from absl import logging

from iql_tf.data import rewards as rewards_lib
from iql_tf.data import generate, shards, sources
from iql_tf.data.convert import convert
from iql_tf.data.metadata import FORMAT_VERSION, METADATA_FILE, DatasetMetadata, load_metadata
from iql_tf.errors import UserError

# SPEC.md section 2: the log-likelihood of an action at +-1 under tanh(mean) is -inf; the reference clips too.
ACTION_LIMIT = 1.0 - 1e-5


class OfflineDataset(NamedTuple):
    """Float32 tensors keyed as `transitions.TRANSITION_KEYS` (actions clipped, rewards preprocessed)."""

    tensors: Dict[str, tf.Tensor]
    metadata: DatasetMetadata
    reward_transform: rewards_lib.RewardTransform


def load_converted(directory: "str | pathlib.Path") -> Tuple[Dict[str, tf.Tensor], DatasetMetadata]:
    """The raw tensors and metadata of a converted directory, checksums and counts verified."""
    directory = pathlib.Path(directory).expanduser()
    metadata = load_metadata(directory)
    return shards.read_shards(directory, metadata), metadata


def default_cache_dir() -> pathlib.Path:
    return pathlib.Path(os.environ.get("IQL_TF_DATA_DIR", "~/.iql_tf/datasets")).expanduser()


def converted_directory(
    source: str,
    cache_dir: pathlib.Path,
    download: bool = False,
    env_id: Optional[str] = None,
    env_kwargs: Optional[Mapping[str, Any]] = None,
) -> pathlib.Path:
    """`source` itself if it is a converted directory, else its conversion in `cache_dir` (made if needed).

    A converted directory records its evaluation env, so `env_id`/`env_kwargs` given with one are an error
    rather than silently ignored. The project's own Minari ids are generated first when missing.
    """
    path = pathlib.Path(source).expanduser()
    if (path / METADATA_FILE).is_file():
        _check_no_env_override(path, env_id, env_kwargs)
        return path
    generate.generate_if_missing(source)
    files = sources.source_files(source, download)
    key = hashlib.sha256(
        json.dumps([FORMAT_VERSION, env_id, env_kwargs or {}]).encode()
        + "".join(f"{file}:{file.stat().st_size}:{file.stat().st_mtime_ns}\n" for file in files).encode()
    ).hexdigest()[:16]
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", path.stem if sources.is_file_source(source) else source)
    target = cache_dir / f"{name}-{key}"
    if not (target / METADATA_FILE).is_file():
        logging.info("converting %s once into the cache %s", source, target)
        try:
            convert(source, target, download=download, env_id=env_id, env_kwargs=env_kwargs)
        except UserError:
            if not (target / METADATA_FILE).is_file():  # else another process converted it meanwhile
                raise
    return target


def _check_no_env_override(
    directory: pathlib.Path, env_id: Optional[str], env_kwargs: Optional[Mapping[str, Any]]
) -> None:
    """A converted directory's metadata.json fixes its evaluation env: a binding that would be ignored is an error."""
    if env_id is None and not env_kwargs:
        return
    metadata = load_metadata(directory)
    raise UserError(
        f"{directory}: is already converted with env_id={metadata.env_id!r} and env_kwargs={metadata.env_kwargs}, "
        f"so make_dataset.env_id / env_kwargs cannot apply to it; re-convert its source with --env_id "
        f"(python -m iql_tf.data.convert --source={metadata.source} --output=NEW_DIR --env_id=...) or pass the "
        "source itself to make_dataset, or drop the env_id / env_kwargs bindings"
    )


@gin.configurable
def make_dataset(
    source: str,
    reward_preprocessing: str = "none",
    cache_dir: Optional[str] = None,
    download: bool = False,
    env_id: Optional[str] = None,
    env_kwargs: Optional[Mapping[str, Any]] = None,
) -> OfflineDataset:
    """Loads `source` into memory for training.

    Args:
      source: a converted directory, a D4RL-style .npz/.hdf5/.h5 file, or a Minari dataset id in the local
        Minari root (the project's generated ids are generated when missing).
      reward_preprocessing: 'none', 'locomotion' or 'antmaze' (see `rewards.py`).
      cache_dir: where conversions of non-converted sources are kept; default $IQL_TF_DATA_DIR or
        ~/.iql_tf/datasets.
      download: let Minari download a dataset that is not local (otherwise a missing id is an error).
      env_id, env_kwargs: evaluation environment to record for sources that carry none (npz/HDF5), or to
        override a Minari dataset's; an error with a converted directory (its metadata.json fixes the env).
    """
    rewards_lib.check_mode(reward_preprocessing)
    cache = pathlib.Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    tensors, metadata = load_converted(converted_directory(source, cache, download, env_id, env_kwargs))
    transform = rewards_lib.reward_transform(
        reward_preprocessing, tensors["rewards"].numpy(), tensors["dones"].numpy()
    )
    logging.info(
        "dataset %s: %d transitions, %d trajectories; rewards * %g + %g (%s)",
        source, metadata.num_transitions, metadata.num_episodes, transform.scale, transform.shift, transform.mode,
    )
    tensors = dict(
        tensors,
        actions=tf.clip_by_value(tensors["actions"], -ACTION_LIMIT, ACTION_LIMIT),
        rewards=tensors["rewards"] * transform.scale + transform.shift,
    )
    return OfflineDataset(tensors, metadata, transform)
