"""The benchmark's measurements; the command line lays them out as rows with ratios.

Everything runs in one process, one after another, so the rows of one run share the machine's state; the
rows compared within a group are timed in interleaved rounds (`race`).
"""

import dataclasses
import json
import os
import pathlib
import resource
import subprocess
import tempfile
import time
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from iql_tf.errors import UserError

SHAPES = {"hopper": (11, 3), "halfcheetah": (17, 6), "antmaze": (29, 8)}


@dataclasses.dataclass
class Row:
    """One measured line of the table."""

    group: str  # the rows a ratio compares within, e.g. "hopper 2x256"
    name: str
    value: float
    unit: str  # "updates/s", "seed-updates/s", "ms", "actions/s"
    baseline: bool = False  # the row others of the group are divided by
    ratio: float = float("nan")


def synthetic_transitions(observation_dim: int, action_dim: int, size: int, seed: int = 0) -> Dict[str, np.ndarray]:
    """Random transitions with the given shapes (the update's speed does not depend on the values)."""
    rng = np.random.default_rng(seed)
    observations = rng.standard_normal((size + 1, observation_dim), dtype=np.float32)
    terminals = (rng.random(size) < 0.001).astype(np.float32)
    return {"observations": observations[:-1], "next_observations": observations[1:],
            "actions": rng.uniform(-1, 1, (size, action_dim)).astype(np.float32),
            "rewards": rng.standard_normal(size, dtype=np.float32), "terminals": terminals, "masks": 1.0 - terminals}


def d4rl_style(observation_dim: int, action_dim: int, size: int, seed: int = 0) -> Dict[str, np.ndarray]:
    """`synthetic_transitions` as the arrays of a D4RL-style .npz: terminals as flags, and episodes of at most
    1000 steps (a timeout every 1000 rows and on the last one, where the row is not terminal)."""
    data = synthetic_transitions(observation_dim, action_dim, size, seed)
    terminals = data["terminals"] > 0
    timeouts = np.zeros(size, bool)
    timeouts[999::1000] = True
    timeouts[-1] = True
    return {**{key: data[key] for key in ("observations", "next_observations", "actions", "rewards")},
            "terminals": terminals, "timeouts": timeouts & ~terminals}


def iql_tf_call(data: Dict[str, np.ndarray], hidden_dims: Sequence[int], batch_size: int, jit_compile: bool,
                updates_per_call: int, num_seeds: int = 1) -> Tuple[Callable[[], None], int]:
    from iql_tf.agent import IQLAgent
    from iql_tf.replay_buffer import ReplayBuffer
    from iql_tf.settings import AgentSettings

    buffer = ReplayBuffer(data, batch_size)
    agent = IQLAgent(data["observations"].shape[1], data["actions"].shape[1],
                     AgentSettings(hidden_dims=tuple(hidden_dims), batch_size=batch_size, jit_compile=jit_compile),
                     actor_decay_steps=10**6, seeds=range(num_seeds))
    return (lambda: agent.run_updates(buffer, updates_per_call)), updates_per_call


def fqe_call(data: Dict[str, np.ndarray], hidden_dims: Sequence[int], batch_size: int, jit_compile: bool,
             updates_per_call: int) -> Tuple[Callable[[], None], int]:
    """Fitted Q evaluation's update (`iql_tf/ope/fqe.py`) on the same transitions, a fixed policy's actions
    at s' drawn once: one Q network and its target, where the IQL update trains four networks."""
    from iql_tf.ope.fqe import FittedQ
    from iql_tf.settings import FQESettings

    rng = np.random.default_rng(0)
    next_actions = rng.uniform(-1, 1, data["actions"].shape).astype(np.float32)
    table = {"inputs": np.concatenate([data["observations"], data["actions"]], 1),
             "next_inputs": np.concatenate([data["next_observations"], next_actions], 1),
             "rewards": data["rewards"], "masks": 1.0 - data["terminals"]}
    fitted = FittedQ(table, FQESettings(hidden_dims=tuple(hidden_dims), batch_size=batch_size,
                                        jit_compile=jit_compile))
    return (lambda: fitted.run_updates(updates_per_call)), updates_per_call


def jax_call(data: Dict[str, np.ndarray], hidden_dims: Sequence[int], batch_size: int,
             fused: int) -> Tuple[Callable[[], None], int]:
    """`fused` > 1: lax.scan over that many updates per call; 1: one jitted update per call."""
    from tools.benchmark.jax_reference import JaxIQL

    model = JaxIQL(data, data["observations"].shape[1], data["actions"].shape[1], hidden_dims, batch_size)
    if fused > 1:
        return (lambda: (model.fused_updates(fused), model.block())), fused
    return (lambda: (model.single_update(), model.block())), 1


