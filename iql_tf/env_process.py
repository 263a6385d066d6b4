"""An environment stepped in a process of its own: for environments that render with MuJoCo (OGBench's visual
tasks), whose offscreen renderer cannot share a process with TensorFlow on a CPU machine.

MuJoCo's OSMesa renderer (llvmpipe) and TensorFlow both load LLVM, and the process crashes with a segmentation
fault at the first frame rendered after TensorFlow has run, whichever was loaded first (seen here with mujoco 3.10
and TensorFlow 2.21; Mesa's softpipe driver avoids LLVM but rendered 0.5 frames/s against llvmpipe's 6.7). So the
environment lives in a spawned process (a fresh interpreter that never imports TensorFlow), and `ProcessEnv` is
its gymnasium face here: reset, step, spaces, close. Observations cross a pipe (a 64x64x3 frame is 12 KB).
"""

import multiprocessing
from typing import Any, Callable, Optional, Tuple

import gymnasium as gym

from iql_tf.errors import UserError

# What rendering offscreen needs (MuJoCo reads MUJOCO_GL; without it, it wants a display).
RENDERING_FIX = ("set MUJOCO_GL=egl (a GPU with EGL) or MUJOCO_GL=osmesa (a CPU: apt-get install libosmesa6) to render "
                 "offscreen")


def rendering_failed(error: BaseException) -> bool:
    """Whether `error` is MuJoCo failing to render: no OpenGL context (mujoco.FatalError, glfw without a display),
    or the EGL / OSMesa backend or PyOpenGL failing to load or start."""
    module = type(error).__module__
    text = str(error)
    return (type(error).__name__ == "FatalError" or module.startswith(("OpenGL", "mujoco.egl", "mujoco.osmesa")) or
            isinstance(error, (ImportError, RuntimeError, AttributeError)) and
            any(name in text for name in ("EGL", "OSMesa", "OpenGL", "GL context")))


def _failure(error: Exception) -> Tuple[str, str]:
    """What the parent is told of a failure: a UserError as it is, a renderer's (`rendering_failed`) with how to
    render offscreen, anything else with its type."""
    if isinstance(error, UserError):
        return "user_error", str(error)
    return ("rendering" if rendering_failed(error) else "error"), f"{type(error).__name__}: {error}"


def _serve(make: Callable[[], gym.Env], connection) -> None:
    """The worker: builds the environment and answers (command, argument) messages until 'close'."""
    try:
        env = make()
        connection.send(("ok", (env.observation_space, env.action_space, env.spec)))
    except Exception as error:  # noqa: BLE001 - any failure is reported to the parent as one line
        connection.send(_failure(error))
        return
    while True:
        command, argument = connection.recv()
        if command == "close":
            env.close()
            connection.send(("ok", None))
            return
        try:
            result = env.reset(seed=argument) if command == "reset" else env.step(argument)
            connection.send(("ok", result))
        except Exception as error:  # noqa: BLE001
            connection.send(_failure(error))


class ProcessEnv(gym.Env):
    """`make()` (a picklable function: it crosses to the spawned process) run in a process of its own; a `make`
    that renders with MuJoCo calls `envs.allow_rendering()` first."""

    def __init__(self, make: Callable[[], gym.Env], name: str):
        self.name = name
        context = multiprocessing.get_context("spawn")
        self._connection, child = context.Pipe()
        self._process = context.Process(target=_serve, args=(make, child), daemon=True,
                                        name=f"iql-tf env {name}")
        self._process.start()
        child.close()
        try:
            self.observation_space, self.action_space, self.spec = self._answer("start")
        except BaseException:  # (a Ctrl-C during a slow start too)
            self.close()
            raise

    def _answer(self, what: str) -> Any:
        try:
            status, value = self._connection.recv()
        except EOFError:  # the worker died: a crash of the simulator or renderer, or (at start) a script that
            self._process.join(5)  # spawns processes without `if __name__ == "__main__":`
            guard = ("; a Python script that evaluates such an environment needs its code under "
                     "`if __name__ == \"__main__\":`") if what == "start" else ""
            raise UserError(f"environment {self.name}: its process ended during {what} (exit code "
                            f"{self._process.exitcode}); {RENDERING_FIX}{guard}") from None
        if status == "user_error":
            raise UserError(value)
        if status != "ok":
            fix = f"; {RENDERING_FIX}" if status == "rendering" else ""
            raise UserError(f"environment {self.name}: {what} failed in its process ({value}){fix}")
        return value

    def reset(self, *, seed: Optional[int] = None, options: Optional[dict] = None) -> Tuple[Any, dict]:
        if options:
            raise ValueError("ProcessEnv.reset takes no options")
        self._connection.send(("reset", seed))
        return self._answer("reset")

    def step(self, action: Any) -> Tuple[Any, float, bool, bool, dict]:
        self._connection.send(("step", action))
        return self._answer("step")

    def close(self) -> None:
        if self._process.is_alive():
            try:
                self._connection.send(("close", None))
                self._connection.recv()
            except (EOFError, BrokenPipeError, OSError):
                pass
            self._process.join(10)
        if self._process.is_alive():
            self._process.kill()
        self._process.join(5)
        self._connection.close()
