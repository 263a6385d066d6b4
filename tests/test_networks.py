"""Network shapes, initialisation, the policy distribution and the ensemble axis (docs/semantics.md)."""

import numpy as np
import tensorflow as tf

from iql_tf.networks import EnsembleDense, GaussianActor, TwinCritic, ValueNetwork, activation_function


def normal(shape, seed):
    """Standard normal float32 inputs, drawn from `seed` (the same on every run)."""
    return tf.random.stateless_normal(shape, seed=[seed, 0])


def test_value_and_twin_critic_shapes_and_independence():
    observations, actions = normal([1, 5, 3], 1), normal([1, 5, 2], 2)
    assert ValueNetwork(3, (16, 16), "relu", seeds=[0])(observations).shape == (1, 5)
    critic = TwinCritic(3, 2, (16, 16), "relu", seeds=[0])
    q1, q2 = critic(observations, actions)
    assert q1.shape == q2.shape == (1, 5)
    assert not np.allclose(q1.numpy(), q2.numpy())  # two independently initialised networks
    assert critic.q1.trunk.layers[0].kernel.shape == (5, 16)  # over concat(observation, action); one member: 2-D
    assert TwinCritic(3, 2, (16, 16), "relu", seeds=[0, 1]).q2.trunk.layers[0].kernel.shape == (2, 5, 16)


def test_every_dense_is_orthogonal_with_gain_sqrt2_and_zero_bias():
    actor = GaussianActor(4, 3, (32, 32), "relu", seeds=[1, 2])
    value = ValueNetwork(4, (32, 32), "relu", seeds=[2])
    critic = TwinCritic(4, 3, (32, 32), "relu", seeds=[3])
    layers = actor.trunk.layers + [actor.mean_head] + value.trunk.layers + [value.head]
    layers += critic.q1.trunk.layers + [critic.q1.head] + critic.q2.trunk.layers + [critic.q2.head]
    for layer in layers:
        for kernel, bias in (layer.member(k) for k in range(len(layer.seeds))):
            small = min(kernel.shape)
            gram = kernel.T @ kernel if kernel.shape[0] >= kernel.shape[1] else kernel @ kernel.T
            np.testing.assert_allclose(gram, 2.0 * np.eye(small), atol=1e-4)
            np.testing.assert_array_equal(bias, 0.0)


def test_glorot_uniform_kernels_with_a_near_zero_policy_mean_layer():
    # OGBench's IQL baselines: Glorot uniform, U(+-sqrt(6 / (fan_in + fan_out))), the mean layer's variance 0.01x.
    actor = GaussianActor(4, 3, (64, 64), "relu", seeds=[1, 2], kernel_init="glorot_uniform", tanh_mean=False)
    critic = TwinCritic(4, 3, (64, 64), "relu", seeds=[3], kernel_init="glorot_uniform")
    layers = [(layer, 1.0) for layer in actor.trunk.layers + critic.q1.trunk.layers + [critic.q2.head]]
    for layer, scale in layers + [(actor.mean_head, 0.01)]:
        for kernel, bias in (layer.member(k) for k in range(len(layer.seeds))):
            bound = np.sqrt(6.0 * scale / sum(kernel.shape))
            assert np.abs(kernel).max() <= bound and np.abs(kernel).max() > 0.9 * bound
            assert abs(kernel.var() / (bound ** 2 / 3.0) - 1.0) < 0.3  # the variance of U(-bound, bound)
            np.testing.assert_array_equal(bias, 0.0)
    # So the first policy acts near 0 where the orthogonal one does not: its mean layer's std is about 0.1x.
    observations = normal([2, 50, 4], 3)
    orthogonal = GaussianActor(4, 3, (64, 64), "relu", seeds=[1, 2], tanh_mean=False)
    assert np.abs(actor(observations).numpy()).mean() < 0.2 * np.abs(orthogonal(observations).numpy()).mean()


