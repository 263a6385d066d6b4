"""The losses against numpy on hand-made numbers."""

import numpy as np
import tensorflow as tf

from iql_tf import losses


def test_expectile_loss_weights_positive_and_negative_errors_asymmetrically():
    diff = np.array([2.0, -1.0, 0.5, -3.0], np.float32)
    tau = 0.7
    expected = np.mean(np.where(diff > 0, tau, 1 - tau) * diff**2)  # (0.7*4 + 0.3*1 + 0.7*.25 + 0.3*9) / 4
    assert np.isclose(expected, (2.8 + 0.3 + 0.175 + 2.7) / 4)
    np.testing.assert_allclose(losses.expectile_loss(tf.constant(diff), tau).numpy(), expected, rtol=1e-6)


def test_expectile_loss_at_one_half_is_half_the_mean_squared_error():
    diff = tf.constant([1.0, -2.0, 3.0])
    np.testing.assert_allclose(losses.expectile_loss(diff, 0.5).numpy(), 0.5 * np.mean([1.0, 4.0, 9.0]), rtol=1e-6)


def test_expectile_minimiser_is_the_expectile():
    # Minimising the loss over a constant v recovers the tau-expectile of the samples: it lies above
    # the mean for tau > 0.5 and satisfies tau * E[(x - v)+] = (1 - tau) * E[(v - x)+].
    samples = tf.constant([0.0, 1.0, 2.0, 10.0])
    v = tf.Variable(0.0)
    optimizer = tf.keras.optimizers.SGD(0.1)
    for _ in range(2000):
        with tf.GradientTape() as tape:
            loss = losses.expectile_loss(samples - v, 0.9)
        optimizer.apply_gradients([(tape.gradient(loss, v), v)])
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
    expected = np.mean((q1 - y) ** 2) + np.mean((q2 - y) ** 2)  # 0.625 + 1.625
    np.testing.assert_allclose(losses.critic_loss(*map(tf.constant, (q1, q2, y))).numpy(), expected)
    assert np.isclose(expected, 2.25)


def test_awr_weights_are_exponentiated_clipped_at_100_and_carry_no_gradient():
    advantages = tf.Variable([-1.0, 0.0, 0.5, 3.0])
    with tf.GradientTape() as tape:
        weights = losses.awr_weights(advantages, beta=3.0)
    np.testing.assert_allclose(weights.numpy(), [np.exp(-3.0), 1.0, np.exp(1.5), 100.0], rtol=1e-6)
    assert tape.gradient(weights, advantages) is None


def test_awr_actor_loss_is_negative_weighted_mean_log_likelihood():
    log_probs = np.array([-1.0, -2.0, -0.5], np.float32)
    weights = np.array([2.0, 0.5, 1.0], np.float32)
    expected = -np.mean(weights * log_probs)  # (2 + 1 + 0.5) / 3
    np.testing.assert_allclose(losses.awr_actor_loss(tf.constant(log_probs), tf.constant(weights)).numpy(), expected)
    assert np.isclose(expected, 3.5 / 3)
