"""A run directory's files: every name, the lock, and the records the run keeps, read and written here only.

    DIR/.lock                 held for the run's life (one writer at a time)
    DIR/STOP                  a request to save and stop (a sweep's ROOT/STOP too)
    DIR/checkpoints/          checkpoints (`checkpoints.py`)
    DIR/eval_results.json     every evaluation: step, seed and results
    DIR/resumes.json          what a resume changed, from which step
    DIR/operative_config.gin  the gin config in use
    DIR/finished.json         written once the final policy is exported
    DIR/sweep_run.json        a sweep's run: its gin files, bindings and swept values
    DIR/export/[seed_K/]policy  the exported policy
    DIR/[seed_K/]events.*     TensorBoard events (in DIR itself: TensorBoard names the run by its directory)

TensorFlow-free: the sweep and the report read run directories without it. A damaged record is one
UserError naming the file and what to do, never a traceback.
"""

import contextlib
import fcntl
import os
import pathlib
import re
import shutil
import socket
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

from iql_tf import files, json_records
from iql_tf.errors import UserError

CHECKPOINTS = "checkpoints"
STOP = "STOP"
LOCK = ".lock"
RESULTS = "eval_results.json"
RESUMES = "resumes.json"
OPERATIVE_CONFIG = "operative_config.gin"
FINISHED = "finished.json"
SWEEP_RUN = "sweep_run.json"
EXPORT = "export"

Results = Dict[Tuple[int, int], Dict[str, float]]  # (step, seed) -> an evaluation's results


def default_workdir(config_name: str, source: str, seeds: Sequence[int]) -> str:
    """runs/CONFIG/DATASET/seedN (seedsA-B for several): the same command names the same run, so re-running it
    resumes."""
    dataset = re.sub(r"[^A-Za-z0-9._-]+", "_", pathlib.Path(source).stem if pathlib.Path(source).suffix else source)
    name = f"seed{seeds[0]}" if len(seeds) == 1 else f"seeds{seeds[0]}-{seeds[-1]}"
    return str(pathlib.Path("runs") / config_name / dataset / name)


class RunFiles:
    """The files of the run directory `path` (see the module docstring)."""

    def __init__(self, path: "str | os.PathLike"):
        self.path = pathlib.Path(path)
        self.checkpoints = self.path / CHECKPOINTS
        self.stop_file = self.path / STOP

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Holds the run's lock for the block; checks the directory can be written before any long work. The
        OS releases the lock when its holder dies, even by kill -9, so a stale lock never blocks."""
        created = not self.path.exists()
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            handle = open(self.path / LOCK, "a+")
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
            try:
                yield
            except BaseException:
                # A run that failed to start in a directory it created leaves no directory holding only its lock.
                if created and os.listdir(self.path) == [LOCK]:
                    (self.path / LOCK).unlink()
                    self.path.rmdir()
                raise

    def export_dir(self, seeds: Sequence[int] = (0,), member: int = 0) -> pathlib.Path:
        """Where member `member` of a run of `seeds` is exported."""
        return self.path.joinpath(EXPORT, *_member_folder(seeds, member), "policy")

    def tensorboard_dir(self, seeds: Sequence[int] = (0,), member: int = 0) -> pathlib.Path:
        """Where member `member` of a run of `seeds` writes its events."""
        return self.path.joinpath(*_member_folder(seeds, member))

    # --- evaluations -------------------------------------------------------------------------------------

    def results(self) -> Results:
        """The evaluations in eval_results.json, by (step, seed)."""
        history = _read_json(self.path / RESULTS, list, "move it aside to keep it; the run writes a new one")
        recorded: Results = {}
        for entry in history or []:
            if not (isinstance(entry, dict) and isinstance(entry.get("step"), int)
                    and isinstance(entry.get("seed"), int)):
                raise UserError(f"{self.path / RESULTS}: an entry without an integer step and seed ({entry!r:.80}); "
                                "move the file aside to keep it; the run writes a new one")
            recorded[(entry["step"], entry["seed"])] = {k: v for k, v in entry.items() if k not in ("step", "seed")}
        return recorded

    def append_result(self, step: int, seed: int, results: Dict[str, float]) -> None:
        """Adds an evaluation (atomically), dropping any of a later step that a resumed run is about to redo."""
        kept = {(s, k): value for (s, k), value in self.results().items() if s < step or s == step and k != seed}
        kept[(step, seed)] = results
        files.write_json(self.path / RESULTS, [{"step": s, "seed": k, **r} for (s, k), r in sorted(kept.items())])

    # --- what a resume changed, the config, the end ------------------------------------------------------

    def record_resume(self, step: int, changed: Dict[str, List[Any]]) -> None:
        files.write_json(self.path / RESUMES, self._resumes() + [{"step": step, "changed": changed}])

    def _resumes(self) -> List[Any]:
        return _read_json(self.path / RESUMES, list, "move it aside to keep it; the run writes a new one") or []

    def check_records(self) -> None:
        """Reads the records a run appends to (eval_results.json, resumes.json): a damaged one is a UserError
        before any training, not after it."""
        self.results()
        self._resumes()

    def write_operative_config(self, text: str) -> None:
        files.write_text(self.path / OPERATIVE_CONFIG, text)

    def operative_config(self) -> Optional[str]:
        path = self.path / OPERATIVE_CONFIG
        return path.read_text() if path.is_file() else None

    def finished(self) -> Optional[Dict[str, Any]]:
        """finished.json's record, or None when the run has not finished; a damaged one is a UserError."""
        record = _read_json(self.path / FINISHED, dict, "delete it and re-run the same command to finish again")
        if record is not None and not {"step", "seeds", "results", "hparams"} <= set(record):
            raise UserError(f"{self.path / FINISHED}: not a finished run's record (fields {sorted(record)}); delete it "
                            "and re-run the same command to finish again")
        return record

    def write_finished(self, record: Dict[str, Any]) -> None:
        files.write_json(self.path / FINISHED, record)

    def sweep_run(self) -> Optional[Dict[str, Any]]:
        return _read_json(self.path / SWEEP_RUN, dict, "it is the sweep's record of this run: delete the run's folder "
                          "to train it again")

    def write_sweep_run(self, record: Dict[str, Any]) -> None:
        files.write_json(self.path / SWEEP_RUN, record)

    def has_outputs(self) -> List[str]:
        """The names of the results a finished or evaluated run left here (which a fresh start would overwrite)."""
        return [name for name in (FINISHED, RESULTS, EXPORT) if (self.path / name).exists()]

    def remove_outputs(self) -> None:
        """For train.start_over: every output that claims a result of the earlier run goes (the export, the
        evaluations, the resume history, finished.json)."""
        for name in (FINISHED, RESULTS, RESUMES):
            (self.path / name).unlink(missing_ok=True)
        shutil.rmtree(self.path / EXPORT, ignore_errors=True)


def _member_folder(seeds: Sequence[int], member: int) -> List[str]:
    """A run of several seeds keeps each seed's events and export in a folder of its own (seed_K)."""
    return [f"seed_{seeds[member]}"] if len(seeds) > 1 else []


def _read_json(path: pathlib.Path, kind: type, fix: str) -> Any:
    """The JSON value in `path` (None when there is no file); unreadable or of another kind: a UserError."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as error:
        raise UserError(f"{path}: cannot read it ({error.strerror})") from error
    return json_records.parse_json(text, f"{path} is damaged", fix, kind)
