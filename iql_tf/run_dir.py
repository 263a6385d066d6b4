"""A run directory you can trust: one writer at a time, and checkpoints that survive damage.

- `lock()`: an advisory file lock (`DIR/.lock`) held for the run's life. A second run on the same directory
  fails at once naming the holder; the OS releases the lock when its holder dies, even by kill -9, so a
  stale lock never blocks.
- Checkpoints are found by scanning `DIR/checkpoints/` for `ckpt-STEP.index`, not by trusting the index
  file `checkpoint`: a missing or garbled index, or a damaged newest checkpoint, falls back to the newest
  intact one (every tensor read back with its checksum) and says so. Older checkpoints are deleted only
  once a newer one has been written and read back whole.

`tf.train.CheckpointManager` trusts the index file for both restoring and pruning, which is what loses work
when the index is damaged; so the checkpoints are written with `tf.train.Checkpoint.write` and the index is
kept up to date for TensorFlow's own tools (`tf.train.latest_checkpoint`) without being relied on.
"""

import contextlib
import fcntl
import os
import pathlib
import re
import socket
from typing import Any, Iterator, List, Optional, Tuple

import tensorflow as tf
from absl import logging

from iql_tf import files
from iql_tf.errors import UserError

CHECKPOINTS = "checkpoints"
_LOCK_FILE = ".lock"
_CHECKPOINT = re.compile(r"^ckpt-(\d+)\.index$")
_DAMAGE = (tf.errors.OpError, ValueError, IndexError)  # IndexError: a truncated data file


class RunDirectory:
    """The files of one run: lock, checkpoints, staging folders of interrupted writes."""

    def __init__(self, path: "str | os.PathLike"):
        self.path = pathlib.Path(path)
        self.checkpoints = self.path / CHECKPOINTS

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Holds the run's lock for the block; checks the directory can be written before any long work."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            handle = open(self.path / _LOCK_FILE, "a+")
        except OSError as error:
            raise UserError(f"--workdir {self.path}: cannot create or write it ({error.strerror}); choose a "
                            "writable folder") from error
        with handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as error:
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                raise UserError(f"--workdir {self.path} is in use by {holder}; wait for that run to finish (or stop "
                                "it), or use another --workdir") from error
            handle.seek(0)
            handle.truncate()
            handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
            handle.flush()
            for folder, _, _ in os.walk(self.path):  # the run's files, checkpoints, exports (also per seed)
                files.sweep_stale_staging(folder)
            yield

    def checkpoint_steps(self) -> List[int]:
        """Steps of the checkpoints present, newest first (whatever the index file says)."""
        if not self.checkpoints.is_dir():
            return []
        steps = [int(match.group(1)) for match in map(_CHECKPOINT.match, os.listdir(self.checkpoints)) if match]
        return sorted(steps, reverse=True)

    def prefix(self, step: int) -> str:
        return str(self.checkpoints / f"ckpt-{step}")

    def newest_intact(self) -> Optional[Tuple[int, Any]]:
        """The newest checkpoint whose every tensor reads back with its checksum, with its reader; damaged newer
        ones are logged and skipped. None when there is no checkpoint at all; a UserError when there are some
        but none is intact."""
        damaged = []
        for step in self.checkpoint_steps():
            problem, reader = _read_whole(self.prefix(step))
            if reader is not None:
                if damaged:
                    logging.warning("resuming from %s: the newer %s", self.prefix(step), "; ".join(damaged))
                return step, reader
            damaged.append(f"ckpt-{step} is damaged ({problem})")
        if damaged:
            raise UserError(f"{self.checkpoints}: no intact checkpoint ({'; '.join(damaged)}); move the folder "
                            "aside and re-run to keep what is left, or bind train.start_over = True to train from "
                            "step 0 in this directory")
        return None

    def save(self, checkpoint: tf.train.Checkpoint, step: int, keep: int) -> str:
        """Writes `ckpt-STEP`, reads it back whole, then points the index at it and deletes all but the newest
        `keep` checkpoints."""
        self.checkpoints.mkdir(parents=True, exist_ok=True)
        prefix = checkpoint.write(self.prefix(step))
        problem, reader = _read_whole(prefix)
        if reader is None:
            raise UserError(f"{prefix}: the checkpoint just written does not read back ({problem}); check the disk "
                            f"under {self.checkpoints}; older checkpoints are kept")
        kept = [s for s in self.checkpoint_steps() if s <= step][:keep]
        self._write_index(step, kept)
        for old in self.checkpoint_steps():
            if old not in kept:
                self.delete(old)
        return prefix

    def _write_index(self, latest: int, kept: List[int]) -> None:
        """The index file in the CheckpointState text format that tf.train.latest_checkpoint reads."""
        lines = [f'model_checkpoint_path: "ckpt-{latest}"']
        lines += [f'all_model_checkpoint_paths: "ckpt-{s}"' for s in reversed(kept)]
        files.write_text(self.checkpoints / "checkpoint", "\n".join(lines) + "\n")

    def delete(self, step: int) -> None:
        for path in self.checkpoints.glob(f"ckpt-{step}.*"):
            path.unlink(missing_ok=True)

    def delete_all(self) -> None:
        """For train.start_over: every checkpoint and the index go."""
        for step in self.checkpoint_steps():
            self.delete(step)
        (self.checkpoints / "checkpoint").unlink(missing_ok=True)


def _read_whole(prefix: str) -> Tuple[str, Optional[Any]]:
    """Reads every tensor of a checkpoint (which verifies its checksums); (problem, None) when that fails."""
    try:
        reader = tf.train.load_checkpoint(prefix)
        for name in reader.get_variable_to_shape_map():
            reader.get_tensor(name)
    except _DAMAGE as error:
        message = getattr(error, "message", None) or str(error)
        return message.splitlines()[0][:200], None
    return "", reader
