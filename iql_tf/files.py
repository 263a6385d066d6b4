"""Writing files and directories so that readers and crashes only ever see the old or the new version.

Every writer stages beside its target under a hidden name that says which host and process owns it
(`.NAME.partial-HOST-PID-XXXX`), so a staging folder left by a killed process can be told from one that is
still being written, and swept by the next process that writes there (`sweep_stale_staging`).
"""

import contextlib
import ctypes
import ctypes.util
import errno
import json
import os
import pathlib
import shutil
import socket
import tempfile
from typing import TYPE_CHECKING, Any, Iterator, List, Union

from absl import logging

if TYPE_CHECKING:
    import matplotlib.figure

PathLike = Union[str, os.PathLike]
_STAGING_MARK = ".partial-"
_RENAME_EXCHANGE = 2  # renameat2 flag (linux/fs.h): swap two paths atomically
_AT_FDCWD = -100


def _staging_prefix(name: str) -> str:
    return f".{name}{_STAGING_MARK}{socket.gethostname()}-{os.getpid()}-"


@contextlib.contextmanager
def atomic_file(path: PathLike) -> Iterator[str]:
    """Yields a temporary path beside `path`; once the body has written it, one rename replaces `path`."""
    path = pathlib.Path(path)
    handle, temporary = tempfile.mkstemp(prefix=_staging_prefix(path.name), dir=path.parent)
    os.fchmod(handle, 0o666 & ~_umask())  # mkstemp's 0o600 would follow the rename
    os.close(handle)
    try:
        yield temporary
        sync([pathlib.Path(temporary)])  # the content on disk before the rename makes it visible
        os.replace(temporary, path)
        sync([path.parent])
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def write_text(path: PathLike, text: str) -> None:
    """Replaces `path` with `text` in one step."""
    with atomic_file(path) as temporary:
        pathlib.Path(temporary).write_text(text)


def write_json(path: PathLike, value: Any) -> None:
    """Replaces `path` with `value` as indented JSON in one step."""
    write_text(path, json.dumps(value, indent=2) + "\n")


def write_png(figure: "matplotlib.figure.Figure", path: PathLike, dpi: int = 150) -> None:
    """Replaces `path` with a matplotlib figure as PNG in one step, then closes the figure (150 dpi: small
    text stays readable)."""
    import matplotlib.pyplot as plt

    with atomic_file(path) as temporary:
        figure.savefig(temporary, format="png", dpi=dpi)
    plt.close(figure)


@contextlib.contextmanager
def atomic_directory(path: PathLike, replace: bool = False) -> Iterator[pathlib.Path]:
    """Yields an empty staging directory beside `path`; once the body has filled it, it becomes `path`.

    An existing `path` is an error unless `replace`; then the two are exchanged in one step where the
    filesystem can (Linux renameat2), so `path` is a complete directory at every instant, and the old one is
    deleted afterwards. A failing body leaves `path` as it was and removes the staging directory.
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = pathlib.Path(tempfile.mkdtemp(prefix=_staging_prefix(path.name), dir=path.parent))
    staging.chmod(0o777 & ~_umask())  # mkdtemp's 0o700 would follow the rename
    try:
        yield staging
        sync([*(pathlib.Path(folder) / name for folder, _, names in os.walk(staging) for name in names),
              *(pathlib.Path(folder) for folder, _, _ in os.walk(staging))])
        if path.exists() and replace:
            _exchange(staging, path)  # `staging` now holds the old version
        else:
            try:
                staging.rename(path)  # replaces nothing but an empty directory
            except OSError as error:
                if error.errno in (errno.EEXIST, errno.ENOTEMPTY, errno.EISDIR, errno.ENOTDIR):
                    raise FileExistsError(errno.EEXIST, "exists already", str(path)) from error
                raise
        sync([path.parent])
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def sync(paths: List[pathlib.Path]) -> None:
    """fsync each file or folder, so that what was written survives a power loss, not only a killed process."""
    for path in paths:
        descriptor = os.open(path, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _exchange(first: pathlib.Path, second: pathlib.Path) -> None:
    """Swaps two directories atomically; falls back to two renames where renameat2 is not available."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    rename2 = getattr(libc, "renameat2", None)
    if rename2 is not None and rename2(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second),
                                       _RENAME_EXCHANGE) == 0:
        return
    # Not Linux, old glibc, or a filesystem without RENAME_EXCHANGE: `second` is missing for an instant.
    retired = first.with_name(first.name + "old")
    second.rename(retired)
    first.rename(second)
    retired.rename(first)


def sweep_stale_staging(directory: PathLike) -> List[pathlib.Path]:
    """Deletes staging files and folders in `directory` left by dead processes of this host; returns them."""
    directory = pathlib.Path(directory)
    if not directory.is_dir():
        return []
    host = socket.gethostname()
    removed = []
    for path in directory.iterdir():
        owner = path.name.rpartition(_STAGING_MARK)[2] if _STAGING_MARK in path.name else ""
        owner_host, _, rest = owner.rpartition("-")[0].rpartition("-")
        if not owner or owner_host != host or not rest.isdigit() or _alive(int(rest)):
            continue
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    if removed:
        logging.info("removed %d staging folder(s) left by interrupted writes in %s", len(removed), directory)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True
