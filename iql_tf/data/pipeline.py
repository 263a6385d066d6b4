"""The dataset the trainer sees: source -> (cached) TFRecord shards -> prepared tensors held in memory, or a
stream of them (`streaming.py`).

`make_dataset(DataSettings)` is the one entry point (`make_dataset.*` in gin). A source that is not yet converted
is converted once into the cache (keyed by the source files' path, size and mtime, so an edited file is
re-converted) and always read back from the shards, so every run sees data that went through the same path.
What is read from the shards stays in TensorFlow: prepared by TensorFlow ops and handed to the replay buffer's
variables, never copied through numpy.
"""

import os
import pathlib
import re
import tempfile
from typing import Any, Dict, Mapping, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf
from absl import logging

from iql_tf import files, json_records
from iql_tf.data import frame_stacks, rlds_source, shards, sources, storage, streaming
from iql_tf.data import rewards as rewards_lib
from iql_tf.data.conversion import VALIDATION, convert, describe_stream
from iql_tf.data.metadata import METADATA_FILE, DatasetMetadata, load_metadata
from iql_tf.data.preprocessing import Preprocessing
from iql_tf.errors import UserError
from iql_tf.settings import DataSettings



# The cache keys' version: metadata format 5 only added what stream entries hold (`stream_of`), so the format 4
# entries already in a cache are still keyed (and read) as they were.
_CACHE_KEY_VERSION = 4


class OfflineDataset(NamedTuple):
    """A converted dataset ready for training: held in memory (`tensors`: float32 tensors keyed as
    `transitions.TRANSITION_KEYS`, as the networks see them: observations normalised if asked, actions in
    [-1, 1] and clipped, rewards preprocessed; uint8 images each held once, with `shards.END_FRAMES` and
    `shards.NEXT_FRAME` instead of next observations) or to be streamed from `directory` (`tensors` None), with its
    metadata and preprocessing. The replay buffer copies the tensors into its variables; the trainer keeps
    only the metadata and the preprocessing, so the data is held once."""

    tensors: Optional[Dict[str, tf.Tensor]]
    metadata: DatasetMetadata
    preprocessing: Preprocessing
    directory: Optional[str] = None  # a local path or a tf.io.gfile URI
    validation: Optional[Dict[str, tf.Tensor]] = None  # the held-out split, prepared alike, always in memory


def load_converted(directory: "str | pathlib.Path", fix: str = "re-run the conversion", next_frames: bool = True
                   ) -> Tuple[Dict[str, tf.Tensor], DatasetMetadata]:
    """The raw tensors and metadata of a converted directory (a local path or a tf.io.gfile URI), checksums
    and counts verified; `next_frames` False: images held once (`shards.read_shards`)."""
    directory = storage.normalise(directory)
    metadata = load_metadata(directory, fix)
    _check_has_shards(directory, metadata)
    return shards.read_shards(directory, metadata, fix, next_frames), metadata


def _check_has_shards(directory: str, metadata: DatasetMetadata) -> None:
    """A cache entry of an RLDS dataset streamed as it is holds no shards and is no converted dataset."""
    if metadata.stream_of is not None:
        raise UserError(f"{directory}: describes {metadata.source} streamed as it is and holds no data of its own; "
                        f"give make_dataset.source = '{metadata.source}', or convert it (iql-convert "
                        f"--source={metadata.source} --output=DIR) and give DIR")


def default_cache_dir() -> str:
    return storage.normalise(os.environ.get("IQL_TF_DATA_DIR", "~/.iql_tf/datasets"))


def converted_directory(resolved: sources.Source, cache_dir: "str | pathlib.Path", env_id: Optional[str] = None,
                        env_kwargs: Optional[Mapping[str, Any]] = None,
                        action_bounds: Optional[Tuple[Sequence[float], Sequence[float]]] = None,
                        validation_fraction: float = 0.0, stream: bool = False) -> str:
    """The converted directory of a resolved source: a converted directory as is, anything else converted once
    into `cache_dir` (a damaged cache entry is made again). Both may be local paths or tf.io.gfile URIs (a
    conversion into a URI cache is made locally, then uploaded with its metadata.json last). With `stream`
    (an RLDS source), the entry describes the source to be streamed as it is (`conversion.describe_stream`)."""
    settings = {"env_id": env_id, "env_kwargs": dict(env_kwargs or {}), "action_bounds": action_bounds}
    if resolved.kind == sources.CONVERTED:
        metadata = load_metadata(resolved.path)
        _check_has_shards(str(resolved.path), metadata)
        _check_no_overrides(resolved.path, metadata, settings)
        if validation_fraction and not storage.is_file(
                storage.join(storage.join(storage.normalise(resolved.path), VALIDATION), METADATA_FILE)):
            raise UserError(f"{resolved.path}: make_dataset.validation_fraction = {validation_fraction}, but this "
                            "converted dataset holds no held-out split; convert its source again with "
                            f"--validation_fraction={validation_fraction}, or pass the source itself")
        return storage.normalise(resolved.path)
    if validation_fraction:  # the key of a conversion without a held-out split stays what it was
        settings["validation_fraction"] = validation_fraction
    make = describe_stream if stream else convert
    key = json_records.digest([_CACHE_KEY_VERSION, dict(settings, stream=True) if stream else settings,
                               dict(resolved.columns or {}), sources.identity(resolved)])
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", resolved.path.stem if resolved.kind == sources.FILE else resolved.name)
    cache_dir = storage.normalise(cache_dir)
    target = storage.join(cache_dir, f"{name}-{key}")
    if not storage.is_uri(cache_dir):
        files.sweep_stale_staging(cache_dir)
    if storage.is_file(storage.join(target, METADATA_FILE)):
        try:
            load_metadata(target)
            return target
        except UserError as error:
            # The cache holds only derived data: a damaged or incomplete entry is made again.
            logging.warning("cache entry %s is damaged (%s): converting %s again", target, error, resolved.name)
    storage.remove_tree(target)  # damaged, or an upload cut short
    logging.info("converting %s once into the cache %s", resolved.name, target)
    try:
        if storage.is_uri(cache_dir):
            with tempfile.TemporaryDirectory() as local:
                make(resolved, pathlib.Path(local) / "converted", **settings)
                storage.upload(pathlib.Path(local) / "converted", target, last=METADATA_FILE)
        else:
            make(resolved, target, **settings)
    except UserError:
        if not storage.is_file(storage.join(target, METADATA_FILE)):  # else another process converted it meanwhile
            raise
    return target


