"""Writing a new dataset into the local Minari root (`MINARI_DATASETS_PATH`, default ~/.minari/datasets)
atomically.

minari writes a dataset in place and has no argument for where: a write killed half-way would leave a
dataset at its id that every later load fails on. So minari writes into a private root inside a staging
folder beside the id's directory (`files.atomic_directory`), with `MINARI_DATASETS_PATH` pointing there for
the write only; the dataset's files are then lifted into the staging folder, which replaces the id's
directory in one step. A staging folder left by a killed process is ignored by minari (it is hidden) and
removed by the next write.
"""

import contextlib
import os
import pathlib
import shutil
from typing import Callable, Iterator

import minari
from minari.dataset.minari_dataset import parse_dataset_id
from minari.namespace import create_namespace, list_local_namespaces
from minari.storage.datasets_root_dir import get_dataset_path

from iql_tf import files
from iql_tf.errors import UserError

ROOT_VARIABLE = "MINARI_DATASETS_PATH"
_PRIVATE_ROOT = "minari-root"


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
    """Runs `write` (which creates `dataset_id` with minari) in a private root, then moves the dataset into
    place, replacing an existing one only if `overwrite` and only once the new one is complete."""
    root = get_dataset_path()
    target = get_dataset_path(dataset_id)
    try:
        _create_namespace(dataset_id)
        files.sweep_stale_staging(target.parent)
        with files.atomic_directory(target, replace=overwrite) as staging:
            private_root = staging / _PRIVATE_ROOT
            with _root_variable(private_root):
                write()
            for item in (private_root / dataset_id).iterdir():
                item.rename(staging / item.name)
            shutil.rmtree(private_root)
    except FileExistsError as error:
        raise UserError(f"{target}: Minari dataset was created by another process during the generation; "
                        "pass --overwrite to replace it or choose another --dataset_id") from error
    except PermissionError as error:
        raise UserError(f"{root}: cannot write to the Minari root ({error.strerror}); point "
                        f"{ROOT_VARIABLE} at a writable folder") from error
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
