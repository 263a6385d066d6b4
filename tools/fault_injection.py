"""Fault injection: kill -9 a real training run at random moments and check that nothing is lost.

    python -m tools.fault_injection --kills=10 [--seed=0] [--gin_bindings=...]

Trains a small run to the end once without interruption, then trains the same run again in another
directory, killing it with SIGKILL at `--kills` random moments (each restart is the same command, which
resumes) before letting it finish. Reports the number of kills, the largest difference between any weight of
the two final checkpoints (0 means bit-identical), and the checkpoints lost: restarts that resumed from an
older step than the newest checkpoint completed before the kill.

The default run needs no download and no environment: a synthetic hopper-shaped dataset (written to a
temporary folder), 32x32 networks, 3000 updates, a checkpoint every 200.
"""

import pathlib
import random
import re
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Sequence

import numpy as np
from absl import flags

from iql_tf import cli
from iql_tf.errors import UserError

FLAGS = flags.FLAGS
_RESUMED = re.compile(r"Resumed from .*ckpt-(\d+) at step")


def define_flags() -> None:
    flags.DEFINE_integer("kills", 10, "How many times to kill the run with SIGKILL.")
    flags.DEFINE_integer("seed", 0, "Seed of the kill moments.")
    flags.DEFINE_multi_string("gin_bindings", [], "Extra bindings for the run (applied after the defaults).")
    flags.DEFINE_string("workdir", None, "Where the two runs go (default: a temporary folder, deleted after).")


def default_bindings(folder: pathlib.Path) -> List[str]:
    rng = np.random.default_rng(0)
    rows = 10_000
    observations = rng.standard_normal((rows + 1, 11), dtype=np.float32)
    path = folder / "synthetic-hopper.npz"
    np.savez(path, observations=observations[:-1], next_observations=observations[1:],
             actions=rng.uniform(-1, 1, (rows, 3)).astype(np.float32), rewards=rng.standard_normal(rows),
             terminals=rng.random(rows) < 0.01, timeouts=np.arange(rows) % 1000 == 999)
    return [f"make_dataset.source = '{path}'", f"make_dataset.cache_dir = '{folder / 'cache'}'",
            "make_dataset.reward_preprocessing = 'locomotion'", "IQLAgent.hidden_dims = (32, 32)",
            "IQLAgent.actor_dropout_rate = 0.1", "IQLAgent.jit_compile = False", "train.num_offline_steps = 3000",
            "train.checkpoint_interval = 200", "train.steps_per_call = 50", "train.eval_episodes = 0",
            "train.progress_bar = False"]


def command(workdir: pathlib.Path, bindings: Sequence[str]) -> List[str]:
    return [sys.executable, "-m", "iql_tf.train", "--gin_file=locomotion", f"--workdir={workdir}",
            *[f"--gin_bindings={binding}" for binding in bindings]]


def completed_step(workdir: pathlib.Path) -> int:
    """The newest checkpoint the index names: the index is written only once a checkpoint reads back whole."""
    index = workdir / "checkpoints" / "checkpoint"
    if not index.exists():
        return 0
    match = re.search(r'model_checkpoint_path: "ckpt-(\d+)"', index.read_text())
    return int(match.group(1)) if match else 0


def final_weights(workdir: pathlib.Path) -> Dict[str, np.ndarray]:
    import tensorflow as tf

    from iql_tf import run_files, run_state
    from iql_tf.checkpoints import Checkpoints

    prefix = Checkpoints(run_files.RunFiles(workdir).checkpoints).prefix(completed_step(workdir))
    reader = tf.train.load_checkpoint(prefix)
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
            if "OBJECT_GRAPH" not in name and not name.startswith(run_state.RECORD)}


def _setting(workdir: pathlib.Path, name: str) -> int:
    """An integer setting of a finished run, from its operative config."""
    match = re.search(rf"^{re.escape(name)} = (\d+)$", (workdir / "operative_config.gin").read_text(), re.M)
    return int(match.group(1))


def _reference_run(workdir: pathlib.Path, bindings: Sequence[str]) -> float:
    """Runs to the end uninterrupted; returns the seconds between two checkpoints (the pace of training)."""
    process = subprocess.Popen(command(workdir, bindings), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    times: Dict[int, float] = {}
    while process.poll() is None:
        times.setdefault(completed_step(workdir), time.perf_counter())
        time.sleep(0.005)
    _, stderr = process.communicate()
    if process.returncode != 0:
        raise UserError(f"the uninterrupted run failed: {stderr.strip().splitlines()[-1]}")
    steps = sorted(step for step in times if step)
    return (times[steps[-1]] - times[steps[0]]) / max(len(steps) - 1, 1) if steps else 0.0


def inject(folder: pathlib.Path, bindings: Sequence[str], kills: int, rng: random.Random) -> Dict[str, float]:
    seconds_per_interval = _reference_run(folder / "uninterrupted", bindings)
    final = _setting(folder / "uninterrupted", "train.num_offline_steps")
    interval = _setting(folder / "uninterrupted", "train.checkpoint_interval")
    workdir, lost, delivered = folder / "interrupted", 0, 0
    while True:
        before = completed_step(workdir)
        process = subprocess.Popen(command(workdir, bindings), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                   text=True)
        if delivered < kills:
            # A random moment of training: after one of the next checkpoints (near enough that the kills still
            # to deliver fit in the checkpoints left; the current one when none is left), then up to one
            # interval later, which may land in the middle of writing the next checkpoint.
            targets = list(range(before + interval, final, interval)) or [before]
            target = targets[rng.randrange(max(1, len(targets) // (kills - delivered)))]
            while process.poll() is None and completed_step(workdir) < target:
                time.sleep(0.01)
            time.sleep(rng.uniform(0.0, seconds_per_interval))
            if process.poll() is None:
                process.kill()
                delivered += 1
        _, stderr = process.communicate()
        resumed = _RESUMED.search(stderr)
        if before and (resumed is None or int(resumed.group(1)) < before):
            lost += 1
        if process.returncode == 0:
            break
        print(f"kill {delivered}: newest completed checkpoint before {before}, after {completed_step(workdir)}")
    expected, got = final_weights(folder / "uninterrupted"), final_weights(workdir)
    difference = max(float(np.max(np.abs(expected[name].astype(np.float64) - got[name]))) if expected[name].dtype.kind
                     in "fiu" else float(not np.array_equal(expected[name], got[name])) for name in expected)
    return {"kills": delivered, "max_weight_difference": difference, "checkpoints_lost": lost,
            "same_variables": expected.keys() == got.keys()}


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise UserError(f"unexpected arguments {list(argv[1:])}")
    if FLAGS.kills < 0:
        raise UserError(f"--kills={FLAGS.kills} must be >= 0")
    with tempfile.TemporaryDirectory() as temporary:
        folder = pathlib.Path(FLAGS.workdir or temporary)
        folder.mkdir(parents=True, exist_ok=True)
        report = inject(folder, default_bindings(folder) + list(FLAGS.gin_bindings), FLAGS.kills,
                        random.Random(FLAGS.seed))
    print(f"{report['kills']} kills, max weight difference vs uninterrupted run {report['max_weight_difference']:g}, "
          f"checkpoints lost {report['checkpoints_lost']}, same variables {report['same_variables']}")


if __name__ == "__main__":
    define_flags()
    cli.run(main, sys.modules[__name__])
