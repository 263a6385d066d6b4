"""Generating offline datasets into the local Minari root (no download, no jax): the project's PointMaze
stitching datasets, uniform random actions in any environment, and rollouts of an exported policy.

Importing this package registers the project's own dataset ids with `iql_tf.data.generated`, so that
training or converting one that is missing generates it first.
"""

import functools

from iql_tf.data import generated
from iql_tf.generation import generate

for _maze, _dataset_id in generate.POINTMAZE_DATASET_IDS.items():
    generated.register(_dataset_id, functools.partial(generate.generate_pointmaze, maze=_maze))
