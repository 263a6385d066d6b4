"""One IQL update of iql-tf against an independent implementation: the JAX / Flax / optax reference of the
benchmarks (the authors' structure), from identical weights on an identical batch."""

import numpy as np
import pytest
import tensorflow as tf

from iql_tf import augmentation
from iql_tf.agent import IQLAgent
from iql_tf.settings import AgentSettings
from tools.benchmark.jax_reference import JaxIQL

OBS, ACT, HIDDEN, BATCH = 5, 2, (16, 16), 64


def neutral_weights(agent: IQLAgent) -> dict:
    """The agent's weights under the reference's neutral names ("critic1/0/kernel": [in, out], ...)."""
    weights = {}
    networks = {"value": agent.value, "critic1": agent.critic.q1, "critic2": agent.critic.q2,
                "target_critic1": agent.target_critic.q1, "target_critic2": agent.target_critic.q2}
    for name, network in networks.items():
        for index, layer in enumerate([*network.trunk.layers, network.head]):
            weights[f"{name}/{index}/kernel"], weights[f"{name}/{index}/bias"] = layer.member(0)
    actor = agent.member_weights(0)
    for index in range(len(HIDDEN) + 1):
        weights[f"actor/{index}/kernel"], weights[f"actor/{index}/bias"] = actor[f"kernel_{index}"], actor[f"bias_{index}"]
    weights["actor/log_std"] = actor["log_std"]
    return weights


@pytest.mark.parametrize("expectile, beta", [(0.7, 3.0), (0.9, 10.0)])
def test_one_update_matches_the_jax_reference(expectile, beta):
    rng = np.random.default_rng(0)
    batch = {"observations": rng.normal(size=(BATCH, OBS)), "actions": rng.uniform(-0.9, 0.9, (BATCH, ACT)),
             "rewards": rng.normal(size=BATCH), "masks": (rng.uniform(size=BATCH) > 0.2).astype(float),
             "next_observations": rng.normal(size=(BATCH, OBS))}
    batch = {key: value.astype(np.float32) for key, value in batch.items()}
    agent = IQLAgent(OBS, ACT, AgentSettings(hidden_dims=HIDDEN, expectile=expectile, beta=beta, jit_compile=False),
                     actor_decay_steps=1_000_000)
    # Keras adds epsilon to sqrt(v) before the bias correction, optax after it: for this first step, Keras'
    # epsilon * sqrt(1 - beta_2) is optax's 1e-8 (docs/semantics.md, trap 11). Without it, weights whose
    # gradient is near epsilon take visibly different steps.
    for optimizer in (agent.value_optimizer, agent.critic_optimizer, agent.actor_optimizer):
        optimizer.epsilon = 1e-8 * np.sqrt(1.0 - optimizer.beta_2)
    reference = JaxIQL(batch, OBS, ACT, HIDDEN, BATCH, max_steps=1_000_000, expectile=expectile, beta=beta)
    reference.set_weights(neutral_weights(agent))
    before = neutral_weights(agent)
    assert all(np.array_equal(value, reference.get_weights()[name].reshape(value.shape)) for name, value in before.items())

    metrics = agent.update({key: tf.constant(value[None]) for key, value in batch.items()}, tf.constant([[0, 0]]))
    reference.update_on(batch)
    after, expected = neutral_weights(agent), reference.get_weights()
    moved = [name for name in after if not np.allclose(after[name], before[name])]
    assert len(moved) > 20  # the update really changed the weights, of every network
    for name, value in after.items():
        np.testing.assert_allclose(value, expected[name].reshape(value.shape), atol=1e-5, err_msg=name)
    for name, value in reference.losses().items():
        np.testing.assert_allclose(metrics[name].numpy()[0], value, rtol=1e-5, err_msg=name)


