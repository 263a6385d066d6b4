"""While a progress bar is shown, log lines are written above it, never glued onto it."""

import io
import logging as std_logging
import sys

import pytest
from absl import flags, logging

from iql_tf import logs


@pytest.mark.parametrize("flags_parsed", [False, True])
def test_log_lines_go_above_the_progress_bar(monkeypatch, flags_parsed):
    # absl writes to sys.stderr before its flags are parsed (the library called from Python), and to its
    # handler's own stream once they are (inside a command, which holds the terminal from import time).
    terminal = io.StringIO()
    monkeypatch.setattr(sys, "stderr", terminal)
    handler = logging.get_absl_handler().python_handler
    monkeypatch.setattr(handler, "stream", terminal)
    monkeypatch.setattr(type(flags.FLAGS), "is_parsed", lambda self: flags_parsed)
    monkeypatch.setattr(logging, "_warn_preinit_stderr", False)
    monkeypatch.setattr(std_logging.root, "handlers", list(std_logging.root.handlers))  # restored after
    logging.use_absl_handler()  # as a command's app.run does
    bar = logs.progress_bar(total=10, initial=0, enabled=True)
    bar.update(3)
    logging.warning("an evaluation finished")
    bar.update(3)
    bar.close()
    assert sys.stderr is terminal and handler.stream is terminal  # restored
    text = terminal.getvalue()
    # tqdm.write clears the bar's line ("\r" and spaces), prints the line, then draws the bar again.
    before, _, after = text.partition("an evaluation finished")
    line_start = before.rsplit("\r", 1)[1]  # from the clearing carriage return: the log line's own prefix only
    assert "%|" not in line_start and "step/s" not in line_start and after.startswith("\n")
    assert "6/10" in after  # the bar is drawn again below the line


def test_a_disabled_bar_leaves_stderr_alone(monkeypatch):
    terminal = io.StringIO()
    monkeypatch.setattr(sys, "stderr", terminal)
    bar = logs.progress_bar(total=10, initial=0, enabled=False)
    assert sys.stderr is terminal
    bar.close()


@pytest.mark.parametrize("enabled", [False, True])
def test_closing_again_at_interpreter_exit_touches_no_module_globals(monkeypatch, enabled):
    # tqdm's __del__ closes the bar once more, at interpreter exit too, when a module's globals are None.
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    bar = logs.progress_bar(total=10, initial=0, enabled=enabled)
    bar.close()
    monkeypatch.setattr(logs, "sys", None)
    bar.close()
