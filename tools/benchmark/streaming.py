"""Streaming through tf.data against holding the dataset in memory: `python -m tools.benchmark.streaming`.

- Speed: updates per second of the compiled K-update step (2x256, hopper's shapes, batch 256, K = 200, XLA
  and TensorFlow's kernels) reading its batches from the in-memory replay buffer and from the stream of the
  same converted dataset (1M transitions), timed in interleaved rounds: the stream's row is quoted as a
  ratio to the in-memory row of the same compiled path.
- Memory: the peak resident memory (ru_maxrss) of a whole training run, each in a fresh process: streaming
  on synthetic converted datasets of about 1 GB and 4 GB, and in memory on the 1 GB one.
- With --rlds, an RLDS dataset streamed as it is (`rlds:DIR`, never converted) against the same: the speed
  rows read the same transitions written as RLDS (episodes of 1000 steps); the time to convert it once
  against the time to scan it for streaming; each stream's input pipeline alone, in transitions per second;
  and the memory rows of streaming RLDS datasets of --rlds_memory_gb.
Writes DIR/streaming.md and DIR/streaming.json.
"""

import os
import pathlib
import sys
import tempfile
import time
from typing import Dict, Iterator, List, Optional

import numpy as np
from absl import flags

from iql_tf import cli, files
from iql_tf.errors import UserError
from tools.benchmark import measure

FLAGS = flags.FLAGS
_BYTES_PER_TRANSITION = (11 + 11 + 3 + 3) * 4  # hopper: observations, next, actions, reward/terminal/done
_RLDS_BYTES_PER_STEP = (11 + 3 + 2) * 4 + 3  # an RLDS step: observation, action, reward, discount, 3 flags


def define_flags() -> None:
    flags.DEFINE_integer("speed_transitions", 1_000_000, "Size of the speed rows' dataset.")
    flags.DEFINE_list("memory_gb", ["1", "4"], "Sizes (GB) of the streamed datasets of the memory rows (the first "
                      "is also trained in memory); empty: skip the memory rows.")
    flags.DEFINE_integer("memory_updates", 2000, "Updates of each memory row's training run.")
    flags.DEFINE_integer("rounds", 3, "Interleaved timing rounds per speed row.")
    flags.DEFINE_float("seconds", 3.0, "Length of one timing round.")
    flags.DEFINE_string("output_dir", "runs/benchmark", "Where streaming.md and streaming.json go.")
    flags.DEFINE_bool("rlds", False, "Also the rows of an RLDS dataset streamed as it is.")
    flags.DEFINE_list("rlds_memory_gb", ["0.1", "0.4"], "Sizes (GB of records) of the streamed RLDS datasets of "
                      "the memory rows (--rlds).")
    flags.DEFINE_string("child", None, "Internal: train once on this source and print the peak RSS.")
    flags.DEFINE_bool("child_streaming", True, "Internal: the child's make_dataset.streaming.")


