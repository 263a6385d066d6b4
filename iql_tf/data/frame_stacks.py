"""Frame stacks (`make_dataset.frame_stack` = k): an image observation becomes its trajectory's last k frames,
oldest first, along the channels, the first frame repeated at the trajectory's start; its next observation is
the stack one step on. As the FQL repository builds them (utils/datasets.py, `Dataset.sample` with
`frame_stack`) and as evaluation sees them (`envs.stack_frames`, gymnasium's FrameStackObservation with the
reset frame as padding), so that training, evaluation and the export's input agree.

Frames are stored once. Held in memory, the stacks are gathered at sample time from each row's offset in its
trajectory (`gather`); streamed, they are built block by block inside tf.data (`stack_blocks`), each shard read
in order with the last k - 1 frames carried from block to block (a shard of images starts a trajectory:
`shards.write_shards`). Observations of parts stack each image part alike; their vectors are the row's own.
"""

from typing import Any, Callable, Dict, Tuple

import tensorflow as tf

from iql_tf.data.parts import is_parts


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


def _stacks(frames: tf.Tensor, rows: tf.Tensor, row_offsets: tf.Tensor, next_frames: tf.Tensor, k: int
            ) -> Tuple[tf.Tensor, tf.Tensor]:
    """The stacks of the observations at `rows` of `frames` (held in order; `row_offsets`: those rows' offsets
    in their trajectories) and of their next observations (`next_frames`, one per row): [..., h, w, k * c] each;
    vectors (a part of an observation) as they are."""
    if frames.shape.rank == 2:
        return tf.gather(frames, rows), next_frames
    past = [tf.gather(frames, _frame_indices(rows, row_offsets, back)) for back in range(k - 1, 0, -1)]
    current = tf.gather(frames, rows)
    return tf.concat(past + [current], -1), tf.concat(past[1:] + [current, next_frames], -1)


def _each_part(stacks: Callable[[tf.Tensor, tf.Tensor], Tuple[tf.Tensor, tf.Tensor]], frames: Any,
               next_frames: Any) -> Tuple[Any, Any]:
    """`stacks` of frames and next frames, or of each part's (a dict of observations, one of next observations)."""
    if not is_parts(frames):
        return stacks(frames, next_frames)
    pairs = {name: stacks(frames[name], next_frames[name]) for name in frames}
    return {name: pair[0] for name, pair in pairs.items()}, {name: pair[1] for name, pair in pairs.items()}


def gather(frames: Any, next_frames: Any, offsets: tf.Variable, rows: tf.Tensor, k: int) -> Tuple[Any, Any]:
    """The stacks of the observations and next observations of `rows` (any shape of indices) from frames held
    in order (or parts), `offsets` as `trajectory_offsets` gives them, `next_frames` the next frames of `rows`:
    [..., h, w, k * c] each."""
    row_offsets = tf.gather(offsets, rows)
    return _each_part(lambda part, next_part: _stacks(part, rows, row_offsets, next_part, k), frames, next_frames)


def stack_blocks(blocks: tf.data.Dataset, k: int) -> tf.data.Dataset:
    """Blocks of consecutive rows (dicts with observations, next_observations, dones), the first starting a
    trajectory, with their observations and next observations stacked; the last k - 1 frames carried on."""
    tails = tf.nest.map_structure(lambda spec: tf.zeros([k - 1, *spec.shape[1:]], spec.dtype),
                                  blocks.element_spec["observations"])
    state = (tails, tf.constant(-1), tf.constant(True))

    def step(carried, block: Dict[str, Any]):
        tails, carried_offset, carried_done = carried
        frames = tf.nest.map_structure(lambda tail, part: tf.concat([tail, part], axis=0), tails,
                                       block["observations"])
        offsets = trajectory_offsets(block["dones"], carried_offset, carried_done)
        rows = tf.range(tf.shape(offsets)[0]) + (k - 1)  # in `frames`
        observations, next_observations = _each_part(
            lambda part, next_part: _stacks(part, rows, offsets, next_part, k), frames, block["next_observations"])
        stacked = dict(block, observations=observations, next_observations=next_observations)
        return (tf.nest.map_structure(lambda part: part[-(k - 1):], frames), offsets[-1],
                tf.cast(block["dones"][-1], tf.bool)), stacked

    return blocks.scan(state, step)