def test_an_ensemble_member_is_the_network_its_seed_makes_alone():
    together = GaussianActor(4, 2, (16, 16), "relu", seeds=[5, 6, 7])
    observations = normal([3, 8, 4], 4)
    outputs = together(observations).numpy()
    layers = lambda actor: actor.trunk.layers + [actor.mean_head]  # noqa: E731
    for member, seed in enumerate([5, 6, 7]):
        alone = GaussianActor(4, 2, (16, 16), "relu", seeds=[seed])
        for a, b in zip(layers(alone), layers(together)):
            for x, y in zip(a.member(0), b.member(member)):
                np.testing.assert_array_equal(x, y)
        np.testing.assert_allclose(alone(observations[member:member + 1]).numpy()[0], outputs[member], rtol=1e-5,
                                   atol=1e-6)


def test_ensemble_dense_of_several_members_is_a_batched_matmul():
    layer = EnsembleDense(3, seeds=[0, 1], activation="relu")
    inputs = normal([2, 4, 5], 5)
    outputs = layer(inputs).numpy()
    for member in range(2):
        expected = np.maximum(inputs.numpy()[member] @ layer.kernel.numpy()[member] + layer.bias.numpy()[member], 0)
        np.testing.assert_allclose(outputs[member], expected, rtol=1e-5, atol=1e-6)


def test_policy_is_gaussian_over_raw_actions_with_tanh_mean_and_clipped_log_std():
    actor = GaussianActor(4, 2, (8, 8), "relu", seeds=[2])
    observations = normal([1, 6, 4], 6) * 10.0
    mean = actor(observations).numpy()
    assert np.all(np.abs(mean) <= 1.0)
    actor.log_std.assign([[[-10.0, 5.0]]])  # outside [-5, 2]: clipped
    distribution = actor.distribution(observations, temperature=1.0)
    np.testing.assert_allclose(distribution.stddev().numpy()[0, 0], np.exp([-5.0, 2.0]), rtol=1e-5)
    np.testing.assert_allclose(distribution.mean().numpy(), mean, rtol=1e-6)
    # Log-likelihood of a raw Gaussian (no tanh log-det correction), also at |a| = 1.
    actions = np.array([[[1.0, -1.0]] * 6], np.float32)
    std = np.exp([-5.0, 2.0])
    expected = np.sum(-0.5 * ((actions - mean) / std) ** 2 - np.log(std) - 0.5 * np.log(2 * np.pi), axis=-1)
    np.testing.assert_allclose(distribution.log_prob(actions).numpy(), expected, rtol=1e-4)


def test_temperature_scales_the_std_and_zero_collapses_onto_the_mean():
    actor = GaussianActor(4, 2, (8, 8), "relu", seeds=[3])
    observations = normal([1, 3, 4], 7)
    np.testing.assert_allclose(actor.distribution(observations, temperature=0.5).stddev().numpy(), 0.5)
    sample = actor.distribution(observations, temperature=0.0).sample(seed=[1, 2])
    np.testing.assert_allclose(sample.numpy(), actor(observations).numpy())


def test_dropout_only_with_seeds_and_each_member_draws_its_own_masks():
    actor = GaussianActor(4, 2, (64, 64), "relu", seeds=[4, 4], dropout_rate=0.5)  # two identical members
    observations = tf.tile(normal([1, 8, 4], 8), [2, 1, 1])
    deterministic = actor(observations).numpy()
    np.testing.assert_array_equal(actor(observations).numpy(), deterministic)
    seeds = tf.constant([[3, 4], [5, 6]])
    dropped = actor(observations, dropout_seeds=seeds).numpy()
    assert not np.allclose(dropped, deterministic)
    np.testing.assert_array_equal(actor(observations, dropout_seeds=seeds).numpy(), dropped)
    assert not np.allclose(dropped[0], dropped[1])  # same weights, own masks
    same = actor(observations, dropout_seeds=tf.constant([[3, 4], [3, 4]])).numpy()
    np.testing.assert_array_equal(same[0], same[1])


def test_gelu_tanh_is_flaxs_gelu():
    # Flax's nn.gelu (approximate=True): 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3))); Keras' 'gelu' is exact.
    x = np.linspace(-4.0, 4.0, 81).astype(np.float32)
    flax = 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x ** 3)))
    np.testing.assert_allclose(activation_function("gelu_tanh")(x).numpy(), flax, atol=1e-6)
    assert np.abs(activation_function("gelu")(x).numpy() - flax).max() > 1e-4