def torch_call(data: Dict[str, np.ndarray], hidden_dims: Sequence[int], batch_size: int
               ) -> Tuple[Callable[[], None], int]:
    from tools.benchmark.torch_reference import TorchIQL

    model = TorchIQL(data, data["observations"].shape[1], data["actions"].shape[1], hidden_dims, batch_size)
    return model.single_update, 1


def online_call(hidden_dims: Sequence[int], batch_size: int, jit_compile: bool) -> Tuple[Callable[[], None], int]:
    """One online step as fine-tuning makes it (PointMaze UMaze: exploration action, environment step, the
    transition appended, one update), over a buffer of 100k offline PointMaze-shaped transitions."""
    from iql_tf import envs
    from iql_tf.agent import IQLAgent
    from iql_tf.checkpoints import Checkpoints
    from iql_tf.data import rewards
    from iql_tf.data.preprocessing import Preprocessing
    from iql_tf.online import OnlinePhase
    from iql_tf.replay_buffer import ReplayBuffer
    from iql_tf.settings import AgentSettings

    data = synthetic_transitions(8, 2, 100_000)
    steps = 1_000_000
    buffer = ReplayBuffer(data, batch_size, capacity=100_000 + steps)
    agent = IQLAgent(8, 2, AgentSettings(hidden_dims=tuple(hidden_dims), batch_size=batch_size,
                                         actor_cosine_decay=False, jit_compile=jit_compile),
                     actor_decay_steps=10**6)
    preprocessing = Preprocessing.fit(data["observations"], -np.ones(2), np.ones(2),
                                      rewards.RewardTransform("antmaze", shift=-1.0), False)
    online = OnlinePhase(envs.make_env("PointMaze_UMaze-v3", {"continuing_task": False}),
                         ["achieved_goal", "desired_goal", "observation"], preprocessing, agent, buffer, seed=0,
                         exploration_noise=0.1, checkpoints=Checkpoints(tempfile.gettempdir()))  # never saved to
    return online.env_step, 1


def training_loop(observation_dim: int, action_dim: int, num_transitions: int, num_updates: int,
                  hidden_dims: Sequence[int]) -> Tuple[float, bool]:
    """Updates per second of `iql_tf.trainer.run_training` with its defaults (the compiled path it chooses,
    K = 1000, logging every 1000 updates, evaluation off) and a checkpoint every 2000 updates (more often than
    the default 10000, so that the short run writes several) on a synthetic locomotion-shaped dataset: wall
    time between the first and the last logged step (so data loading, the path choice and compiling are not
    counted, but logging, checkpointing and the Python loop are). Also whether it chose XLA."""
    import gin
    import tensorflow as tf

    from iql_tf import config, run_state
    from iql_tf.checkpoints import Checkpoints
    from iql_tf.trainer import run_training

    with tempfile.TemporaryDirectory() as folder:
        folder = pathlib.Path(folder)
        np.savez(folder / "data.npz", **d4rl_style(observation_dim, action_dim, num_transitions))
        gin.clear_config()
        config.parse_gin(["locomotion"], [
            f"make_dataset.source = '{folder / 'data.npz'}'", f"make_dataset.cache_dir = '{folder / 'cache'}'",
            f"IQLAgent.hidden_dims = {tuple(hidden_dims)}", f"train.num_offline_steps = {num_updates}",
            "train.eval_episodes = 0", "train.progress_bar = False", "train.checkpoint_interval = 2000"])
        run_training(str(folder / "run"))
        gin.clear_config()
        record = run_state.checkpoint_record(Checkpoints(folder / "run" / "checkpoints").prefix(num_updates))
        times = {}
        for event_file in (folder / "run").glob("events.*"):
            for event in tf.compat.v1.train.summary_iterator(str(event_file)):
                if any(value.tag == "train/critic_loss" for value in event.summary.value):
                    times[event.step] = event.wall_time
    first, last = min(times), max(times)
    return (last - first) / (times[last] - times[first]), record["training"]["xla"]


