"""Random-shift augmentation of image batches, as the FQL repository (utils/datasets.py, `augment`) and OGBench's
agents apply it with `p_aug`: with probability p a whole batch is augmented; then each image is shifted by up to
PADDING pixels in each direction, its border pixels repeated into what the shift uncovers (edge padding, then a
crop back to the image's size), and its next observation by the same shift, so a transition stays one scene.
Done inside the compiled update, on the batch's uint8 images, with the members' own generators (so a resumed run
draws the same shifts). Observations of parts: every image part by the same shift (as the FQL repository's
`augment` maps one crop over every image in a batch), vectors as they are.
"""

from typing import Any, Dict, Sequence

import tensorflow as tf

from iql_tf.data.parts import map_parts

PADDING = 3  # pixels, the FQL repository's (for 64x64 images)


def shift(images: tf.Tensor, offsets: tf.Tensor) -> tf.Tensor:
    """Images [B, h, w, c] shifted by `offsets` [B, 2] (row and column, in [0, 2 * PADDING]): pixel (i, j) of the
    result is pixel (i + dy - PADDING, j + dx - PADDING) of the image, clamped to its border."""
    height, width = images.shape[1], images.shape[2]
    rows = tf.clip_by_value(tf.range(height)[None] + offsets[:, :1] - PADDING, 0, height - 1)
    columns = tf.clip_by_value(tf.range(width)[None] + offsets[:, 1:] - PADDING, 0, width - 1)
    return tf.gather(tf.gather(images, rows, axis=1, batch_dims=1), columns, axis=2, batch_dims=1)


def shifted(batch: Dict[str, Any], generators: Sequence[tf.random.Generator], probability: float
            ) -> Dict[str, Any]:
    """`batch` ([members, B, ...] tensors) with each member's observations and next observations shifted alike,
    with probability `probability` per member and batch, drawn with that member's generator."""
    observations, next_observations = [], []
    for member, generator in enumerate(generators):
        batch_size = tf.shape(batch["rewards"])[1]
        augment = generator.uniform([]) < probability
        offsets = generator.uniform([batch_size, 2], 0, 2 * PADDING + 1, tf.int32)

        def member_shifted(images: tf.Tensor) -> tf.Tensor:
            images = images[member]
            return tf.where(augment, shift(images, offsets), images) if images.shape.rank == 4 else images

        observations.append(map_parts(member_shifted, batch["observations"]))
        next_observations.append(map_parts(member_shifted, batch["next_observations"]))
    return dict(batch, observations=map_parts(lambda *members: tf.stack(members), *observations),
                next_observations=map_parts(lambda *members: tf.stack(members), *next_observations))
