"""Benchmark of the compiled IQL train step: updates per second on synthetic data.

  python -m tools.benchmark_train --hidden_dims=256,256 --batch_size=256 --jit_compile=false,true

Each configuration runs in this one process, one after another, after a warm-up call that traces
and compiles; the table reports the best and median of --repeats timed calls of --steps updates.
Speed is quoted as ratios between rows of one run: other load on the machine shifts all rows alike.
"""

import itertools
import statistics
import time
from typing import Sequence

import numpy as np
import tensorflow as tf
from absl import app, flags

from iql_tf.agent import IQLAgent
from iql_tf.errors import UserError, run_main
from iql_tf.replay_buffer import ReplayBuffer

flags.DEFINE_string("hidden_dims", "256,256", "Hidden sizes to compare, configurations separated by ':', e.g. 256,256:64,64.")
flags.DEFINE_list("jit_compile", ["false", "true"], "XLA off/on.")
flags.DEFINE_integer("batch_size", 256, "Batch size.")
flags.DEFINE_integer("observation_dim", 17, "Observation size (17: walker2d / halfcheetah).")
flags.DEFINE_integer("action_dim", 6, "Action size.")
flags.DEFINE_integer("num_transitions", 100_000, "Size of the synthetic dataset.")
flags.DEFINE_integer("steps", 1000, "Updates per timed call (K).")
flags.DEFINE_integer("repeats", 3, "Timed calls per configuration.")
FLAGS = flags.FLAGS


def synthetic_buffer(num_transitions: int, observation_dim: int, action_dim: int) -> ReplayBuffer:
    rng = np.random.default_rng(0)
    return ReplayBuffer({
        "observations": rng.normal(size=(num_transitions, observation_dim)).astype(np.float32),
        "actions": rng.uniform(-1, 1, size=(num_transitions, action_dim)).astype(np.float32),
        "rewards": rng.normal(size=num_transitions).astype(np.float32),
        "next_observations": rng.normal(size=(num_transitions, observation_dim)).astype(np.float32),
        "terminals": (rng.uniform(size=num_transitions) < 0.01).astype(np.float32),
    })


def parse_bool(text: str) -> bool:
    if text.lower() not in ("true", "false"):
        raise UserError(f"--jit_compile values must be true or false, got {text!r}")
    return text.lower() == "true"


def main(argv: Sequence[str]) -> None:
    try:
        configurations = [tuple(int(u) for u in dims.split(",")) for dims in FLAGS.hidden_dims.split(":")]
    except ValueError as error:
        raise UserError(f"--hidden_dims: {error}; use e.g. --hidden_dims=256,256:64,64") from error
    jit_values = [parse_bool(value) for value in FLAGS.jit_compile]
    if min(FLAGS.steps, FLAGS.repeats, FLAGS.batch_size, FLAGS.num_transitions) <= 0:
        raise UserError("--steps, --repeats, --batch_size and --num_transitions must be positive")

    buffer = synthetic_buffer(FLAGS.num_transitions, FLAGS.observation_dim, FLAGS.action_dim)
    print(f"TensorFlow {tf.__version__}, devices: {[d.device_type for d in tf.config.list_logical_devices()]}, "
          f"obs {FLAGS.observation_dim}, act {FLAGS.action_dim}, batch {FLAGS.batch_size}, K {FLAGS.steps}")
    print(f"{'hidden':>12} {'xla':>5} {'compile s':>10} {'best upd/s':>11} {'median upd/s':>13}")
    for hidden_dims, jit_compile in itertools.product(configurations, jit_values):
        agent = IQLAgent(FLAGS.observation_dim, FLAGS.action_dim, actor_decay_steps=10**6, hidden_dims=hidden_dims,
                         batch_size=FLAGS.batch_size, jit_compile=jit_compile)
        start = time.perf_counter()
        agent.train(buffer, 10)
        compile_seconds = time.perf_counter() - start
        rates = []
        for _ in range(FLAGS.repeats):
            start = time.perf_counter()
            agent.train(buffer, FLAGS.steps)
            rates.append(FLAGS.steps / (time.perf_counter() - start))
        print(f"{'x'.join(map(str, hidden_dims)):>12} {str(jit_compile):>5} {compile_seconds:>10.1f} "
              f"{max(rates):>11.0f} {statistics.median(rates):>13.0f}")


if __name__ == "__main__":
    app.run(run_main(main))
