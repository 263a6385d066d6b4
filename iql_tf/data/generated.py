"""Datasets the project generates itself (the quickstart's mazes): which ids, and generating a missing one.

The read path knows only that such ids exist. `iql_tf.generation.register_generated_datasets()` registers how
to make each one; the commands (iql-train, iql-convert, iql-validate, iql-sweep) and the trainer
(`iql_tf.trainer.train`, so `IQL.fit`) call it, so reading data never imports the generators, their
environments' planners or SavedModel loading.
"""

from typing import Callable, Dict

from absl import logging

from iql_tf.errors import UserError

NAMESPACE = "iql_tf/"  # the Minari namespace of generated ids
_GENERATORS: Dict[str, Callable[[str], object]] = {}


def register(dataset_id: str, generate: Callable[[str], object]) -> None:
    """Makes `generate(dataset_id)` the way to create `dataset_id` in the local Minari root when missing."""
    _GENERATORS[dataset_id] = generate


def is_generated(dataset_id: str) -> bool:
    return dataset_id in _GENERATORS


def generate(dataset_id: str, exists: Callable[[str], bool]) -> None:
    """Generates a registered id into the local Minari root; another process generating it at the same
    time is not an error (`exists` tells whether it got there first)."""
    logging.info("%s is not in the local Minari root: generating it (no download needed)", dataset_id)
    try:
        _GENERATORS[dataset_id](dataset_id)
    except UserError:
        if not exists(dataset_id):
            raise
