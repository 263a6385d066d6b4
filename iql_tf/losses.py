"""The IQL losses as pure functions of tensors (paper eqs. 5-7).

Means run over the last (batch) axis, so [B] inputs give a scalar and [members, B] inputs give one loss per
ensemble member.
"""

import tensorflow as tf

# Brandfonbrener et al. (2021) clip exponentiated advantages to (-inf, 100] (paper appendix B).
MAX_AWR_WEIGHT = 100.0


def expectile_loss(diff: tf.Tensor, expectile: float) -> tf.Tensor:
    """Batch mean of L2_tau(u) = |tau - 1(u < 0)| * u^2 with u = Q(s, a) - V(s)."""
    weight = tf.where(diff > 0, expectile, 1.0 - expectile)
    return tf.reduce_mean(weight * tf.square(diff), axis=-1)


def td_target(rewards: tf.Tensor, masks: tf.Tensor, next_values: tf.Tensor, discount: float) -> tf.Tensor:
    """y = r + gamma * mask * V(s'), without gradient (mask = 1 - terminal)."""
    return tf.stop_gradient(rewards + discount * masks * next_values)


def critic_loss(q1: tf.Tensor, q2: tf.Tensor, target: tf.Tensor) -> tf.Tensor:
    """Sum of both critics' mean squared TD errors against the same target."""
    return tf.reduce_mean(tf.square(q1 - target), axis=-1) + tf.reduce_mean(tf.square(q2 - target), axis=-1)


def awr_weights(advantages: tf.Tensor, beta: float) -> tf.Tensor:
    """exp(beta * A) clipped at 100, without gradient."""
    return tf.stop_gradient(tf.minimum(tf.exp(beta * advantages), MAX_AWR_WEIGHT))


def awr_actor_loss(log_probs: tf.Tensor, weights: tf.Tensor) -> tf.Tensor:
    """Advantage-weighted regression: -mean(weight * log pi(a|s))."""
    return -tf.reduce_mean(weights * log_probs, axis=-1)


def squared_td_error(q: tf.Tensor, target: tf.Tensor) -> tf.Tensor:
    """Mean squared TD error of one Q network against its target (fitted Q evaluation's loss)."""
    return tf.reduce_mean(tf.square(q - target), axis=-1)
