"""Image observations: storage, the input pipeline and memory: `python -m tools.benchmark.pixels`.

- Storage: bytes per frame of rendered-like 64x64x3 frames stored raw (uint8, what the shards hold) and as PNG,
  and frames per second of reading each back in tf.data (raw: parsing serialised blocks; PNG: decoding each
  frame, in parallel); then the shards' bytes per transition and transitions per second parsed, each frame
  stored once (the next frames rebuilt block by block) against the same blocks with the next frames whole.
- The stream against the update: a streamed training run on --frames frames (one encoder, batch --batch_size,
  frame stacks of --frame_stack, augmentation 0.5) timed call by call: the share of the time spent waiting for
  the input pipeline (fetching the next group of batches) against the compiled updates.
- Memory: the peak resident memory (ru_maxrss) of a streamed training run, each in a fresh process, on
  datasets of --memory_frames frames.
The timed runs' frames are synthetic, rendered-like (a gradient, boxes and a ball that moves smoothly along each
episode); the storage rows take OGBench's own camera frames with --ogbench_frames (synthetic ones compress far
better than a simulator's: 258 bytes against 3049 as PNG, measured). Writes DIR/pixels.md and DIR/pixels.json.
"""

import pathlib
import sys
import tempfile
import time
from typing import Dict, List

import numpy as np
from absl import flags

from iql_tf import cli, files
from iql_tf.errors import UserError
from tools.benchmark import measure

FLAGS = flags.FLAGS
SIZE = 64
EPISODE = 500


def define_flags() -> None:
    flags.DEFINE_integer("frames", 20_000, "Frames of the dataset the input-wait row streams.")
    flags.DEFINE_list("memory_frames", ["20000", "80000"], "Sizes (frames) of the memory rows' datasets; empty: "
                      "skip them.")
    flags.DEFINE_string("encoder", "conv_small", "IQLAgent.encoder of the timed runs.")
    flags.DEFINE_integer("batch_size", 64, "Batch size of the timed runs.")
    flags.DEFINE_integer("frame_stack", 3, "make_dataset.frame_stack of the timed runs.")
    flags.DEFINE_integer("updates", 300, "Updates of the timed run.")
    flags.DEFINE_integer("memory_updates", 1200, "Updates of each memory run: enough for the larger dataset's run to "
                         "read about an epoch, after which the resident memory levels off (docs/performance.md).")
    flags.DEFINE_string("output_dir", "runs/benchmark", "Where pixels.md and pixels.json go.")
    flags.DEFINE_bool("ogbench_frames", False, "Measure storage on frames of OGBench's visual-cube-single environment "
                      "(rendered by MuJoCo offscreen: set MUJOCO_GL=egl, or osmesa after apt-get install libosmesa6) "
                      "instead of synthetic ones.")
    flags.DEFINE_string("render_frames", None, "Internal: render --frames OGBench frames into this .npy file.")
    flags.DEFINE_string("child", None, "Internal: train once, streamed, on this converted dataset; print the peak RSS.")


