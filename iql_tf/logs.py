"""Progress on the terminal: a tqdm bar, with every log line written above it rather than glued onto it.

While the bar is shown, `sys.stderr` is a stream that writes through `tqdm.write`, which clears the bar,
prints the line and draws the bar again (Python warnings and TensorFlow's Python logger write to `sys.stderr`);
so is absl's log handler's own stream, which inside a command holds the terminal's stderr from import time.
"""

import sys
from typing import Any

import tqdm
from absl import logging as absl_logging


class _AboveTheBar:
    """A stand-in for stderr whose writes go above the progress bars on `stream`."""

    def __init__(self, stream: Any):
        self._stream = stream

    def write(self, text: str) -> int:
        tqdm.tqdm.write(text, file=self._stream, end="")
        return len(text)

    def flush(self) -> None:
        self._stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class ProgressBar(tqdm.tqdm):
    """tqdm on stderr (steps, steps/s, ETA, the last evaluation), routing stderr above itself until closed."""

    def __init__(self, total: int, initial: int, enabled: bool):
        self._stderr = sys.stderr
        self._handler = absl_logging.get_absl_handler().python_handler
        self._routing = False
        super().__init__(total=total, initial=initial, unit="step", disable=not enabled, dynamic_ncols=True,
                         file=self._stderr, smoothing=0.1)
        if enabled:
            self._routing = True
            sys.stderr = _AboveTheBar(self._stderr)
            if self._handler.stream is self._stderr:
                self._handler.stream = sys.stderr

    def close(self) -> None:
        # Once: tqdm's __del__ closes again, at interpreter exit too, when this module's globals are gone.
        if self._routing:
            self._routing = False
            if isinstance(sys.stderr, _AboveTheBar):
                sys.stderr = self._stderr
            if isinstance(self._handler.stream, _AboveTheBar):
                self._handler.stream = self._stderr
        super().close()


def progress_bar(total: int, initial: int, enabled: bool) -> ProgressBar:
    return ProgressBar(total, initial, enabled)


def show_progress_in_python() -> None:
    """The commands' INFO lines from Python too, where no absl app parsed flags (the library's `fit`)."""
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()  # absl's defaults; else it warns that logging precedes flag parsing
    absl_logging.set_verbosity(absl_logging.INFO)
    absl_logging.use_absl_handler()
    # To the stderr of now: a notebook's (or a test's) replaces the one absl's handler took at import.
    absl_logging.get_absl_handler().python_handler.stream = sys.stderr
