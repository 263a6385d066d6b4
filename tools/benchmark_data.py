"""Benchmark of the data layer (not a test): convert and load a million hopper-sized transitions.

    python -m tools.benchmark_data [--num_transitions=1000000] [--repeats=5]

Synthesises a D4RL-style npz (observations 11, actions 3, episodes of up to 1000 steps) in a temporary
folder, then times `convert` and loading into memory (`load_converted`, and `make_dataset` with locomotion
reward scaling). Reports min and median wall time; the target is loading in under 2 s. Loads read the
shards from the page cache (they were just written), as a training run right after conversion does.
"""

import pathlib
import statistics
import tempfile
import time
from typing import Callable, List, Sequence, Tuple

import numpy as np
from absl import app, flags

from iql_tf.data import sources
from iql_tf.data.conversion import convert
from iql_tf.data.pipeline import load_converted, make_dataset
from iql_tf.settings import DataSettings
from tools.benchmark.measure import d4rl_style

flags.DEFINE_integer("num_transitions", 1_000_000, "Transitions to synthesise.")
flags.DEFINE_integer("repeats", 5, "Timed repeats of each stage (conversion: at most 3).")
FLAGS = flags.FLAGS

LOAD_TARGET_S = 2.0


def timed(function: Callable[[int], object], repeats: int) -> List[float]:
    times = []
    for repeat in range(repeats):
        start = time.perf_counter()
        function(repeat)
        times.append(time.perf_counter() - start)
    return times


def measure(num_transitions: int, repeats: int) -> List[Tuple[str, List[float]]]:
    """Seconds of each stage's repeats, on a synthetic npz of `num_transitions` rows in a temporary folder."""
    with tempfile.TemporaryDirectory() as folder:
        root = pathlib.Path(folder)
        source = root / "hopper-like.npz"
        np.savez(source, **d4rl_style(11, 3, num_transitions))
        print(f"{num_transitions} transitions, npz of {source.stat().st_size / 2**20:.0f} MiB")
        conversions = timed(lambda k: convert(sources.resolve(str(source)), root / f"out{k}"), min(3, repeats))
        rows = [("convert (npz -> shards)", conversions)]
        converted = root / "out0"
        size = sum(path.stat().st_size for path in converted.iterdir()) / 2**20
        rows.append(("load_converted (verify + read)", timed(lambda k: load_converted(converted), repeats)))
        rows.append((
            "make_dataset (+ clip, locomotion)",
            timed(lambda k: make_dataset(DataSettings(str(converted), reward_preprocessing="locomotion")), repeats),
        ))
    print(f"shards: {size:.0f} MiB")
    return rows


def main(argv: Sequence[str]) -> None:
    del argv
    rows = measure(FLAGS.num_transitions, FLAGS.repeats)
    print(f"{'stage':<36}{'min s':>8}{'median s':>10}{'runs':>6}")
    for name, times in rows:
        print(f"{name:<36}{min(times):>8.2f}{statistics.median(times):>10.2f}{len(times):>6}")
    load = statistics.median(rows[2][1])
    verdict = "met" if load < LOAD_TARGET_S else "NOT met"
    print(f"loading target (< {LOAD_TARGET_S:g} s, median make_dataset): {verdict} ({load:.2f} s)")


if __name__ == "__main__":
    app.run(main)