def write_converted(directory: pathlib.Path, num_transitions: int, seed: int = 0) -> pathlib.Path:
    """A converted dataset of random hopper-shaped transitions, written shard by shard (never whole in memory):
    episodes of 1000 steps, statistics accumulated as the shards are written."""
    import tensorflow as tf

    from iql_tf.data import checksums, shards
    from iql_tf.data.metadata import DatasetMetadata, ShardInfo, write_metadata

    directory.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    count = -(-num_transitions // shards.DEFAULT_SHARD_SIZE)
    infos, total, squares, returns = [], np.zeros(11), np.zeros(11), []
    block = 0
    for index in range(count):
        start, stop = index * shards.DEFAULT_SHARD_SIZE, min(num_transitions, (index + 1) * shards.DEFAULT_SHARD_SIZE)
        rows = stop - start
        dones = ((np.arange(start, stop) % 1000) == 999).astype(np.float32)
        data = {"observations": rng.standard_normal((rows, 11), dtype=np.float32),
                "next_observations": rng.standard_normal((rows, 11), dtype=np.float32),
                "actions": rng.uniform(-1, 1, (rows, 3)).astype(np.float32),
                "rewards": rng.standard_normal(rows, dtype=np.float32), "terminals": np.zeros(rows, np.float32),
                "dones": dones}
        name = shards.shard_name(index, count)
        with tf.io.TFRecordWriter(str(directory / name)) as writer:
            for first in range(0, rows, shards.BLOCK_SIZE):
                writer.write(shards._encode(data, first, min(rows, first + shards.BLOCK_SIZE), block, index))
                block += 1
        infos.append(ShardInfo(name, rows, checksums.file_sha256(directory / name)))
        total += data["observations"].sum(0, dtype=np.float64)
        squares += (data["observations"].astype(np.float64) ** 2).sum(0)
        returns.append(np.add.reduceat(data["rewards"], np.flatnonzero(np.concatenate([[1.0], dones[:-1]]))))
    mean = total / num_transitions
    returns = np.concatenate(returns)
    metadata = DatasetMetadata(
        source=f"synthetic-{num_transitions}", source_checksum="", env_id=None, env_kwargs={}, max_episode_steps=None,
        observation_keys=None, observation_shape=[11], action_shape=[3], observation_low=[-np.inf] * 11,
        observation_high=[np.inf] * 11, action_low=[-1.0] * 3, action_high=[1.0] * 3, num_transitions=num_transitions,
        num_episodes=max(1, num_transitions // 1000), ref_min_score=None, ref_max_score=None, shards=infos,
        statistics={"observation_mean": mean.tolist(), "observation_std": np.sqrt(squares / num_transitions - mean ** 2).tolist(),
                    "trajectory_return_min": float(returns.min()), "trajectory_return_max": float(returns.max()),
                    "shards_bytes": sum((directory / info.file).stat().st_size for info in infos)})
    write_metadata(directory, metadata)
    return directory


def synthetic_episodes(num_transitions: int, seed: int) -> Iterator[Dict]:
    """Random hopper-shaped RLDS episodes of 1000 transitions (1001 steps: the last holds the final
    observation), made one at a time."""
    rng = np.random.default_rng(seed)
    for start in range(0, num_transitions, 1000):
        steps = min(1000, num_transitions - start) + 1
        flags = np.zeros(steps, bool)
        yield {"steps": {"observation": rng.standard_normal((steps, 11), dtype=np.float32),
                         "action": rng.uniform(-1, 1, (steps, 3)).astype(np.float32),
                         "reward": rng.standard_normal(steps, dtype=np.float32), "discount": np.ones(steps, np.float32),
                         "is_first": np.concatenate([[True], flags[1:]]),
                         "is_last": np.concatenate([flags[:-1], [True]]),
                         "is_terminal": flags}}


def write_rlds(directory: pathlib.Path, num_transitions: int, seed: int = 0) -> str:
    """A synthetic RLDS dataset (`synthetic_episodes`), written episode by episode; its source string."""
    from iql_tf.data import rlds_writer

    rlds_writer.write_episodes(directory, "synthetic", rlds_writer.step_features(11, 3),
                               synthetic_episodes(num_transitions, seed))
    return f"rlds:{directory}"


def rlds_preparation_rows(source: str, scratch: pathlib.Path) -> List[Dict]:
    """Seconds to make an RLDS dataset ready: converted once into shards, or scanned once to be streamed."""
    from iql_tf.data.pipeline import make_dataset
    from iql_tf.settings import DataSettings

    rows = []
    for name, streaming in (("converted into shards (then held or streamed)", False), ("scanned, streamed as it is",
                                                                                         True)):
        start = time.perf_counter()
        make_dataset(DataSettings(source, streaming=streaming, cache_dir=str(scratch / f"cache-{streaming}")))
        rows.append({"row": name, "seconds": time.perf_counter() - start})
    return rows


def input_rows(directory: pathlib.Path, rlds: str, groups: int = 20) -> List[Dict]:
    """Transitions per second of each stream's input pipeline alone (its groups of batches fetched with no
    update running), against which the update's consumption (updates/s x 256) is read."""
    from iql_tf.data.pipeline import make_dataset
    from iql_tf.data.streaming import GROUP, StreamedBatches
    from iql_tf.settings import DataSettings

    rows = []
    for name, settings in (("converted stream", DataSettings(str(directory), streaming=True)),
                           ("RLDS stream", DataSettings(rlds, rlds_as_is=True,
                                                        cache_dir=str(directory.parent / "rlds-cache")))):
        dataset = make_dataset(settings)
        batches = StreamedBatches(dataset.directory, dataset.metadata, dataset.preprocessing, 1, 256, 100_000, seed=0)
        next(batches.iterator)  # the pipeline started
        start = time.perf_counter()
        for _ in range(groups):
            next(batches.iterator)
        rows.append({"row": name, "transitions_per_second": groups * GROUP * 256 / (time.perf_counter() - start)})
    return rows


def speed_rows(directory: pathlib.Path, rounds: int, seconds: float, rlds: Optional[str] = None) -> List[Dict]:
    """Updates/s of the K-update step from memory and from the stream (and from the RLDS dataset `rlds`
    streamed as it is), per compiled path, interleaved."""
    from iql_tf import fastest_path
    from iql_tf.agent import IQLAgent
    from iql_tf.data.pipeline import make_dataset
    from iql_tf.data.streaming import StreamedBatches
    from iql_tf.replay_buffer import ReplayBuffer
    from iql_tf.settings import AgentSettings, DataSettings

    in_memory = make_dataset(DataSettings(str(directory), streaming=False))
    streams = {"streamed": make_dataset(DataSettings(str(directory), streaming=True))}
    if rlds:
        streams["streamed as RLDS"] = make_dataset(DataSettings(rlds, streaming=True,
                                                                cache_dir=str(directory.parent / "rlds-cache")))
    buffer = ReplayBuffer(in_memory.tensors, 256)
    del in_memory
    rows = []
    for jit in (True, False):
        calls = {}
        for name in ("in memory", *streams):
            agent = IQLAgent(11, 3, AgentSettings(jit_compile=jit), actor_decay_steps=10**6)
            stream = streams.get(name)
            source = buffer if stream is None else StreamedBatches(
                stream.directory, stream.metadata, stream.preprocessing, 1, 256, 100_000, seed=0)
            calls[name] = ((lambda agent=agent, source=source: agent.run_updates(source, 200)), 200)
        rates = fastest_path.race(calls, rounds, seconds)
        path = "XLA" if jit else "TF kernels"
        for name, rate in rates.items():
            rows.append({"row": f"{path}, {name}", "updates_per_second": rate,
                         "ratio": rate / rates["in memory"]})
    return rows


def memory_rows(sizes_gb: List[float], updates: int, scratch: pathlib.Path) -> List[Dict]:
    """Peak RSS of a fresh training process per (dataset size, streaming)."""
    rows = []
    for index, size in enumerate(sizes_gb):
        directory = write_converted(scratch / f"data-{size:g}gb", int(size * 1e9 / _BYTES_PER_TRANSITION), seed=index)
        gb = sum(path.stat().st_size for path in directory.glob("shard-*")) / 1e9
        for streaming in ((True, False) if index == 0 else (True,)):
            rows.append({"row": f"{'streamed' if streaming else 'in memory'}, {gb:.2f} GB converted", "dataset_gb": gb,
                         "streaming": streaming, "peak_rss_gb": peak_rss(str(directory), streaming, updates, scratch)})
    return rows


def rlds_memory_rows(sizes_gb: List[float], updates: int, scratch: pathlib.Path) -> List[Dict]:
    """Peak RSS of a fresh training process streaming an RLDS dataset as it is, per size."""
    from iql_tf.data.rlds_source import open_builder, split_bytes, RLDSOptions

    rows = []
    for index, size in enumerate(sizes_gb):
        source = write_rlds(scratch / f"rlds-{size:g}gb", int(size * 1e9 / _RLDS_BYTES_PER_STEP), seed=index)
        gb = split_bytes(open_builder(source, None, False), RLDSOptions()) / 1e9
        rows.append({"row": f"streamed as RLDS, {gb:.3g} GB of records", "dataset_gb": gb, "streaming": True,
                     "peak_rss_gb": peak_rss(source, True, updates, scratch)})
    return rows


def peak_rss(source: str, streaming: bool, updates: int, scratch: pathlib.Path) -> float:
    """The peak RSS (GB) of a fresh process training on `source` (`child`)."""
    command = [sys.executable, "-m", "tools.benchmark.streaming", f"--child={source}", f"--child_streaming={streaming}",
               f"--memory_updates={updates}"]
    return measure.child_peak_rss(command, dict(os.environ, IQL_TF_DATA_DIR=str(scratch / "child-cache")))


def child(source: str, streaming: bool, updates: int) -> None:
    """One training run on `source` (2x256, batch 256, no evaluation), then its peak RSS as JSON."""
    from iql_tf import trainer
    from iql_tf.settings import AgentSettings, DataSettings, RunSettings

    with tempfile.TemporaryDirectory() as workdir:
        trainer.run_training(workdir, DataSettings(source, streaming=streaming), AgentSettings(jit_compile=True),
                             RunSettings(num_offline_steps=updates, eval_episodes=0, progress_bar=False,
                                         checkpoint_interval=updates, steps_per_call=200))
    measure.print_peak_rss()


def main(argv) -> None:
    if len(argv) > 1:
        raise UserError(f"unexpected arguments {list(argv[1:])}")
    from iql_tf import quiet

    quiet.quiet_tensorflow()
    if FLAGS.child:
        child(FLAGS.child, FLAGS.child_streaming, FLAGS.memory_updates)
        return
    output = pathlib.Path(FLAGS.output_dir)
    preparation: List[Dict] = []
    inputs: List[Dict] = []
    with tempfile.TemporaryDirectory() as scratch:
        scratch = pathlib.Path(scratch)
        rlds = write_rlds(scratch / "speed-rlds", FLAGS.speed_transitions) if FLAGS.rlds else None
        if rlds:
            preparation = rlds_preparation_rows(rlds, scratch)
        converted = write_converted(scratch / "speed", FLAGS.speed_transitions)
        speed = speed_rows(converted, FLAGS.rounds, FLAGS.seconds, rlds)
        if rlds:
            inputs = input_rows(converted, rlds)
        memory = memory_rows([float(size) for size in FLAGS.memory_gb], FLAGS.memory_updates, scratch)
        if FLAGS.rlds:
            memory += rlds_memory_rows([float(size) for size in FLAGS.rlds_memory_gb], FLAGS.memory_updates, scratch)
    lines = ["| K = 200 updates per call, 2x256, batch 256 | updates/s | ratio to in memory |", "| --- | --- | --- |"]
    lines += [f"| {row['row']} | {row['updates_per_second']:.1f} | {row['ratio']:.2f}x |" for row in speed]
    if preparation:
        lines += ["", f"| an RLDS dataset of {FLAGS.speed_transitions} transitions made ready | seconds |",
                  "| --- | --- |"]
        lines += [f"| {row['row']} | {row['seconds']:.1f} |" for row in preparation]
    if inputs:
        lines += ["", "| input pipeline alone (no update running) | transitions/s |", "| --- | --- |"]
        lines += [f"| {row['row']} | {row['transitions_per_second']:.0f} |" for row in inputs]
    if memory:
        lines += ["", "| training run | peak RSS |", "| --- | --- |"]
        lines += [f"| {row['row']} | {row['peak_rss_gb']:.2f} GB |" for row in memory]
    text = "\n".join(lines) + "\n"
    output.mkdir(parents=True, exist_ok=True)
    files.write_text(output / "streaming.md", text)
    files.write_json(output / "streaming.json", {"speed": speed, "preparation": preparation, "inputs": inputs,
                                                  "memory": memory})
    print(text)


if __name__ == "__main__":
    define_flags()
    cli.run(main, sys.modules[__name__])
