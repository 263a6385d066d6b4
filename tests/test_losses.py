"""The losses against numpy on hand-made numbers."""

import numpy as np
import tensorflow as tf

from iql_tf import losses


def test_expectile_loss_weights_positive_and_negative_errors_asymmetrically():
    diff = np.array([2.0, -1.0, 0.5, -3.0], np.float32)
    tau = 0.7
    # By hand: (0.7 * 4 + 0.3 * 1 + 0.7 * 0.25 + 0.3 * 9) / 4 = 1.49375.
    np.testing.assert_allclose(losses.expectile_loss(tf.constant(diff), tau).numpy(), 1.49375, rtol=1e-6)


def test_expectile_loss_at_one_half_is_half_the_mean_squared_error():
    diff = tf.constant([1.0, -2.0, 3.0])
    np.testing.assert_allclose(losses.expectile_loss(diff, 0.5).numpy(), 0.5 * np.mean([1.0, 4.0, 9.0]), rtol=1e-6)


def test_expectile_minimiser_is_the_expectile():
    # Minimising the loss over a constant v recovers the tau-expectile of the samples: it lies above
    # the mean for tau > 0.5 and satisfies tau * E[(x - v)+] = (1 - tau) * E[(v - x)+].
    samples = tf.constant([0.0, 1.0, 2.0, 10.0])
    v = tf.Variable(0.0)

    @tf.function
    def descend():
        for _ in tf.range(2000):
            with tf.GradientTape() as tape:
                loss = losses.expectile_loss(samples - v, 0.9)
            v.assign_sub(0.1 * tape.gradient(loss, v))

    descend()
    x, value = samples.numpy(), v.numpy()
    assert value > x.mean()
    np.testing.assert_allclose(0.9 * np.maximum(x - value, 0).mean(), 0.1 * np.maximum(value - x, 0).mean(), rtol=1e-3)


def test_td_target_masks_terminals_and_stops_gradient():
    rewards = tf.constant([1.0, 0.0, -1.0])
    masks = tf.constant([1.0, 0.0, 1.0])
    next_values = tf.Variable([10.0, 10.0, 2.0])
    with tf.GradientTape() as tape:
        target = losses.td_target(rewards, masks, next_values, 0.99)
    np.testing.assert_allclose(target.numpy(), [1.0 + 9.9, 0.0, -1.0 + 1.98], rtol=1e-6)
    assert tape.gradient(target, next_values) is None


def test_critic_loss_sums_both_critics_mean_squared_errors():
    q1, q2, y = np.array([1.0, 2.0]), np.array([0.0, 4.0]), np.array([1.5, 3.0])
    # By hand: mean(0.25, 1) + mean(2.25, 1) = 0.625 + 1.625.
    np.testing.assert_allclose(losses.critic_loss(*map(tf.constant, (q1, q2, y))).numpy(), 2.25)


def test_awr_weights_are_exponentiated_clipped_at_100_and_carry_no_gradient():
    advantages = tf.Variable([-1.0, 0.0, 0.5, 3.0])
    with tf.GradientTape() as tape:
        weights = losses.awr_weights(advantages, beta=3.0)
    np.testing.assert_allclose(weights.numpy(), [np.exp(-3.0), 1.0, np.exp(1.5), 100.0], rtol=1e-6)
    assert tape.gradient(weights, advantages) is None


def test_awr_actor_loss_is_negative_weighted_mean_log_likelihood():
    log_probs = np.array([-1.0, -2.0, -0.5], np.float32)
    weights = np.array([2.0, 0.5, 1.0], np.float32)
    # By hand: -(2 * -1 + 0.5 * -2 + 1 * -0.5) / 3 = 3.5 / 3.
    np.testing.assert_allclose(losses.awr_actor_loss(tf.constant(log_probs), tf.constant(weights)).numpy(), 3.5 / 3,
                               rtol=1e-6)


def test_losses_of_an_ensemble_are_one_per_member_each_as_if_alone():
    rng = np.random.default_rng(0)
    diff, q1, q2, y, log_probs, weights = (rng.normal(size=(3, 5)).astype(np.float32) for _ in range(6))
    cases = [
        (lambda *a: losses.expectile_loss(a[0], 0.8), (diff,)),
        (losses.critic_loss, (q1, q2, y)),
        (losses.awr_actor_loss, (log_probs, np.abs(weights))),
    ]
    for loss, arrays in cases:
        together = loss(*map(tf.constant, arrays)).numpy()
        assert together.shape == (3,)
        alone = [float(loss(*(tf.constant(array[k]) for array in arrays))) for k in range(3)]
        np.testing.assert_allclose(together, alone, rtol=1e-6)