def serving(observation_dim: int, action_dim: int, hidden_dims: Sequence[int], calls: int) -> Dict[str, float]:
    """The exported policy, loaded with TensorFlow alone: batch-1 latency (median, p99, in ms) of the
    SavedModel's serving_default, of the TFLite model and of the ONNX model in onnxruntime (on one
    thread: one observation gains nothing from more), and actions per second at batch 256."""
    import onnxruntime
    import tensorflow as tf

    from iql_tf import fastest_path
    from iql_tf.agent import IQLAgent
    from iql_tf.data import rewards
    from iql_tf.data.preprocessing import Preprocessing
    from iql_tf.policy.exported import export_policy
    from iql_tf.policy.metadata import ONNX_FILE, TFLITE_FILE, PolicyMetadata
    from iql_tf.settings import AgentSettings

    agent = IQLAgent(observation_dim, action_dim, AgentSettings(hidden_dims=tuple(hidden_dims), jit_compile=False),
                     actor_decay_steps=10)
    observations = np.random.default_rng(0).standard_normal((256, observation_dim), dtype=np.float32)
    preprocessing = Preprocessing.fit(observations, -np.ones(action_dim), np.ones(action_dim),
                                      rewards.RewardTransform("none"), normalize_observations=True)
    metadata = PolicyMetadata(
        env_id=None, env_kwargs={}, max_episode_steps=None, observation_keys=None, observation_dim=observation_dim,
        action_dim=action_dim, action_low=[-1.0] * action_dim, action_high=[1.0] * action_dim,
        observation_normalization=None, ref_min_score=None, ref_max_score=None, dataset="synthetic",
        dataset_checksum="", seed=0, step=0, evaluation={}, gin_config="")
    with tempfile.TemporaryDirectory() as folder:
        export_policy(agent.member_weights(0), "relu", preprocessing, pathlib.Path(folder) / "policy", metadata)
        serve = tf.saved_model.load(f"{folder}/policy").signatures["serving_default"]
        interpreter = tf.lite.Interpreter(model_path=f"{folder}/policy/{TFLITE_FILE}")
        lite = interpreter.get_signature_runner("serving_default")
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        session = onnxruntime.InferenceSession(f"{folder}/policy/{ONNX_FILE}", options,
                                               providers=["CPUExecutionProvider"])
        one = tf.constant(observations[:1])
        saved_model = _latencies(lambda: serve(observations=one)["actions"].numpy(), calls)
        tflite = _latencies(lambda: lite(observations=observations[:1])["actions"], calls)
        onnx = _latencies(lambda: session.run(["actions"], {"observations": observations[:1]}), calls)
        batch = tf.constant(observations)
        throughput = fastest_path.race({"batch": (lambda: serve(observations=batch)["actions"].numpy(), 256)}, 1,
                                       1.0)["batch"]
        sizes = {name: float((pathlib.Path(folder) / "policy" / name).stat().st_size) for name in (TFLITE_FILE, ONNX_FILE)}
    return {"saved_model_median_ms": saved_model[0], "saved_model_p99_ms": saved_model[1],
            "tflite_median_ms": tflite[0], "tflite_p99_ms": tflite[1], "onnx_median_ms": onnx[0],
            "onnx_p99_ms": onnx[1], "actions_per_second_batch_256": throughput, "tflite_bytes": sizes[TFLITE_FILE],
            "onnx_bytes": sizes[ONNX_FILE]}


def _latencies(call: Callable[[], object], calls: int) -> List[float]:
    """Median and 99th percentile of `calls` timed calls, in milliseconds (after 50 warm-up calls)."""
    for _ in range(50):
        call()
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000.0)
    return [float(np.median(times)), float(np.percentile(times, 99))]


def child_output(command: Sequence[str], what: str, env: Optional[Mapping[str, str]] = None) -> str:
    """The last line a child process prints; its failure is one UserError naming `what` with its last error line."""
    result = subprocess.run(list(command), capture_output=True, text=True, env=dict(env or os.environ))
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines() or [f"exit status {result.returncode}"]
        raise UserError(f"{what} failed: {lines[-1]}")
    return result.stdout.strip().splitlines()[-1]


def print_peak_rss() -> None:
    """A memory row's child ends by printing its peak resident memory (`child_peak_rss` reads it)."""
    print(json.dumps({"peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9}))


def child_peak_rss(command: Sequence[str], env: Optional[Mapping[str, str]] = None) -> float:
    """The peak resident memory (GB) of a fresh process running `command`, which ends with `print_peak_rss`."""
    return json.loads(child_output(command, "memory row", env))["peak_rss_gb"]
