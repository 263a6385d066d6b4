"""Network shapes, initialisation and the policy distribution (SPEC.md section 1)."""

import numpy as np
import tensorflow as tf

from iql_tf.networks import GaussianActor, TwinCritic, ValueNetwork


def test_value_and_twin_critic_shapes_and_independence():
    observations, actions = tf.random.normal([5, 3]), tf.random.normal([5, 2])
    assert ValueNetwork(3, (16, 16), "relu", seed=0)(observations).shape == (5,)
    critic = TwinCritic(3, 2, (16, 16), "relu", seed=0)
    q1, q2 = critic(observations, actions)
    assert q1.shape == q2.shape == (5,)
    assert not np.allclose(q1.numpy(), q2.numpy())  # two independently initialised networks
    assert critic.q1.trunk.layers[0].kernel.shape == (5, 16)  # input is concat(observation, action)


def test_every_dense_is_orthogonal_with_gain_sqrt2_and_zero_bias():
    actor = GaussianActor(4, 3, (32, 32), "relu", seed=1)
    value = ValueNetwork(4, (32, 32), "relu", seed=2)
    critic = TwinCritic(4, 3, (32, 32), "relu", seed=3)
    networks = [actor.trunk.layers + [actor.mean_head], value.trunk.layers + [value.head]]
    networks += [q.trunk.layers + [q.head] for q in (critic.q1, critic.q2)]
    for layer in sum(networks, []):
        kernel = layer.kernel.numpy()
        small = min(kernel.shape)
        gram = kernel.T @ kernel if kernel.shape[0] >= kernel.shape[1] else kernel @ kernel.T
        np.testing.assert_allclose(gram, 2.0 * np.eye(small), atol=1e-4)
        np.testing.assert_array_equal(layer.bias.numpy(), 0.0)


def test_policy_is_gaussian_over_raw_actions_with_tanh_mean_and_clipped_log_std():
    actor = GaussianActor(4, 2, (8, 8), "relu", seed=2)
    observations = tf.random.normal([6, 4]) * 10.0
    mean = actor(observations).numpy()
    assert np.all(np.abs(mean) <= 1.0)
    actor.log_std.assign([-10.0, 5.0])  # outside [-5, 2]: clipped
    distribution = actor.distribution(observations, temperature=1.0)
    np.testing.assert_allclose(distribution.stddev().numpy()[0], np.exp([-5.0, 2.0]), rtol=1e-5)
    np.testing.assert_allclose(distribution.mean().numpy(), mean, rtol=1e-6)
    # Log-likelihood of a raw Gaussian (no tanh log-det correction), also at |a| = 1.
    actions = np.array([[1.0, -1.0]] * 6, np.float32)
    std = np.exp([-5.0, 2.0])
    expected = np.sum(-0.5 * ((actions - mean) / std) ** 2 - np.log(std) - 0.5 * np.log(2 * np.pi), axis=-1)
    np.testing.assert_allclose(distribution.log_prob(actions).numpy(), expected, rtol=1e-4)


def test_temperature_scales_the_std_and_zero_collapses_onto_the_mean():
    actor = GaussianActor(4, 2, (8, 8), "relu", seed=3)
    observations = tf.random.normal([3, 4])
    np.testing.assert_allclose(actor.distribution(observations, temperature=0.5).stddev().numpy(), 0.5)
    sample = actor.distribution(observations, temperature=0.0).sample(seed=[1, 2])
    np.testing.assert_allclose(sample.numpy(), actor(observations).numpy())


def test_dropout_only_with_a_seed_and_reproducible_for_the_same_seed():
    actor = GaussianActor(4, 2, (64, 64), "relu", seed=4, dropout_rate=0.5)
    observations = tf.random.normal([8, 4])
    deterministic = actor(observations).numpy()
    np.testing.assert_array_equal(actor(observations).numpy(), deterministic)
    dropped = actor(observations, dropout_seed=tf.constant([3, 4])).numpy()
    assert not np.allclose(dropped, deterministic)
    np.testing.assert_array_equal(actor(observations, dropout_seed=tf.constant([3, 4])).numpy(), dropped)
    assert not np.allclose(actor(observations, dropout_seed=tf.constant([5, 6])).numpy(), dropped)