def rendered_frames(count: int, seed: int = 0) -> np.ndarray:
    """`count` frames [count, 64, 64, 3] uint8: a fixed gradient and boxes, and a ball drifting smoothly within
    each episode of EPISODE frames."""
    rng = np.random.default_rng(seed)
    grid = np.arange(SIZE)
    background = np.zeros((SIZE, SIZE, 3), np.float32)
    background[..., 0] = grid[None, :] * 2
    background[..., 2] = grid[:, None] * 2
    background[10:20, 40:60, 1] = 200
    background[45:60, 5:15] = (180, 180, 60)
    episodes = -(-count // EPISODE)
    steps = rng.normal(0, 0.6, (episodes, EPISODE, 2))
    positions = np.clip(rng.uniform(8, 56, (episodes, 1, 2)) + np.cumsum(steps, axis=1), 4, 60).reshape(-1, 2)[:count]
    frames = np.empty((count, SIZE, SIZE, 3), np.uint8)
    for start in range(0, count, 1000):
        part = positions[start:start + 1000]
        distance = (grid[None, :, None] - part[:, None, None, 1:2]) ** 2 + \
                   (grid[None, None, :, None] - part[:, None, None, 0:1]) ** 2
        ball = np.exp(-distance / 8.0)
        frames[start:start + 1000] = np.clip(background[None] * (1 - ball) + 255 * ball * np.float32([1, 1, 1]),
                                             0, 255).astype(np.uint8)
    return frames


def converted(directory: pathlib.Path, count: int, seed: int = 0) -> str:
    """A converted dataset of `count` rendered-like frames (episodes of EPISODE steps, random actions)."""
    from iql_tf.data import conversion, from_arrays, sources

    frames = rendered_frames(count + 1, seed)
    rng = np.random.default_rng(seed)
    timeouts = np.zeros(count)
    timeouts[EPISODE - 1::EPISODE] = 1
    source = from_arrays(frames[:-1], rng.uniform(-1, 1, (count, 4)), rng.standard_normal(count), np.zeros(count),
                         timeouts, next_observations=frames[1:])
    conversion.convert(sources.resolve(source), directory)
    return str(directory)


def ogbench_frames(count: int, scratch: pathlib.Path) -> np.ndarray:
    """`count` frames of OGBench's visual-cube-single task 1 under uniformly random actions (episodes of 200),
    rendered in a process of their own: TensorFlow segfaults beside MuJoCo's OSMesa renderer (seen here)."""
    path = scratch / "ogbench_frames.npy"
    measure.child_output([sys.executable, "-m", "tools.benchmark.pixels", f"--render_frames={path}",
                          f"--frames={count}"], "rendering OGBench's frames")
    return np.load(path)


def render_frames(path: str, count: int) -> None:
    from iql_tf import envs

    env = envs.make_env("visual-cube-single-singletask-task1-v0")
    env.action_space.seed(0)
    frames = [env.reset(seed=0)[0]]
    while len(frames) < count:
        observation, _, terminated, truncated, _ = env.step(env.action_space.sample())
        frames.append(env.reset()[0] if terminated or truncated else observation)
    np.save(path, np.stack(frames))


def _rate(dataset, count: int) -> float:
    """Items per second of reading `dataset` (`count` items) through, warmed up once."""
    for _ in dataset:
        pass
    start = time.perf_counter()
    for _ in range(3):
        for _ in dataset:
            pass
    return 3 * count / (time.perf_counter() - start)


def storage_rows(scratch: pathlib.Path, count: int = 2000) -> List[Dict]:
    """Bytes per frame and frames per second read back, raw against PNG."""
    frames = ogbench_frames(count, scratch) if FLAGS.ogbench_frames else rendered_frames(count)
    import tensorflow as tf

    pngs = [tf.io.encode_png(frame).numpy() for frame in frames]
    blocks = [tf.io.serialize_tensor(frames[start:start + 500]).numpy() for start in range(0, count, 500)]
    raw = tf.data.Dataset.from_tensor_slices(blocks).map(lambda block: tf.io.parse_tensor(block, tf.uint8),
                                                           num_parallel_calls=tf.data.AUTOTUNE)
    png = tf.data.Dataset.from_tensor_slices(pngs).map(tf.io.decode_png, num_parallel_calls=tf.data.AUTOTUNE)
    return [{"row": "raw uint8 (the shards)", "bytes_per_frame": SIZE * SIZE * 3,
             "frames_per_second": _rate(raw, count)},
            {"row": "PNG", "bytes_per_frame": float(np.mean([len(png) for png in pngs])),
             "frames_per_second": _rate(png, count)}]


def frames_once_rows(scratch: pathlib.Path, count: int) -> List[Dict]:
    """The shards' bytes per transition and transitions per second parsed, with each frame stored once and the next
    frames rebuilt block by block (what the shards hold), against the same blocks holding next frames whole (as
    shards held them before: every frame twice)."""
    import tensorflow as tf

    from iql_tf.data import shards
    from iql_tf.data.metadata import load_metadata

    directory = converted(scratch / "frames-once", count)
    metadata = load_metadata(directory)
    paths = shards.verified_paths(directory, metadata)
    records = [record.numpy() for record in tf.data.TFRecordDataset(paths)]  # both read from memory
    once = tf.data.Dataset.from_tensor_slices(records).map(lambda record: shards.parse_block(record, metadata),
                                                           num_parallel_calls=tf.data.AUTOTUNE)
    twice_blocks = []
    for block in once:  # the same blocks, their next frames stored whole
        example = {key: tf.train.Feature(bytes_list=tf.train.BytesList(value=[tf.io.serialize_tensor(value).numpy()]))
                   for key, value in block.items()}
        twice_blocks.append(tf.train.Example(features=tf.train.Features(feature=example)).SerializeToString())
    spec = {key: tf.io.FixedLenFeature([], tf.string) for key in shards.TRANSITION_KEYS}
    twice = tf.data.Dataset.from_tensor_slices(twice_blocks).map(
        lambda record: {key: tf.io.parse_tensor(value, tf.uint8 if key in shards.OBSERVATION_KEYS else tf.float32)
                        for key, value in tf.io.parse_single_example(record, spec).items()},
        num_parallel_calls=tf.data.AUTOTUNE)
    return [{"row": "each frame once, next frames rebuilt (the shards)",
             "bytes_per_transition": sum(len(record) for record in records) / count,
             "transitions_per_second": _rate(once, count)},
            {"row": "next frames stored whole (every frame twice)",
             "bytes_per_transition": sum(len(block) for block in twice_blocks) / count,
             "transitions_per_second": _rate(twice, count)}]


def wait_row(directory: str, updates: int) -> Dict:
    """The share of a streamed run's time spent fetching groups of batches (waiting on tf.data)."""
    from iql_tf.agent import IQLAgent
    from iql_tf.data.pipeline import make_dataset
    from iql_tf.data.streaming import StreamedBatches, default_shuffle_buffer
    from iql_tf.data.transitions import stacked_shape
    from iql_tf.settings import AgentSettings, DataSettings

    dataset = make_dataset(DataSettings(directory, streaming=True))
    batches = StreamedBatches(dataset.directory, dataset.metadata, dataset.preprocessing, 1, FLAGS.batch_size,
                              default_shuffle_buffer(dataset.metadata, FLAGS.frame_stack), seed=0,
                              frame_stack=FLAGS.frame_stack)
    shape = stacked_shape(dataset.metadata.observation_shape, FLAGS.frame_stack)
    agent = IQLAgent(int(np.prod(shape)), 4, AgentSettings(encoder=FLAGS.encoder, batch_size=FLAGS.batch_size,
                                                           augmentation_probability=0.5, jit_compile=False),
                     updates, image_shape=shape)
    agent.run_updates(batches, 20)  # traced and compiled, the pipeline started
    waited = 0.0
    fetch = batches.available

    def timed_fetch() -> int:
        nonlocal waited
        start = time.perf_counter()
        available = fetch()
        waited += time.perf_counter() - start
        return available

    batches.available = timed_fetch
    start = time.perf_counter()
    agent.run_updates(batches, updates)
    total = time.perf_counter() - start
    return {"row": f"{FLAGS.encoder}, batch {FLAGS.batch_size}, {FLAGS.frame_stack} frames, streamed",
            "updates_per_second": updates / total, "input_wait_share": waited / total}


def memory_rows(sizes: List[int], scratch: pathlib.Path) -> List[Dict]:
    rows = []
    for index, count in enumerate(sizes):
        directory = converted(scratch / f"memory-{count}", count, seed=index + 1)
        gb = sum(path.stat().st_size for path in pathlib.Path(directory).glob("shard-*")) / 1e9
        command = [sys.executable, "-m", "tools.benchmark.pixels", f"--child={directory}",
                   f"--updates={FLAGS.memory_updates}", f"--encoder={FLAGS.encoder}",
                   f"--batch_size={FLAGS.batch_size}", f"--frame_stack={FLAGS.frame_stack}"]
        rows.append({"row": f"streamed, {count} frames, {gb:.2f} GB converted", "dataset_gb": gb,
                     "peak_rss_gb": measure.child_peak_rss(command)})
    return rows


def child(directory: str) -> None:
    from iql_tf import trainer
    from iql_tf.settings import AgentSettings, DataSettings, RunSettings

    with tempfile.TemporaryDirectory() as workdir:
        trainer.run_training(workdir, DataSettings(directory, streaming=True, frame_stack=FLAGS.frame_stack),
                             AgentSettings(encoder=FLAGS.encoder, batch_size=FLAGS.batch_size, jit_compile=False,
                                           augmentation_probability=0.5),
                             RunSettings(num_offline_steps=FLAGS.updates, eval_episodes=0, progress_bar=False,
                                         checkpoint_interval=FLAGS.updates, steps_per_call=100))
    measure.print_peak_rss()


def main(argv) -> None:
    if len(argv) > 1:
        raise UserError(f"unexpected arguments {list(argv[1:])}")
    if FLAGS.render_frames:  # before TensorFlow is loaded
        render_frames(FLAGS.render_frames, FLAGS.frames)
        return
    from iql_tf import quiet

    quiet.quiet_tensorflow()
    if FLAGS.child:
        child(FLAGS.child)
        return
    with tempfile.TemporaryDirectory() as scratch:
        scratch = pathlib.Path(scratch)
        storage = storage_rows(scratch)
        once = frames_once_rows(scratch, FLAGS.frames)
        wait = wait_row(converted(scratch / "wait", FLAGS.frames), FLAGS.updates)
        memory = memory_rows([int(size) for size in FLAGS.memory_frames], scratch)
    kind = "OGBench visual-cube-single" if FLAGS.ogbench_frames else "synthetic"
    lines = [f"| 64x64x3 frames ({kind}) | bytes per frame | frames/s read back in tf.data |", "| --- | --- | --- |"]
    lines += [f"| {row['row']} | {row['bytes_per_frame']:.0f} | {row['frames_per_second']:.0f} |" for row in storage]
    lines += ["", f"| {FLAGS.frames} transitions of 64x64x3 frames in shards | bytes per transition | "
              "transitions/s parsed in tf.data |", "| --- | --- | --- |"]
    lines += [f"| {row['row']} | {row['bytes_per_transition']:.0f} | {row['transitions_per_second']:.0f} |"
              for row in once]
    lines += ["", f"| training run, {FLAGS.updates} updates | updates/s | time waiting on input |",
              "| --- | --- | --- |",
              f"| {wait['row']} | {wait['updates_per_second']:.2f} | {100 * wait['input_wait_share']:.1f} % |"]
    if memory:
        lines += ["", f"| training run, {FLAGS.memory_updates} updates | peak RSS |", "| --- | --- |"]
        lines += [f"| {row['row']} | {row['peak_rss_gb']:.2f} GB |" for row in memory]
    text = "\n".join(lines) + "\n"
    output = pathlib.Path(FLAGS.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    files.write_text(output / "pixels.md", text)
    files.write_json(output / "pixels.json", {"storage": storage, "frames_once": once, "wait": wait, "memory": memory})
    print(text)


if __name__ == "__main__":
    define_flags()
    cli.run(main, sys.modules[__name__])
