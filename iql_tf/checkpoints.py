"""A run's checkpoints folder: checkpoints found by scanning, written then read back, pruned only after that.

Checkpoints are found by scanning `DIR/checkpoints/` for `ckpt-STEP.index`, not by trusting the index file
`checkpoint`: a missing or garbled index, or a damaged newest checkpoint, falls back to the newest intact one
(every tensor read back with its checksum) and says so. Older checkpoints are deleted only once a newer one
has been written and read back whole. The online phase's transitions sit beside them as
`online-FIRST-LAST.npz` chunks (`online_chunk`).

`tf.train.CheckpointManager` trusts the index file for both restoring and pruning, which is what loses work
when the index is damaged; so the checkpoints are written with `tf.train.Checkpoint.write` and the index is
kept up to date for TensorFlow's own tools (`tf.train.latest_checkpoint`) without being relied on.
"""

import os
import pathlib
import re
import shutil
from typing import Any, List, Optional, Tuple

import tensorflow as tf
from absl import logging

from iql_tf import files
from iql_tf.errors import UserError, first_line

_CHECKPOINT = re.compile(r"^ckpt-(\d+)\.index$")
_ONLINE_CHUNK = re.compile(r"^online-(\d+)-(\d+)\.npz$")
_TEMPORARY = re.compile(r"^ckpt-\d+_temp")  # TensorFlow's staging folder of a checkpoint being written
# Read errors that say nothing of a checkpoint's files (permissions, a full disk, a network filesystem's
# hiccup) stop the run instead of counting as damage: they must not make the next save prune a good
# checkpoint. Anything else (a checksum, a truncation, an unparsable or missing file) is damage.
_NOT_DAMAGE = (tf.errors.PermissionDeniedError, tf.errors.ResourceExhaustedError, tf.errors.UnavailableError,
               tf.errors.DeadlineExceededError, tf.errors.AbortedError, tf.errors.CancelledError,
               tf.errors.UnauthenticatedError)
_DAMAGE = (tf.errors.OpError, ValueError, IndexError)  # IndexError: a truncated data file


