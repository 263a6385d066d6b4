"""The IQL agent: networks, optimisers, target critics, and the compiled train step (SPEC.md section 1)."""

from typing import Dict, Optional, Sequence

import gin
import keras
import tensorflow as tf

from iql_tf import losses
from iql_tf.errors import UserError, is_integer, is_number
from iql_tf.networks import GaussianActor, TwinCritic, ValueNetwork
from iql_tf.replay_buffer import ReplayBuffer

# Metrics of one update, in the order the train step computes them.
METRIC_NAMES = (
    "value_loss",
    "v_mean",
    "actor_loss",
    "advantage_mean",
    "advantage_std",
    "advantage_max",
    "awr_weight_mean",
    "awr_weight_max",
    "awr_weight_clipped_fraction",
    "policy_std_mean",
    "critic_loss",
    "q1_mean",
    "q2_mean",
    "target_mean",
)
LOSS_NAMES = ("value_loss", "actor_loss", "critic_loss")


def _check_hyperparameters(hidden_dims, activation, expectile, beta, discount, target_update_rate, learning_rates,
                           dropout_rate, batch_size) -> None:
    """Raises a UserError naming the first IQLAgent binding that is out of its range."""
    checks = [
        ("hidden_dims", hidden_dims, isinstance(hidden_dims, (tuple, list)) and len(hidden_dims) > 0
         and all(is_integer(units) and units > 0 for units in hidden_dims), "a tuple of positive sizes, e.g. (256, 256)"),
        ("expectile", expectile, is_number(expectile) and 0.0 < expectile < 1.0, "a number in (0, 1)"),
        ("beta", beta, is_number(beta) and beta >= 0.0, "a number >= 0 (0 is behaviour cloning)"),
        ("discount", discount, is_number(discount) and 0.0 <= discount <= 1.0, "a number in [0, 1]"),
        ("target_update_rate", target_update_rate, is_number(target_update_rate) and 0.0 < target_update_rate <= 1.0,
         "a number in (0, 1]"),
        ("learning rates", learning_rates, all(is_number(lr) and lr > 0 for lr in learning_rates), "positive numbers"),
        ("actor_dropout_rate", dropout_rate, dropout_rate is None or is_number(dropout_rate) and 0.0 <= dropout_rate < 1.0,
         "None or a number in [0, 1)"),
        ("batch_size", batch_size, is_integer(batch_size) and batch_size > 0, "a positive integer"),
    ]
    for name, value, ok, expected in checks:
        if not ok:
            raise UserError(f"IQLAgent.{name} = {value!r} must be {expected}; fix it in the gin file or --gin_bindings")
    try:
        keras.activations.get(activation)
    except (ValueError, TypeError) as error:
        raise UserError(f"IQLAgent.activation = {activation!r} is not a Keras activation (e.g. 'relu', 'elu', "
                        "'tanh'); fix it in the gin file or --gin_bindings") from error


def _adam(learning_rate) -> keras.optimizers.Adam:
    # optax's default epsilon, which the reference uses; Keras' default is 1e-7.
    return keras.optimizers.Adam(learning_rate=learning_rate, epsilon=1e-8)