def _check_no_overrides(directory: pathlib.Path, metadata: DatasetMetadata, settings: Dict[str, Any]) -> None:
    """A converted directory's metadata.json (`metadata`) fixes its environment and bounds: a binding that would
    be ignored is an error."""

    def its_own(name: str, value: Any) -> bool:  # bounds that say what the directory's say are no override
        if name != "action_bounds":
            return False
        width = len(metadata.action_low)
        return bool(np.allclose(np.broadcast_to(np.asarray(value[0], float), width), metadata.action_low) and
                    np.allclose(np.broadcast_to(np.asarray(value[1], float), width), metadata.action_high))

    given = [name for name, value in settings.items() if value and not its_own(name, value)]
    if not given:
        return
    raise UserError(
        f"{directory}: is already converted with env_id={metadata.env_id!r}, env_kwargs={metadata.env_kwargs} and "
        f"its action bounds, so make_dataset.{given[0]} cannot apply to it; re-convert its source with the setting "
        f"(python -m iql_tf.convert --source={metadata.source} --output=NEW_DIR ...), or pass the source "
        "itself to make_dataset, or drop the binding"
    )


def preprocessing_of(metadata: DatasetMetadata, reward_preprocessing: str,
                     normalize_observations: bool) -> Preprocessing:
    """The preprocessing of a converted dataset, from the statistics its conversion recorded."""
    if metadata.images and normalize_observations:
        what = "parts, which are taken as they are (images scaled by 1/255 by the networks)" if metadata.parts else \
            "images, which the networks scale by 1/255 themselves"
        raise UserError(f"{metadata.source}: make_dataset.normalize_observations = True, but its observations are "
                        f"{what}; bind it to False")
    statistics = metadata.statistics
    return Preprocessing.from_statistics(
        np.asarray(statistics["observation_mean"]), np.asarray(statistics["observation_std"]),
        np.asarray(metadata.action_low), np.asarray(metadata.action_high),
        rewards_lib.transform_from_returns(reward_preprocessing, statistics["trajectory_return_min"],
                                           statistics["trajectory_return_max"], metadata.num_episodes),
        normalize_observations)


