"""While a progress bar is shown, log lines are written above it, never glued onto it."""

import io
import sys

from absl import logging

from iql_tf import logs


def test_log_lines_go_above_the_progress_bar(monkeypatch):
    terminal = io.StringIO()
    monkeypatch.setattr(sys, "stderr", terminal)
    bar = logs.progress_bar(total=10, initial=0, enabled=True)
    bar.update(3)
    logging.warning("an evaluation finished")
    bar.update(3)
    bar.close()
    assert sys.stderr is terminal  # restored
    text = terminal.getvalue()
    # tqdm.write clears the bar's line ("\r" and spaces), prints the line, then draws the bar again.
    before, _, after = text.partition("an evaluation finished")
    assert before.rstrip(" ").endswith("\r") and after.startswith("\n")
    assert "3/10" in before and "6/10" in after


def test_a_disabled_bar_leaves_stderr_alone(monkeypatch):
    terminal = io.StringIO()
    monkeypatch.setattr(sys, "stderr", terminal)
    bar = logs.progress_bar(total=10, initial=0, enabled=False)
    assert sys.stderr is terminal
    bar.close()
