"""SavedModel export of the extracted policy, loadable by deployment code with TensorFlow alone.

Layout (SPEC.md section 5): `DIR/export/policy/` holds a SavedModel with the signatures
`serving_default` (observations -> deterministic actions in [-1, 1]) and `sample`
(observations, temperature, seed -> sampled actions clipped to [-1, 1]), and
`assets/metadata.json` describing the environment, the observation flattening and the run.
"""

import json
import os
import shutil
import tempfile
from typing import Any, Dict

import tensorflow as tf

from iql_tf.networks import GaussianActor

METADATA_FILE = "metadata.json"


class ExportedPolicy(tf.Module):
    """The actor alone, behind fixed input signatures."""

    def __init__(self, actor: GaussianActor, observation_dim: int):
        super().__init__(name="policy")
        self.actor = actor
        observations = tf.TensorSpec([None, observation_dim], tf.float32, name="observations")
        self.act = tf.function(self._act, input_signature=[observations])
        self.sample = tf.function(
            self._sample,
            input_signature=[
                observations,
                tf.TensorSpec([], tf.float32, name="temperature"),
                tf.TensorSpec([2], tf.int32, name="seed"),
            ],
        )

    def _act(self, observations: tf.Tensor) -> Dict[str, tf.Tensor]:
        return {"actions": tf.clip_by_value(self.actor(observations), -1.0, 1.0)}

    def _sample(self, observations: tf.Tensor, temperature: tf.Tensor, seed: tf.Tensor) -> Dict[str, tf.Tensor]:
        actions = self.actor.distribution(observations, temperature=temperature).sample(seed=seed)
        return {"actions": tf.clip_by_value(actions, -1.0, 1.0)}


def export_policy(actor: GaussianActor, observation_dim: int, directory: str, metadata: Dict[str, Any]) -> None:
    """Writes the SavedModel and its metadata to `directory`, replacing an earlier export.

    The export is written to a staging folder and renamed into place, so `directory` never holds
    a half-written SavedModel."""
    parent = os.path.dirname(os.path.abspath(directory))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".policy-", dir=parent)
    try:
        module = ExportedPolicy(actor, observation_dim)
        tf.saved_model.save(
            module, staging, signatures={"serving_default": module.act, "sample": module.sample}
        )
        os.makedirs(os.path.join(staging, "assets"), exist_ok=True)
        with open(os.path.join(staging, "assets", METADATA_FILE), "w") as f:
            json.dump(metadata, f, indent=2, sort_keys=True)
        if os.path.exists(directory):
            retired = tempfile.mkdtemp(prefix=".policy-old-", dir=parent)
            os.replace(directory, os.path.join(retired, "policy"))
            os.replace(staging, directory)
            shutil.rmtree(retired)
        else:
            os.replace(staging, directory)
    finally:
        if os.path.exists(staging):
            shutil.rmtree(staging)


def load_metadata(directory: str) -> Dict[str, Any]:
    """The metadata stored beside an exported policy."""
    with open(os.path.join(directory, "assets", METADATA_FILE)) as f:
        return json.load(f)
