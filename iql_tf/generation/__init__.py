"""Generating offline datasets into the local Minari root (no download, no jax): the project's PointMaze
stitching datasets, uniform random actions in any environment, and rollouts of an exported policy.

The commands that read datasets call `register_generated_datasets()`, which tells `iql_tf.data.generated`
how to make each of the project's own dataset ids, so that training, converting or validating one that is
missing generates it first. The read path itself never imports this package.
"""

import functools

from iql_tf.data import generated


def register_generated_datasets() -> None:
    """Registers the project's generated dataset ids (idempotent)."""
    from iql_tf.generation import generators

    for maze, dataset_id in generators.POINTMAZE_DATASET_IDS.items():
        generated.register(dataset_id, functools.partial(generators.generate_pointmaze, maze=maze))
    generated.register(generators.CAMERA_DATASET_ID, generators.generate_pointmaze_camera)
