"""Where converted datasets may live: local paths, or any filesystem `tf.io.gfile` opens, named by a URI
(`gs://bucket/data/hopper`, `file:///data/hopper`, ...). Local paths go through the os module; URIs through
tf.io.gfile, imported only for them (reading a local metadata.json stays free of TensorFlow)."""

import os
import pathlib
import shutil
from typing import List, Union

PathLike = Union[str, os.PathLike]


def is_uri(path: PathLike) -> bool:
    return "://" in str(path)


def normalise(path: PathLike) -> str:
    """A URI as given; a local path expanded (~) as a string."""
    return str(path) if is_uri(path) else str(pathlib.Path(path).expanduser())


def join(directory: PathLike, name: str) -> str:
    return f"{str(directory).rstrip('/')}/{name}" if is_uri(directory) else os.path.join(directory, name)


def _gfile():
    import tensorflow as tf

    return tf.io.gfile


def is_file(path: PathLike) -> bool:
    if is_uri(path):
        return _gfile().exists(str(path)) and not _gfile().isdir(str(path))
    return os.path.isfile(path)


def size_and_mtime(path: PathLike) -> "tuple[int, int]":
    """A file's size in bytes and its modification time in ns (what a conversion cache key holds)."""
    if is_uri(path):
        stat = _gfile().stat(str(path))
        return int(stat.length), int(stat.mtime_nsec)
    stat = os.stat(path)
    return stat.st_size, stat.st_mtime_ns


def read_text(path: PathLike) -> str:
    if is_uri(path):
        with _gfile().GFile(str(path), "r") as file:
            return file.read()
    return pathlib.Path(path).read_text()


def open_binary(path: PathLike):
    return _gfile().GFile(str(path), "rb") if is_uri(path) else open(path, "rb")


def glob(directory: PathLike, pattern: str) -> List[str]:
    """The paths in `directory` matching `pattern` (a file-name glob)."""
    if is_uri(directory):
        return sorted(_gfile().glob(join(directory, pattern)))
    return sorted(str(path) for path in pathlib.Path(directory).glob(pattern))


def upload(local_directory: pathlib.Path, target: str, last: str) -> None:
    """Copies a local directory's files to `target` (a URI), the file `last` at the end: a reader that finds
    `last` finds the rest."""
    gfile = _gfile()
    gfile.makedirs(target)
    names = sorted(path.name for path in local_directory.iterdir() if path.name != last) + [last]
    for name in names:
        gfile.copy(str(local_directory / name), join(target, name), overwrite=True)


def remove_tree(path: PathLike) -> None:
    if is_uri(path):
        if _gfile().exists(str(path)):
            _gfile().rmtree(str(path))
    else:
        shutil.rmtree(path, ignore_errors=True)
