"""Tabular V, twin Q and a categorical policy, fitted to the dataset by gradient descent on `iql_tf.losses`.

`fit_values` is IQL's TD stage (Algorithm 1): a value step on the expectile loss of min(Q1, Q2) - V,
then a critic step towards r + gamma * mask * V(s'). With expectile 0.5 V is the mean of Q over the
dataset's actions, i.e. SARSA-style evaluation of the behaviour policy: the one-step baseline.
`extract_policy` is the AWR stage. Both use full-batch Adam over every transition (a few thousand)
with a cosine decay of the learning rate to 0, so that the tables settle at the losses' fixed point
instead of jittering around it by about one learning rate (which would decide near-ties at random).

Deviation from the agent (iql_tf/agent.py): no target critics; the value step reads the current critics, which
is stable here because the tables are updated full-batch (no sampling noise to average out).
"""

import dataclasses

import keras
import numpy as np
import tensorflow as tf

from iql_tf import losses
from tools.toy_maze.maze import NUM_ACTIONS
from tools.toy_maze.rollouts import Transitions


@dataclasses.dataclass(frozen=True)
class TabularValues:
    """V[s] and min(Q1, Q2)[s, a]; cells absent from the dataset keep their initial values."""

    v: np.ndarray
    q: np.ndarray


def _gather_actions(table: tf.Variable, states: tf.Tensor, actions: tf.Tensor) -> tf.Tensor:
    """table[states[i], actions[i]] for each i."""
    return tf.gather_nd(table, tf.stack([states, actions], axis=1))


def _adam(learning_rate: float, steps: int) -> keras.optimizers.Optimizer:
    """Adam whose learning rate decays from `learning_rate` to 0 over `steps` (epsilon 1e-8, as the agent's)."""
    return keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(learning_rate, steps), epsilon=1e-8)


def fit_values(
    data: Transitions,
    num_states: int,
    expectile: float,
    discount: float,
    steps: int,
    learning_rate: float,
    seed: int,
) -> TabularValues:
    """Runs `steps` alternating value and critic updates; the twin critics start from different seeded noise."""
    states, actions, next_states = (tf.constant(x, tf.int32) for x in (data.states, data.actions, data.next_states))
    rewards = tf.constant(data.rewards, tf.float32)
    masks = tf.constant(1.0 - data.terminals, tf.float32)
    init = tf.random.Generator.from_seed(seed)
    value = tf.Variable(tf.zeros([num_states]))
    critics = [tf.Variable(init.normal([num_states, NUM_ACTIONS], stddev=0.01)) for _ in range(2)]
    value_optimizer, critic_optimizer = _adam(learning_rate, steps), _adam(learning_rate, steps)

    @tf.function
    def train() -> None:
        for _ in tf.range(steps):
            q_data = tf.minimum(*(_gather_actions(q, states, actions) for q in critics))
            with tf.GradientTape() as tape:
                loss = losses.expectile_loss(q_data - tf.gather(value, states), expectile)
            value_optimizer.apply_gradients([(tape.gradient(loss, value), value)])
            target = losses.td_target(rewards, masks, tf.gather(value, next_states), discount)
            with tf.GradientTape() as tape:
                loss = losses.critic_loss(*(_gather_actions(q, states, actions) for q in critics), target)
            critic_optimizer.apply_gradients(zip(tape.gradient(loss, critics), critics))

    train()
    return TabularValues(v=value.numpy(), q=tf.minimum(*critics).numpy())


def extract_policy(
    data: Transitions, values: TabularValues, beta: float, steps: int, learning_rate: float
) -> np.ndarray:
    """Fits pi(a|s) = softmax(logits[s]) by AWR and returns its greedy action per state.

    The fixed point is pi(a|s) proportional to the sum of exp(beta * A) over the dataset's (s, a), so
    the greedy action trades the count of an action against its advantage. States absent from the
    dataset (rare with the default horizons) keep uniform logits, whose argmax is action 0 (up).
    """
    states, actions = (tf.constant(x, tf.int32) for x in (data.states, data.actions))
    advantages = values.q[data.states, data.actions] - values.v[data.states]
    weights = losses.awr_weights(tf.constant(advantages, tf.float32), beta)
    logits = tf.Variable(tf.zeros([values.q.shape[0], NUM_ACTIONS]))
    optimizer = _adam(learning_rate, steps)

    @tf.function
    def train() -> None:
        for _ in tf.range(steps):
            with tf.GradientTape() as tape:
                log_probs = _gather_actions(tf.nn.log_softmax(logits), states, actions)
                loss = losses.awr_actor_loss(log_probs, weights)
            optimizer.apply_gradients([(tape.gradient(loss, logits), logits)])

    train()
    return np.argmax(logits.numpy(), axis=1)
