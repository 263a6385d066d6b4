"""Keeping the libraries' start-up chatter off a command's terminal; real warnings and errors still show.

TensorFlow 2.21's native code writes its start-up lines (`All log messages before absl::InitializeLog()`,
`oneDNN custom operations are on`, `Could not find cuda drivers`, a `failed call to cuInit` error on a machine
without a GPU, the TFLite converter's `Ignored output_format`) straight to file descriptor 2, before and
regardless of `TF_CPP_MIN_LOG_LEVEL`. So a command routes its stderr descriptor through a pipe whose reader
drops exactly those lines (`filter_native_stderr`); `quiet_tensorflow` drops TensorFlow's Python INFO lines.
"""

import atexit
import os
import re
import sys
import threading

# Native INFO lines (C++ sources, `I1202 00:54:08.206245 4865 port.cc:153] ...`), never the project's own
# absl INFO lines (Python sources), and the named warnings and errors that say nothing on a CPU machine.
_NOISE = re.compile(
    rb"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    rb"|I\d{4} [\d:.]+ +\d+ [\w.]+\.cc:\d+\] .*"
    rb"|W\d{4} [\d:.]+ +\d+ tf_tfl_flatbuffer_helpers\.cc:\d+\] Ignored (output_format|drop_control_dependency)\."
    rb"|(W\d{4} [\d:.]+ +\d+ font_manager\.py:\d+\] )?Matplotlib is building the font cache; this may take a moment\."
    rb"|I\d{4} [\d:.]+ +\d+ font_manager\.py:\d+\] generated new fontManager"
    rb")\r?$"
)
_NO_GPU_NOISE = re.compile(rb"^E\d{4} [\d:.]+ +\d+ cuda_platform\.cc:\d+\] failed call to cuInit: .*$")
_installed = False


def _dropped(line: bytes, gpu_present: bool) -> bool:
    body = line.rstrip(b"\n")
    return bool(_NOISE.match(body)) or (not gpu_present and bool(_NO_GPU_NOISE.match(body)))


def _write_all(descriptor: int, data: bytes) -> None:
    """Writes all of `data`; a terminal that went away (EPIPE, EIO) drops it, and the reader keeps draining the
    pipe, so that the process never blocks on a full pipe."""
    try:
        while data:
            data = data[os.write(descriptor, data):]
    except OSError:
        pass


def filter_native_stderr() -> None:
    """From now on, everything written to file descriptor 2 (by Python or native code, in this process) passes
    through a thread that drops the noise lines above; idempotent. Output is flushed at exit."""
    global _installed
    if _installed:
        return
    _installed = True
    gpu_present = os.path.exists("/dev/nvidia0") or os.path.exists("/dev/nvidiactl")
    sys.stderr.flush()
    terminal = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)

    def forward() -> None:
        pending = b""
        while True:
            chunk = os.read(read_end, 65536)
            if not chunk:
                break
            pending += chunk
            *lines, pending = pending.split(b"\n")
            kept = b"".join(line + b"\n" for line in lines if not _dropped(line, gpu_present))
            # A partial line (a progress bar redrawn with \r) goes out at once; native lines arrive whole, in
            # one write each.
            if pending and not pending.startswith((b"WARNING: All log", b"I0", b"I1", b"W0", b"W1", b"E0", b"E1")):
                kept, pending = kept + pending, b""
            _write_all(terminal, kept)
        if pending and not _dropped(pending, gpu_present):
            _write_all(terminal, pending)

    reader = threading.Thread(target=forward, name="stderr-filter", daemon=True)
    reader.start()

    def drain() -> None:
        sys.stderr.flush()
        os.dup2(terminal, 2)  # closes the pipe's last write end of this process: the reader sees its end
        reader.join(timeout=2.0)  # children that inherited the pipe may hold it open longer

    atexit.register(drain)


def quiet_tensorflow() -> None:
    """Drops TensorFlow's own Python INFO lines (saver and SavedModel internals) that drown a run's progress;
    warnings and errors still show, and so does this project's INFO logging."""
    import logging as std_logging

    import tensorflow as tf
    from absl import logging

    tf.get_logger().setLevel("WARNING")
    logging.get_absl_handler().addFilter(
        lambda record: record.levelno >= std_logging.WARNING or "/tensorflow/" not in record.pathname
    )
