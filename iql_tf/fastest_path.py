"""Choosing how the updates are compiled (XLA or TensorFlow's own kernels) by timing both on this machine.

Which one is faster depends on the processor, the network sizes and the batch: on one 2-core CPU XLA won
at 64x64 and lost at 256x256, on another it won at both. So when `IQLAgent.jit_compile` is left at None, the
first run of a configuration times a few hundred updates of each path on throwaway agents and takes the
faster; the answer is cached per machine, TensorFlow version and configuration
(`$IQL_TF_CACHE_DIR/fastest_path.json`, default `~/.cache/iql_tf`), so later runs start at once. A resumed run
keeps the path it was trained with (its numerics), whatever the cache says.
"""

import json
import os
import pathlib
import platform
import statistics
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf
from absl import logging

from iql_tf import files, json_records
from iql_tf.agent import IQLAgent
from iql_tf.replay_buffer import ReplayBuffer
from iql_tf.settings import RunSettings

CACHE_FILE = "fastest_path.json"
_TIMED_SECONDS = 2.0  # per path, after compiling, in interleaved rounds
_ROUNDS = 4
IMAGE_CALLS = 5


def cache_dir() -> pathlib.Path:
    return pathlib.Path(os.environ.get("IQL_TF_CACHE_DIR", "~/.cache/iql_tf")).expanduser()


def machine() -> Dict[str, str]:
    """What the timing depends on besides the configuration."""
    devices = [device.device_type for device in tf.config.list_logical_devices()]
    gpus = [tf.config.experimental.get_device_details(gpu).get("device_name", "GPU")
            for gpu in tf.config.list_physical_devices("GPU")]
    return {"processor": _processor(), "cores": str(os.cpu_count()), "tensorflow": tf.__version__,
            "threads": str(tf.config.threading.get_intra_op_parallelism_threads()),  # a sweep's runs use fewer
            "devices": ",".join(devices), "gpus": ",".join(gpus)}


def _processor() -> str:
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def choose(agent: IQLAgent, make_agent: Callable[[bool], IQLAgent], buffer: Optional[ReplayBuffer],
           settings: RunSettings) -> bool:
    """True for XLA, False for TensorFlow's kernels: whichever runs the updates of `agent`'s configuration
    faster; the timing runs on agents from `make_agent(jit_compile)`, never on `agent`, drawing from `buffer`
    (None: random transitions of the agent's shapes, which is all the speed depends on)."""
    calls = _calls(settings, agent)
    images = [list(agent.image_shape)] if agent.image_shape else []  # (the keys of vector runs stay as they were)
    if agent.parts:
        images = [[part.record() for part in agent.parts]]
    key = json_records.digest([machine(), agent.hyperparameters, agent.observation_dim, agent.action_dim,
                               agent.members, calls, *images])
    path = cache_dir() / CACHE_FILE
    cached = _read(path)
    if key in cached:
        return cached[key]["xla"]
    logging.info("timing XLA against TensorFlow's kernels for this network on this machine (mostly compiling, 10-30 s "
                 "on a CPU; once: the choice is cached; bind IQLAgent.jit_compile = True or False to skip it)")
    agents = {jit: make_agent(jit) for jit in (False, True)}
    buffer = _random_buffer(agent) if buffer is None else buffer
    rates = race({jit: (lambda agent=agent: agent.run_updates(buffer, calls), calls) for jit, agent in agents.items()},
                 _ROUNDS, _TIMED_SECONDS / _ROUNDS)
    xla = rates[True] > rates[False]
    logging.info("timed the compiled updates on this machine: XLA %.0f, TensorFlow kernels %.0f updates/s; "
                 "using %s (cached in %s)", rates[True], rates[False], "XLA" if xla else "TensorFlow kernels", path)
    cached[key] = {"xla": xla, "updates_per_second": {"xla": rates[True], "tensorflow": rates[False]}}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        files.write_json(path, cached)
    except OSError as error:  # a read-only home only costs the timing next time
        logging.warning("could not cache the choice in %s: %s", path, error)
    return xla


def _random_buffer(agent: IQLAgent) -> ReplayBuffer:
    rng = np.random.default_rng(0)
    rows, batch_size = 4 * agent.settings.batch_size, agent.settings.batch_size

    def values(shape: Sequence[int], image: bool) -> np.ndarray:
        if image:
            return rng.integers(0, 256, (rows, *shape), dtype=np.uint8)
        return rng.standard_normal((rows, *shape)).astype(np.float32)

    def observations() -> Any:
        if agent.parts:
            return {part.name: values(part.shape, part.image) for part in agent.parts}
        return values(agent.image_shape or (agent.observation_dim,), bool(agent.image_shape))

    return ReplayBuffer({"observations": observations(), "actions": rng.uniform(-1, 1, (rows, agent.action_dim)),
                         "rewards": rng.standard_normal(rows), "next_observations": observations(),
                         "terminals": np.zeros(rows)}, batch_size)


def _calls(settings: RunSettings, agent: IQLAgent) -> int:
    """Updates per compiled call that the run will mostly make: one online, K offline (image encoders: at most
    IMAGE_CALLS, for XLA's loop of convolutions can be slow enough on a CPU that one call of 100 would take
    minutes to time: 1 update/s against TensorFlow's kernels' 25, measured with conv_small, 32x32, batch 64)."""
    if settings.num_online_steps > settings.num_offline_steps:
        return 1
    return min(settings.steps_per_call, IMAGE_CALLS if agent.takes_images else 100)


def race(calls: Dict[Any, Tuple[Callable[[], Any], int]], rounds: int, seconds: float) -> Dict[Any, float]:
    """Updates per second of each (call, updates per call), warmed up once (which traces and compiles), then
    timed in `rounds` interleaved rounds of about `seconds` each (A B, A B, ...): a drift in the machine's speed
    then moves every entry alike. The median of an entry's rounds is its rate."""
    for call, _ in calls.values():
        call()
    rates: Dict[Any, List[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, (call, updates) in calls.items():
            count, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds or count == 0:
                call()
                count += updates
            rates[name].append(count / (time.perf_counter() - start))
    return {name: statistics.median(values) for name, values in rates.items()}


def _read(path: pathlib.Path) -> Dict[str, dict]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
