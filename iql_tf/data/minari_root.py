"""The local Minari root (`MINARI_DATASETS_PATH`, default ~/.minari/datasets): which ids it holds, and writing
a new dataset into it atomically.

minari writes a dataset in place and has no argument for where: a write killed half-way would leave a
dataset at its id that every later load fails on. So a dataset is written into a hidden staging root inside
the real one (same filesystem; minari skips hidden folders when listing), with `MINARI_DATASETS_PATH`
pointing there for the write only, and its directory is renamed into place once complete. A staging folder
left by a killed run is ignored by minari and by later writes (each write makes its own).
"""

import contextlib
import os
import pathlib
import shutil
import tempfile
from typing import Callable, Iterator

import minari
from minari.dataset.minari_dataset import parse_dataset_id
from minari.namespace import create_namespace, list_local_namespaces
from minari.storage.datasets_root_dir import get_dataset_path

from iql_tf.errors import UserError

ROOT_VARIABLE = "MINARI_DATASETS_PATH"
STAGING_PREFIX = ".iql_tf-partial-"


def dataset_exists(dataset_id: str) -> bool:
    """Whether the local root holds `dataset_id` (minari's own test: its `data` folder exists)."""
    return (get_dataset_path(dataset_id) / "data").is_dir()


def check_new_id(dataset_id: str, overwrite: bool) -> None:
    """Fails early, before any generation, on a malformed id or one that exists without --overwrite."""
    try:
        parse_dataset_id(dataset_id)
    except (ValueError, TypeError) as error:
        raise UserError(f"--dataset_id={dataset_id!r} is malformed; use namespace/name-vN, e.g. me/hopper/random-v0"
                        ) from error
    if get_dataset_path(dataset_id).exists() and not overwrite:
        raise UserError(
            f"{get_dataset_path(dataset_id)}: Minari dataset {dataset_id} already exists; pass --overwrite to "
            "replace it or choose another --dataset_id"
        )


def write_atomically(dataset_id: str, overwrite: bool, write: Callable[[], None]) -> minari.MinariDataset:
    """Runs `write` (which creates `dataset_id` with minari) in a staging root, then moves the dataset into
    the real root, replacing an existing one only if `overwrite` and only once the new one is complete.

    A failed or interrupted write leaves the root as it was (a kill leaves only a hidden staging folder).
    """
    root = get_dataset_path()
    try:
        staging = pathlib.Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=root))
    except OSError as error:
        raise UserError(f"{root}: cannot write to the Minari root ({error.strerror}); point "
                        f"{ROOT_VARIABLE} at a writable folder") from error
    try:
        with _root_variable(staging):
            write()
        _create_namespace(dataset_id)
        _move_into_place(staging / dataset_id, get_dataset_path(dataset_id), staging / "replaced", overwrite)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return minari.load_dataset(dataset_id)


@contextlib.contextmanager
def _root_variable(path: pathlib.Path) -> Iterator[None]:
    """Points minari at `path` for the block, restoring the variable (or its absence) afterwards."""
    previous = os.environ.get(ROOT_VARIABLE)
    os.environ[ROOT_VARIABLE] = str(path)
    try:
        yield
    finally:
        if previous is None:
            del os.environ[ROOT_VARIABLE]
        else:
            os.environ[ROOT_VARIABLE] = previous


def _create_namespace(dataset_id: str) -> None:
    """The id's namespace in the real root, with its metadata file, as minari's own writer makes it."""
    namespace = parse_dataset_id(dataset_id)[0]
    if namespace is not None and namespace not in list_local_namespaces():
        create_namespace(namespace)


def _move_into_place(new: pathlib.Path, target: pathlib.Path, replaced: pathlib.Path, overwrite: bool) -> None:
    """Renames `new` to `target`; an existing target is first moved to `replaced` (inside the staging root,
    deleted with it) and moved back if the rename fails."""
    if target.exists():
        if not overwrite:
            raise UserError(f"{target}: Minari dataset was created by another process during the generation; "
                            "pass --overwrite to replace it or choose another --dataset_id")
        target.rename(replaced)
    try:
        new.rename(target)
    except OSError as error:
        if replaced.exists():
            replaced.rename(target)
        raise UserError(f"{target}: cannot move the generated dataset into place ({error})") from error