# The trainer passes these; binding them in gin would be silently overridden, so gin refuses them.
@gin.configurable(denylist=["observation_dim", "action_dim", "actor_decay_steps", "seed"])
class IQLAgent(tf.Module):
    """Value, twin critics with a Polyak target, and a Gaussian actor trained by AWR.

    Everything that must survive a restart (weights, optimiser slots, the step, the random
    generator) is reachable from this module, so `tf.train.Checkpoint(agent=agent)` restores
    the exact training state.
    """

    def __init__(
        self,
        observation_dim: int,
        action_dim: int,
        actor_decay_steps: int,
        seed: int = 0,
        hidden_dims: Sequence[int] = (256, 256),
        activation: str = "relu",
        expectile: float = 0.7,
        beta: float = 3.0,
        discount: float = 0.99,
        target_update_rate: float = 0.005,
        value_lr: float = 3e-4,
        critic_lr: float = 3e-4,
        actor_lr: float = 3e-4,
        actor_cosine_decay: bool = True,
        actor_dropout_rate: Optional[float] = None,
        batch_size: int = 256,
        jit_compile: bool = False,
    ):
        """Builds the networks.

        Args:
          observation_dim, action_dim: sizes of the flattened observation and of the action.
          actor_decay_steps: length of the actor's cosine learning-rate decay (the run's max steps).
          seed: seeds the initialisers and the generator that samples batches and dropout masks.
          expectile: tau of the value's expectile regression (0.5 gives one-step SARSA values).
          beta: inverse temperature of AWR; 0 turns policy extraction into behaviour cloning.
          target_update_rate: Polyak rate alpha of the target critics.
          actor_cosine_decay: cosine decay of the actor lr to 0 over actor_decay_steps.
          actor_dropout_rate: dropout after each hidden layer of the actor, in training only.
          jit_compile: compile the train step with XLA (on this project's CPU: faster for 64x64 and
            128x128 networks, slower for 256x256; see README "Figures").
        """
        super().__init__(name="iql_agent")
        _check_hyperparameters(hidden_dims, activation, expectile, beta, discount, target_update_rate,
                               (value_lr, critic_lr, actor_lr), actor_dropout_rate, batch_size)
        self.expectile = float(expectile)
        self.beta = float(beta)
        self.discount = float(discount)
        self.target_update_rate = float(target_update_rate)
        self.batch_size = int(batch_size)

        self.value = ValueNetwork(observation_dim, hidden_dims, activation, seed)
        self.critic = TwinCritic(observation_dim, action_dim, hidden_dims, activation, seed + 1000)
        self.target_critic = TwinCritic(observation_dim, action_dim, hidden_dims, activation, seed + 1000,
                                        name="target_critic")
        self.target_critic.set_weights(self.critic.get_weights())
        self.actor = GaussianActor(observation_dim, action_dim, hidden_dims, activation, seed + 2000,
                                   actor_dropout_rate)

        if actor_cosine_decay:
            actor_lr = keras.optimizers.schedules.CosineDecay(actor_lr, decay_steps=actor_decay_steps)
        self.value_optimizer = _adam(value_lr)
        self.critic_optimizer = _adam(critic_lr)
        self.actor_optimizer = _adam(actor_lr)
        # Built now so that a checkpoint restores their slots instead of deferring.
        self.value_optimizer.build(self.value.trainable_variables)
        self.critic_optimizer.build(self.critic.trainable_variables)
        self.actor_optimizer.build(self.actor.trainable_variables)

        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        self.generator = tf.random.Generator.from_seed(seed)
        self._train = tf.function(self._train_steps, jit_compile=jit_compile)
        # A fixed signature: evaluation batches shrink as episodes end, which must not retrace.
        self.act = tf.function(self.actor, input_signature=[tf.TensorSpec([None, observation_dim], tf.float32)])

    def update(self, batch: Dict[str, tf.Tensor], dropout_seed: tf.Tensor) -> Dict[str, tf.Tensor]:
        """One IQL update in the reference order: value, actor, critics, target critics."""
        observations, actions = batch["observations"], batch["actions"]
        target_q1, target_q2 = self.target_critic(observations, actions)
        target_q = tf.minimum(target_q1, target_q2)

        # 1. Value: expectile regression towards the target critics.
        with tf.GradientTape() as tape:
            v = self.value(observations)
            value_loss = losses.expectile_loss(target_q - v, self.expectile)
        self._apply(self.value_optimizer, tape, value_loss, self.value)

        # 2. Actor: AWR with advantages from the value network after step 1.
        advantages = target_q - self.value(observations)
        weights = losses.awr_weights(advantages, self.beta)
        with tf.GradientTape() as tape:
            log_probs = self.actor.distribution(observations, dropout_seed=dropout_seed).log_prob(actions)
            actor_loss = losses.awr_actor_loss(log_probs, weights)
        self._apply(self.actor_optimizer, tape, actor_loss, self.actor)

        # 3. Critics: TD targets bootstrap from the value network after step 1.
        target = losses.td_target(
            batch["rewards"], batch["masks"], self.value(batch["next_observations"]), self.discount
        )
        with tf.GradientTape() as tape:
            q1, q2 = self.critic(observations, actions)
            critic_loss = losses.critic_loss(q1, q2, target)
        self._apply(self.critic_optimizer, tape, critic_loss, self.critic)

        # 4. Target critics: Polyak averaging.
        for target_variable, variable in zip(self.target_critic.variables, self.critic.variables):
            target_variable.assign(
                (1.0 - self.target_update_rate) * target_variable + self.target_update_rate * variable
            )
        self.step.assign_add(1)

        return {
            "value_loss": value_loss,
            "v_mean": tf.reduce_mean(v),
            "actor_loss": actor_loss,
            "advantage_mean": tf.reduce_mean(advantages),
            "advantage_std": tf.math.reduce_std(advantages),
            "advantage_max": tf.reduce_max(advantages),
            "awr_weight_mean": tf.reduce_mean(weights),
            "awr_weight_max": tf.reduce_max(weights),
            "awr_weight_clipped_fraction": tf.reduce_mean(
                tf.cast(weights >= losses.MAX_AWR_WEIGHT, tf.float32)
            ),
            "policy_std_mean": tf.reduce_mean(self.actor.std()),
            "critic_loss": critic_loss,
            "q1_mean": tf.reduce_mean(q1),
            "q2_mean": tf.reduce_mean(q2),
            "target_mean": tf.reduce_mean(target),
        }

    @staticmethod
    def _apply(optimizer: keras.optimizers.Optimizer, tape: tf.GradientTape, loss: tf.Tensor,
               model: keras.Model) -> None:
        variables = model.trainable_variables
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))

    def _train_steps(self, buffer: ReplayBuffer, num_steps: tf.Tensor) -> Dict[str, tf.Tensor]:
        # K updates in one compiled call; the target update sits inside the loop (SPEC.md 6.4).
        # Metrics are averaged over the K updates; the loop stops at the first non-finite loss so
        # that the caller can name the step where it happened.
        totals = {name: tf.constant(0.0) for name in METRIC_NAMES}
        count = tf.constant(0)
        finite = tf.constant(True)
        for _ in tf.range(num_steps):
            if not finite:
                break
            batch = buffer.sample(self.generator, self.batch_size)
            metrics = self.update(batch, dropout_seed=self.generator.make_seeds(1)[:, 0])
            finite = tf.reduce_all([tf.math.is_finite(metrics[name]) for name in LOSS_NAMES])
            totals = {name: totals[name] + metrics[name] for name in METRIC_NAMES}
            count += 1
        means = {name: total / tf.cast(count, tf.float32) for name, total in totals.items()}
        means["actor_lr"] = tf.convert_to_tensor(self.actor_optimizer.learning_rate)
        return means

    def train(self, buffer: ReplayBuffer, num_steps: int) -> Dict[str, float]:
        """Runs `num_steps` updates on batches sampled from `buffer`; returns their mean metrics."""
        metrics = self._train(buffer, tf.constant(num_steps, tf.int32))
        return {name: float(value) for name, value in metrics.items()}