class Checkpoints:
    """The checkpoints in `folder` (a run's DIR/checkpoints)."""

    def __init__(self, folder: "str | os.PathLike"):
        self.folder = pathlib.Path(folder)

    def sweep_temporary(self) -> None:
        """Removes TensorFlow's staging folders of checkpoint writes that a killed run left (the caller holds
        the run's lock, so no live writer owns them)."""
        if self.folder.is_dir():
            for name in os.listdir(self.folder):
                if _TEMPORARY.match(name):
                    shutil.rmtree(self.folder / name, ignore_errors=True)
                    logging.info("removed %s, left by an interrupted checkpoint write", self.folder / name)

    def steps(self) -> List[int]:
        """Steps of the checkpoints present, newest first (whatever the index file says)."""
        if not self.folder.is_dir():
            return []
        found = [int(match.group(1)) for match in map(_CHECKPOINT.match, os.listdir(self.folder)) if match]
        return sorted(found, reverse=True)

    def prefix(self, step: int) -> str:
        return str(self.folder / f"ckpt-{step}")

    def newest_intact(self) -> Optional[Tuple[int, Any]]:
        """The newest checkpoint whose every tensor reads back with its checksum, with its reader; damaged newer
        ones are logged and skipped. None when there is no checkpoint at all; a UserError when there are some
        but none is intact."""
        damaged = []
        for step in self.steps():
            problem, reader = _read_whole(self.prefix(step))
            if reader is not None:
                if damaged:
                    logging.warning("resuming from %s: the newer %s", self.prefix(step), "; ".join(damaged))
                return step, reader
            damaged.append(f"ckpt-{step} is damaged ({problem})")
        if damaged:
            raise UserError(f"{self.folder}: no intact checkpoint ({'; '.join(damaged)}); move the folder "
                            "aside and re-run to keep what is left, or bind train.start_over = True to train from "
                            "step 0 in this directory")
        return None

    def intact(self, step: int) -> Tuple[int, Any]:
        """(step, reader) of the checkpoint of `step`, read whole; a missing or damaged one is a UserError."""
        if step not in self.steps():
            kept = ", ".join(map(str, sorted(self.steps()))) or "none"
            raise UserError(f"{self.folder}: no checkpoint of step {step} (kept: {kept}); give a kept step, or train "
                            "with a larger train.checkpoints_to_keep")
        problem, reader = _read_whole(self.prefix(step))
        if reader is None:
            raise UserError(f"{self.prefix(step)}: damaged ({problem}); give another kept step")
        return step, reader

    def save(self, checkpoint: tf.train.Checkpoint, step: int, keep: int) -> str:
        """Writes `ckpt-STEP`, reads it back whole, then points the index at it and deletes all but the newest
        `keep` checkpoints."""
        self.folder.mkdir(parents=True, exist_ok=True)
        try:
            prefix = checkpoint.write(self.prefix(step))
        except (tf.errors.ResourceExhaustedError, tf.errors.PermissionDeniedError, tf.errors.UnknownError,
                OSError) as error:
            raise UserError(f"{self.prefix(step)}: the checkpoint could not be written ({first_line(error, 160)}); "
                            f"free space under {self.folder} (or make it writable) and re-run the same command to "
                            "resume; older checkpoints are kept") from error
        files.sync([*self.folder.glob(f"ckpt-{step}.*")])  # on disk before older checkpoints are pruned
        problem, reader = _read_whole(prefix)
        if reader is None:
            raise UserError(f"{prefix}: the checkpoint just written does not read back ({problem}); check the disk "
                            f"under {self.folder}; older checkpoints are kept")
        kept = [s for s in self.steps() if s <= step][:keep]
        self._write_index(step, kept)
        for old in self.steps():
            if old not in kept:
                self.delete(old)
        return prefix

    def _write_index(self, latest: int, kept: List[int]) -> None:
        """The index file in the CheckpointState text format that tf.train.latest_checkpoint reads."""
        lines = [f'model_checkpoint_path: "ckpt-{latest}"']
        lines += [f'all_model_checkpoint_paths: "ckpt-{s}"' for s in reversed(kept)]
        files.write_text(self.folder / "checkpoint", "\n".join(lines) + "\n")

    def delete(self, step: int) -> None:
        for path in self.folder.glob(f"ckpt-{step}.*"):
            path.unlink(missing_ok=True)

    def delete_all(self) -> None:
        """For train.start_over: every checkpoint, the index and the online chunks go."""
        for step in self.steps():
            self.delete(step)
        for _, _, path in self.online_chunks():
            path.unlink()
        (self.folder / "checkpoint").unlink(missing_ok=True)

    # --- the online phase's transitions ------------------------------------------------------------------

    def online_chunk(self, first: int, last: int) -> pathlib.Path:
        """Where online transitions [first, last) are saved."""
        return self.folder / f"online-{first:010d}-{last:010d}.npz"

    def online_chunks(self) -> List[Tuple[int, int, pathlib.Path]]:
        """(first, last, path) of the online chunks present, in order."""
        if not self.folder.is_dir():
            return []
        found = [(int(m.group(1)), int(m.group(2)), self.folder / name) for name in os.listdir(self.folder)
                 if (m := _ONLINE_CHUNK.match(name))]
        return sorted(found)


def _read_whole(prefix: str) -> Tuple[str, Optional[Any]]:
    """Reads every tensor of a checkpoint (which verifies its checksums); (problem, None) when the files are
    damaged; any other read error is a UserError. A streamed run's iterator state (variant tensors, which the
    reader cannot return as arrays) is read back by the restore op itself."""
    try:
        reader = tf.train.load_checkpoint(prefix)
        for name, dtype in reader.get_variable_to_dtype_map().items():
            if dtype == tf.variant:
                tf.raw_ops.RestoreV2(prefix=prefix, tensor_names=[name], shape_and_slices=[""], dtypes=[tf.variant])
            else:
                reader.get_tensor(name)
    except _NOT_DAMAGE as error:
        raise UserError(f"{prefix}: cannot read the checkpoint ({first_line(error, 160)}), which says "
                        "nothing of its files: fix the cause (permissions, space, the filesystem) and re-run; "
                        "no checkpoint was deleted") from error
    except _DAMAGE as error:
        return first_line(error), None
    return "", reader
