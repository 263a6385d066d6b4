"""The trained policy, in one place: what it is in this process, its export, the checks of an export, and
loading one.

    policy.member_policy   one ensemble member's deterministic policy, raw observations in, actions out
    policy/metadata.py     assets/metadata.json of an export (TensorFlow-free), and what it says of the data
    policy/exported.py     the SavedModel + TFLite + ONNX export of a member, with its SHA256SUMS
    policy/checks.py       before an export is loaded: its files are intact, and it runs only the ops of ours
    policy/loading.py      an export (or its ONNX model) loaded as a policy, after those checks

A policy (`Policy`) takes a float32 batch [B, obs_dim] of raw flattened observations (`envs.flatten_observation`
in the metadata's `observation_keys` order), or of uint8 images [B, h, w, c] (frame stacks along the channels),
or a dict of such batches, one per part (observations of parts), and returns actions [B, act_dim] in the
environment's units: the trainer's evaluation, the API's `predict`, the exported SavedModel and the generators
all answer alike.
"""

from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from iql_tf.data.parts import map_parts

if TYPE_CHECKING:  # the agent imports TensorFlow; the metadata's readers need not
    from iql_tf.agent import IQLAgent
    from iql_tf.data.preprocessing import Preprocessing

# [B, obs_dim] float32 (or uint8 images [B, h, w, c]) -> [B, act_dim] in the env's units
Policy = Callable[[Any], np.ndarray]


def member_policy(agent: "IQLAgent", preprocessing: "Preprocessing", member: int) -> Policy:
    """Member `member`'s deterministic policy (the mean) on raw observations, in the data's units: what its
    export answers."""

    def act(observations: Any) -> np.ndarray:
        if agent.parts:  # each part as the networks take it
            prepared = {part.name: np.asarray(observations[part.name], part.dtype) for part in agent.parts}
        elif agent.image_shape:  # uint8 images, scaled inside the networks
            prepared = np.asarray(observations, np.uint8)
        else:
            prepared = np.asarray(preprocessing.observations(np.asarray(observations, np.float32)), np.float32)
        members = map_parts(lambda values: np.broadcast_to(values, (agent.members, *values.shape)), prepared)
        unit = agent.act(members).numpy()[member]
        return preprocessing.actions_to_env(unit, np.clip)

    return act
