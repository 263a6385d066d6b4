"""Asking a training run to stop: SIGTERM, Ctrl-C or a STOP file make the loop save a checkpoint and exit, and
`RunStopped` then tells the caller where it stopped."""

import pathlib
import signal
from typing import Optional, Sequence


class StopRequest:
    """SIGTERM, Ctrl-C or a file DIR/STOP ask the loop to save and exit; the loop polls `requested`.

    Signals become a flag (where this is the main thread: a Ray worker may run the loop in another), and the
    file lets a sweep driver, or a person, stop a run on any machine that shares the directory.
    """

    def __init__(self, stop_file: pathlib.Path, extra_stop_files: Sequence[pathlib.Path] = ()):
        self.stop_file = stop_file
        self.extra_stop_files = list(extra_stop_files)  # a sweep's: watched, never deleted here
        self.reason: Optional[str] = None
        self.signal_number: Optional[int] = None
        self._previous = {}

    def __enter__(self):
        self.stop_file.unlink(missing_ok=True)  # an old request must not stop this run at once
        for number in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[number] = signal.signal(number, self._handle)
            except ValueError:  # not the main thread: only the file can ask
                break
        return self

    def _handle(self, number, frame):
        self.signal_number, self.reason = number, f"signal {number}"

    @property
    def requested(self) -> bool:
        if self.reason is None:
            self.reason = next((str(path) for path in [self.stop_file, *self.extra_stop_files] if path.exists()), None)
        return self.reason is not None

    def __exit__(self, *exc):
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self.stop_file.unlink(missing_ok=True)


class RunStopped(Exception):
    """Raised by `run_training` after a stop request: the run saved a checkpoint and can be resumed."""

    def __init__(self, reason: str, signal_number: Optional[int], step: int):
        super().__init__(f"stopped by {reason} at step {step}")
        self.reason, self.signal_number, self.step = reason, signal_number, step