def pixel_weights(agent: IQLAgent) -> dict:
    """The agent's weights under the names of `tools.benchmark.fql_reference` (member 0)."""
    weights = {}

    def mlp(prefix: str, network) -> None:
        dense = [layer for layer in network.trunk.layers if hasattr(layer, "kernel")]
        norms = [layer for layer in network.trunk.layers if hasattr(layer, "scale")]
        for index, layer in enumerate([*dense, network.head]):
            weights[f"{prefix}/{index}/kernel"], weights[f"{prefix}/{index}/bias"] = layer.member(0)
        for index, layer in enumerate(norms):
            weights[f"{prefix}/norm{index}/scale"], weights[f"{prefix}/norm{index}/offset"] = (
                layer.scale.numpy(), layer.offset.numpy())

    for prefix, network in (("value", agent.value), ("critic", agent.critic), ("target_critic", agent.target_critic),
                            ("actor", agent.actor)):
        weights.update({f"{prefix}/encoder/{key}": value for key, value in network.encoder.member_arrays(0).items()})
    mlp("value", agent.value)
    for prefix, twin in (("critic", agent.critic), ("target_critic", agent.target_critic)):
        mlp(f"{prefix}1", twin.q1)
        mlp(f"{prefix}2", twin.q2)
    actor = agent.member_weights(0)
    for index in range(len(HIDDEN) + 1):
        name = "mean" if index == len(HIDDEN) else index
        weights[f"actor/{name}/kernel"] = actor[f"kernel_{index}"]
        weights[f"actor/{name}/bias"] = actor[f"bias_{index}"]
    return weights


def test_one_pixel_update_matches_the_fql_repositorys_iql_with_impala_small():
    """From identical weights and an identical augmented batch of 16x16 frames (two stacked RGB frames), one update
    of iql-tf with FQL's settings (gin/ogbench.gin's, impala_small) gives the weights of FQL's IQL update, as
    `tools.benchmark.fql_reference` computes it (checked against FQL's own code by `tools.fql_peer pixels`)."""
    from tools.benchmark.fql_reference import FqlPixelIQL, random_crop

    image_shape, batch_size = (16, 16, 6), 32
    rng = np.random.default_rng(1)
    offsets = rng.integers(0, 7, (batch_size, 2)).astype(np.int32)
    frames = {key: rng.integers(0, 256, (batch_size, *image_shape), dtype=np.uint8)
              for key in ("observations", "next_observations")}
    batch = {key: np.asarray(random_crop(value, offsets)) for key, value in frames.items()}
    batch.update(actions=rng.uniform(-0.9, 0.9, (batch_size, ACT)).astype(np.float32),
                 rewards=rng.normal(size=batch_size).astype(np.float32),
                 masks=(rng.uniform(size=batch_size) > 0.2).astype(np.float32))
    settings = AgentSettings(hidden_dims=HIDDEN, expectile=0.9, beta=3.0, activation="gelu_tanh",
                             critic_layer_norm=True, constant_std=True, tanh_mean=False, actor_cosine_decay=False,
                             kernel_init="glorot_uniform", update_order="joint", encoder="impala_small",
                             jit_compile=False)
    agent = IQLAgent(int(np.prod(image_shape)), ACT, settings, actor_decay_steps=1_000_000, image_shape=image_shape)
    for optimizer in (agent.value_optimizer, agent.critic_optimizer, agent.actor_optimizer):
        optimizer.epsilon = 1e-8 * np.sqrt(1.0 - optimizer.beta_2)  # optax's epsilon (see the test above)
    # Targets apart from the critics, so that the Polyak step shows which critic parameters it moves towards.
    for variable in agent.target_critic.trainable_variables + agent.target_critic.non_trainable_variables:
        variable.assign(variable + rng.normal(0.0, 0.01, variable.shape).astype(np.float32))
    before = pixel_weights(agent)
    reference = FqlPixelIQL(before, layers=len(HIDDEN), alpha=3.0)
    # iql-tf's own shift of the frames gives FQL's crop (iql-tf shifts inside its update; off here, so that both
    # updates see the same batch).
    for key, value in frames.items():
        np.testing.assert_array_equal(augmentation.shift(tf.constant(value), tf.constant(offsets)), batch[key])

    metrics = agent.update({key: tf.constant(value[None]) for key, value in batch.items()}, tf.constant([[0, 0]]))
    reference.update(batch)
    after, expected = pixel_weights(agent), reference.weights()
    assert sorted(after) == sorted(expected)
    moved = [name for name in after if "target" not in name and not np.allclose(after[name], before[name])]
    assert len(moved) > 60  # every network moved, encoders included
    for name, value in after.items():
        np.testing.assert_allclose(value, expected[name].reshape(value.shape), atol=1e-5, err_msg=name)
        if name.startswith("target"):  # element-wise: tau x (critic before its step) + (1 - tau) x target
            np.testing.assert_allclose(value, expected[name].reshape(value.shape), atol=1e-7, err_msg=name)
    for name, value in reference.info.items():
        np.testing.assert_allclose(metrics[name].numpy()[0], value, rtol=1e-4, err_msg=name)