def make_dataset(settings: DataSettings) -> OfflineDataset:
    """`settings.source`, converted once, held in memory or to be streamed (`settings.streaming`; None: stream
    when the converted shards exceed the memory budget), prepared as `settings` says (see `DataSettings`)."""
    resolved = sources.resolve(settings.require_source(), settings.download, generate=True, columns=settings.columns,
                               ogbench_dir=settings.ogbench_dir, tfds_data_dir=settings.tfds_data_dir,
                               rlds_options=rlds_source.RLDSOptions(settings.observation_keys, settings.action_keys,
                                                                    settings.rlds_final_step))
    reward_preprocessing, normalize_observations = settings.reward_preprocessing, settings.normalize_observations
    cache = storage.normalise(settings.cache_dir) if settings.cache_dir else default_cache_dir()
    as_is = resolved.kind == sources.RLDS and _as_is(settings, resolved)  # (never with a held-out split)
    directory = converted_directory(resolved, cache, settings.env_id, settings.env_kwargs, settings.action_bounds,
                                    settings.validation_fraction, stream=as_is)
    metadata = load_metadata(directory)
    if settings.frame_stack > 1 and not metadata.images:
        raise UserError(f"{metadata.source}: make_dataset.frame_stack = {settings.frame_stack}, but its observations "
                        "are vectors; frames are stacked for image observations only: bind it to 1")
    longest = metadata.statistics.get("trajectory_length_max")  # (not recorded before iql-tf counted it)
    if longest is not None and settings.frame_stack > longest:
        raise UserError(f"{metadata.source}: make_dataset.frame_stack = {settings.frame_stack} is longer than its "
                        f"longest trajectory ({longest} step{'s' if longest > 1 else ''}), so every stack would "
                        f"repeat a trajectory's first frame; bind it to at most {longest}")
    preprocessing = preprocessing_of(metadata, reward_preprocessing, normalize_observations)
    _log_dataset(metadata, preprocessing)
    if as_is:
        return OfflineDataset(None, metadata, preprocessing, directory)
    validation = _held_out(directory, preprocessing, settings.frame_stack) if settings.validation_fraction else None
    if _streams(settings, streaming.converted_bytes(metadata), directory):
        return OfflineDataset(None, metadata, preprocessing, directory, validation)
    try:
        tensors, metadata = load_converted(directory, next_frames=False)  # images: each frame held once
    except UserError as error:
        if resolved.kind == sources.CONVERTED:
            raise  # the user's own converted directory: never deleted
        # A cache entry damaged after its check above (shards are verified only as they are read): made again.
        logging.warning("cache entry %s is damaged (%s): converting it again", directory, error)
        storage.remove_tree(directory)
        tensors, metadata = load_converted(converted_directory(resolved, cache, settings.env_id, settings.env_kwargs,
                                                               settings.action_bounds), next_frames=False)
        preprocessing = preprocessing_of(metadata, reward_preprocessing, normalize_observations)  # the new one's
    prepared = dict(tensors, **preprocessing.transitions(tensors, tf.clip_by_value))
    del tensors
    return OfflineDataset(prepared, metadata, preprocessing, directory, validation)


def _held_out(directory: str, preprocessing: Preprocessing, frame_stack: int) -> Dict[str, tf.Tensor]:
    """The held-out split of a converted directory, prepared with the training part's preprocessing (its
    images stacked as `frame_stack` says)."""
    tensors, metadata = load_converted(storage.join(directory, VALIDATION), "convert the source again")
    logging.info("held-out split %s: %d transitions in %d trajectories", metadata.source, metadata.num_transitions,
                 metadata.num_episodes)
    if frame_stack > 1:
        rows = tf.range(metadata.num_transitions)
        offsets = frame_stacks.trajectory_offsets(tensors["dones"])
        tensors["observations"], tensors["next_observations"] = frame_stacks.gather(
            tensors["observations"], tensors["next_observations"], offsets, rows, frame_stack)  # (every row, in order)
    return dict(tensors, **preprocessing.transitions(tensors, tf.clip_by_value))


def _as_is(settings: DataSettings, resolved: sources.Source) -> bool:
    """Whether an RLDS source is streamed as it is, from its own shards (`DataSettings.rlds_as_is`): a dataset
    that does not fit in memory is not copied a second time, unless a held-out split needs the conversion."""
    if settings.rlds_as_is is False:
        return False
    if settings.validation_fraction:
        if settings.rlds_as_is:
            raise UserError(f"{resolved.name}: make_dataset.validation_fraction with make_dataset.rlds_as_is = True; "
                            "a held-out split needs the dataset converted: drop one of them")
        logging.info("%s: converted, not streamed as it is, for its held-out split", resolved.name)
        return False
    if settings.rlds_as_is:
        return True
    size, budget = rlds_source.split_bytes(resolved.builder, resolved.rlds_options), settings.memory_budget_bytes()
    as_is = settings.streaming is not False and size > budget
    logging.info("%s: %.2f GB of records, memory budget %.2f GB: %s", resolved.name, size / 1e9, budget / 1e9,
                 "streamed as it is (make_dataset.rlds_as_is)" if as_is else "converted once")
    return as_is


def _streams(settings: DataSettings, size: int, directory: str) -> bool:
    """Whether to stream: as asked, or (None) when the converted shards' `size` in bytes exceeds the memory
    budget."""
    budget = settings.memory_budget_bytes()
    if settings.streaming is None:
        stream = size > budget
        logging.info("dataset %s: %.2f GB converted, memory budget %.2f GB (make_dataset.memory_budget_gb; default: "
                     "a quarter of this machine's memory): %s", directory, size / 1e9, budget / 1e9,
                     "streamed through tf.data" if stream else "held in memory")
        return stream
    logging.info("dataset %s: %.2f GB converted, %s (make_dataset.streaming = %s)", directory, size / 1e9,
                 "streamed through tf.data" if settings.streaming else "held in memory", settings.streaming)
    return settings.streaming


def _log_dataset(metadata: DatasetMetadata, preprocessing: Preprocessing) -> None:
    logging.info(
        "dataset %s: %d transitions, %d trajectories; rewards * %g + %g (%s)%s",
        metadata.source, metadata.num_transitions, metadata.num_episodes, preprocessing.reward.scale,
        preprocessing.reward.shift, preprocessing.reward.mode,
        "; observations normalised" if preprocessing.normalize_observations else "",
    )
