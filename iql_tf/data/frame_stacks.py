"""Frame stacks (`make_dataset.frame_stack` = k): an image observation becomes its trajectory's last k frames,
oldest first, along the channels, the first frame repeated at the trajectory's start; its next observation is
the stack one step on. As the FQL repository builds them (utils/datasets.py, `Dataset.sample` with
`frame_stack`) and as evaluation sees them (`envs.stack_frames`, gymnasium's FrameStackObservation with the
reset frame as padding), so that training, evaluation and the export's input agree.

Frames are stored once. Held in memory, the stacks are gathered at sample time from each row's offset in its
trajectory (`gather`); streamed, they are built block by block inside tf.data (`stack_blocks`), each shard read
in order with the last k - 1 frames carried from block to block (a shard of images starts a trajectory:
`shards.write_shards`).
"""

from typing import Dict, Tuple

import tensorflow as tf


def trajectory_offsets(dones: tf.Tensor, carried_offset: tf.Tensor = -1, carried_done: tf.Tensor = True
                       ) -> tf.Tensor:
    """Each row's steps since its trajectory's start, [n] int32, from `dones` [n] (1 on a trajectory's last
    row); rows before the first start continue the trajectory of the row before them, which had
    `carried_offset` and ended if `carried_done`."""
    dones = tf.cast(dones, tf.bool)
    count = tf.shape(dones)[0]
    rows = tf.range(count)
    starts = tf.concat([[tf.cast(carried_done, tf.bool)], dones[:-1]], axis=0)
    segment = tf.cumsum(tf.cast(starts, tf.int32))  # 0 before the first start in these rows
    first_row = tf.math.unsorted_segment_min(rows, segment, count + 1)
    return tf.where(segment > 0, rows - tf.gather(first_row, segment), carried_offset + 1 + rows)


def _frame_indices(rows: tf.Tensor, offsets: tf.Tensor, back: int) -> tf.Tensor:
    """The index of the frame `back` steps before each row, the trajectory's first frame at most."""
    return rows - tf.minimum(back, offsets)


def gather(frames: tf.Variable, next_frames: tf.Variable, offsets: tf.Variable, rows: tf.Tensor, k: int
           ) -> Tuple[tf.Tensor, tf.Tensor]:
    """The stacks of the observations and next observations of `rows` (any shape of indices) from frames held
    in order, `offsets` as `trajectory_offsets` gives them: [..., h, w, k * c] each."""
    offsets = tf.gather(offsets, rows)
    past = [tf.gather(frames, _frame_indices(rows, offsets, back)) for back in range(k - 1, 0, -1)]
    return tf.concat(past + [tf.gather(frames, rows)], -1), tf.concat(past[1:] + [tf.gather(frames, rows),
                                                                                  tf.gather(next_frames, rows)], -1)


def stack_blocks(blocks: tf.data.Dataset, k: int) -> tf.data.Dataset:
    """Blocks of consecutive rows (dicts with observations, next_observations, dones), the first starting a
    trajectory, with their observations and next observations stacked; the last k - 1 frames carried on."""
    spec = blocks.element_spec["observations"]
    state = (tf.zeros([k - 1, *spec.shape[1:]], spec.dtype), tf.constant(-1), tf.constant(True))

    def step(carried, block: Dict[str, tf.Tensor]):
        tail, carried_offset, carried_done = carried
        frames = tf.concat([tail, block["observations"]], axis=0)
        offsets = trajectory_offsets(block["dones"], carried_offset, carried_done)
        rows = tf.range(tf.shape(offsets)[0]) + (k - 1)  # in `frames`
        past = [tf.gather(frames, _frame_indices(rows, offsets, back)) for back in range(k - 1, 0, -1)]
        current = block["observations"]
        stacked = dict(block, observations=tf.concat(past + [current], -1),
                       next_observations=tf.concat(past[1:] + [current, block["next_observations"]], -1))
        return (frames[-(k - 1):], offsets[-1], tf.cast(block["dones"][-1], tf.bool)), stacked

    return blocks.scan(state, step)
