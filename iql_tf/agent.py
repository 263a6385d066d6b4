"""The IQL agent: networks, optimisers, target critics, and the compiled updates.

The agent is an ensemble of independently seeded members (one per seed of the run): own initialisation,
own batches and dropout masks (each member samples with its own random generator), own target critics.
The members' losses are summed, so each member's gradient, and with Adam (elementwise) each member's step,
is exactly what it would be trained alone.
"""

from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import keras
import numpy as np
import tensorflow as tf

from iql_tf import augmentation, losses
from iql_tf.data.parts import Part
from iql_tf.encoders import ImageEncoder, PartsEncoder
from iql_tf.errors import UserError
from iql_tf.networks import Encoder, GaussianActor, TwinCritic, ValueNetwork, activation_function
from iql_tf.replay_buffer import Batches, ReplayBuffer
from iql_tf.seeding import derived_seed
from iql_tf.settings import AgentSettings

# Metrics of one update, by name; each is one value per member.
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
    "actor_lr",
)
LOSS_NAMES = ("value_loss", "actor_loss", "critic_loss")
_LAST_VALUE = ("actor_lr",)  # reported as reached after K fused updates, not as their mean


def batch_generator(seed: int) -> tf.random.Generator:
    """The generator of a member's batches (and dropout and exploration seeds), independent across seeds."""
    # Not Generator.from_seed: its seed s + 1 is seed s one Philox counter step on, so consecutive seeds drew the
    # same batches shifted by two. A key mixed from the seed gives each its own stream.
    return tf.random.Generator.from_key_counter(key=derived_seed(seed, bits=64), counter=[0, 0], alg="philox")


def _adam(learning_rate) -> keras.optimizers.Adam:
    # optax's default epsilon, which the reference uses; Keras' default is 1e-7.
    return keras.optimizers.Adam(learning_rate=learning_rate, epsilon=1e-8)


class IQLAgent(tf.Module):
    """Value, twin critics with a Polyak target, and a Gaussian actor trained by AWR, per member.

    Everything that must survive a restart (weights, optimiser slots, the step, the random generators) is
    reachable from this module, so `tf.train.Checkpoint(agent=agent)` restores the exact training state.
    `step` counts the gradient updates made.
    """

    def __init__(self, observation_dim: int, action_dim: int, settings: AgentSettings, actor_decay_steps: int,
                 seeds: Sequence[int] = (0,), image_shape: Optional[Sequence[int]] = None,
                 parts: Optional[Sequence[Part]] = None):
        """Builds the networks.

        Args:
          observation_dim, action_dim: sizes of the flattened observation and of the action.
          image_shape: [height, width, channels] of image observations (uint8, encoded by `settings.encoder`);
            None for vectors.
          parts: the parts of observations of parts as the networks take them (images stacked), each image part
            encoded by an encoder of `settings.encoder`; None for one array.
          settings: the networks', losses' and optimisers' settings (`IQLAgent.*` in gin).
          actor_decay_steps: length of the actor's cosine learning-rate decay (the run's offline updates).
          seeds: one per member; seed the initialisers and the generator that samples the member's batches,
            dropout masks and exploration.
        """
        super().__init__(name="iql_agent")
        try:
            activation_function(settings.activation)
        except (ValueError, TypeError) as error:
            raise UserError(f"IQLAgent.activation = {settings.activation!r} is not a Keras activation (e.g. 'relu', "
                            "'elu', 'tanh') or 'gelu_tanh'; fix it in the gin file or --gin_bindings") from error
        self.settings, self.actor_decay_steps = settings, int(actor_decay_steps)
        self.observation_dim, self.action_dim = observation_dim, action_dim
        self.seeds = tuple(int(seed) for seed in seeds)
        self.members = len(self.seeds)
        hidden_dims, activation = settings.hidden_dims, settings.activation

        self.image_shape = tuple(image_shape) if image_shape is not None else None
        self.parts = list(parts) if parts else None
        self.takes_images = bool(self.image_shape or self.parts)

        def encoder(name: str) -> Optional[Encoder]:  # each network its own, as the FQL repository's
            if self.parts:
                return PartsEncoder(settings.encoder, self.parts, self.seeds, name)
            return ImageEncoder(settings.encoder, image_shape, self.seeds, name) if image_shape else None

        critic_options = dict(layer_norm=settings.critic_layer_norm, kernel_init=settings.kernel_init)
        critic_encoder = encoder("critic_encoder")
        shared = settings.shared_encoder and critic_encoder is not None  # (the critics' for all three)
        self.value = ValueNetwork(observation_dim, hidden_dims, activation, self.seeds,
                                  encoder=critic_encoder if shared else encoder("value_encoder"),
                                  encoder_trains=not shared, **critic_options)
        self.critic = TwinCritic(observation_dim, action_dim, hidden_dims, activation, self.seeds,
                                 encoder=critic_encoder, **critic_options)
        self.target_critic = TwinCritic(observation_dim, action_dim, hidden_dims, activation, self.seeds,
                                        name="target_critic", encoder=encoder("target_critic_encoder"),
                                        **critic_options)
        self.target_critic.set_weights(self.critic.get_weights())
        self.actor = GaussianActor(observation_dim, action_dim, hidden_dims, activation,
                                   self.seeds, settings.actor_dropout_rate,
                                   constant_std=settings.constant_std, tanh_mean=settings.tanh_mean,
                                   kernel_init=settings.kernel_init,
                                   encoder=critic_encoder if shared else encoder("actor_encoder"),
                                   encoder_trains=not shared)

        actor_lr = settings.actor_lr
        if settings.actor_cosine_decay:
            actor_lr = keras.optimizers.schedules.CosineDecay(actor_lr, decay_steps=actor_decay_steps)
        self.value_optimizer = _adam(settings.value_lr)
        self.critic_optimizer = _adam(settings.critic_lr)
        self.actor_optimizer = _adam(actor_lr)
        # Built now so that a checkpoint restores their slots instead of deferring.
        self.value_optimizer.build(_trained(self.value))
        self.critic_optimizer.build(_trained(self.critic))
        self.actor_optimizer.build(_trained(self.actor))

        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        self.generators = [batch_generator(seed) for seed in self.seeds]
        members_spec = self.observation_spec([self.members, None])
        # Fixed signatures: evaluation batches shrink as episodes end, which must not retrace.
        self.act = tf.function(self.actor, input_signature=[members_spec])
        self.explore = tf.function(self._explore, input_signature=[members_spec, tf.TensorSpec([], tf.float32)])
        self.jit_compile: Optional[bool] = None
        if settings.jit_compile is not None:
            self.compile(settings.jit_compile)

    def observation_spec(self, leading: Sequence[Optional[int]]) -> Any:
        """What the networks take as observations with the `leading` axes: a TensorSpec ([observation_dim] float32,
        or uint8 images), or one per part."""
        if self.parts:
            return {part.name: tf.TensorSpec([*leading, *part.shape], part.dtype) for part in self.parts}
        if self.image_shape:
            return tf.TensorSpec([*leading, *self.image_shape], tf.uint8)
        return tf.TensorSpec([*leading, self.observation_dim], tf.float32)

    @property
    def hyperparameters(self) -> Dict[str, Any]:
        """The constructor's settings (what decides the training, besides the seeds), JSON-ready."""
        return self.settings.hyperparameters(self.actor_decay_steps)

    def compile(self, jit_compile: bool) -> None:
        """Chooses how the updates are compiled: with XLA or with TensorFlow's own kernels."""
        self.jit_compile = bool(jit_compile)
        self._compiled_updates = tf.function(self._updates, jit_compile=self.jit_compile)
        self._compiled_update = tf.function(self._sampled_update, jit_compile=self.jit_compile)

    def _check_ready(self, batches: Batches) -> None:
        if self.jit_compile is None:
            raise RuntimeError("IQLAgent.compile(jit_compile) must be called before the first update")
        if batches.batch_size != self.settings.batch_size:
            raise ValueError(f"batches of {batches.batch_size} for an agent of IQLAgent.batch_size "
                             f"{self.settings.batch_size}")

    def update(self, batch: Dict[str, tf.Tensor], dropout_seeds: tf.Tensor) -> tf.Tensor:
        """One IQL update of every member: value, actor, critics, target critics, in `settings.update_order`.

        'sequential' (the IQL reference's): the actor's advantages come from the target critics and the value
        network after its step, and the TD targets from that value network too. 'joint' (OGBench's IQL
        baselines, one summed loss differentiated once): every term sees the parameters from before the step:
        the actor's advantages come from the current critics and the old value network, the TD targets from the
        old value network, and the Polyak step starts from the old critics.
        `batch` holds [members, B, ...] tensors; returns the metrics by name (METRIC_NAMES), each [members].
        """
        observations, actions = batch["observations"], batch["actions"]
        target_q1, target_q2 = self.target_critic(observations, actions)
        target_q = tf.minimum(target_q1, target_q2)
        joint = self.settings.update_order == "joint"
        if joint:
            current_q1, current_q2 = self.critic(observations, actions)
            advantages = tf.minimum(current_q1, current_q2) - self.value(observations)
            weights = losses.awr_weights(advantages, self.settings.beta)
            target = self._td_target(batch)
            polyak_sources = [tf.identity(variable) for variable in self.critic.variables]

        # 1. Value: expectile regression towards the target critics.
        with tf.GradientTape() as tape:
            v = self.value(observations)
            value_loss = losses.expectile_loss(target_q - v, self.settings.expectile)
            total = tf.reduce_sum(value_loss)  # the sum over members: each member's gradient is its own loss's
        self._apply(self.value_optimizer, tape, total, self.value)

        # 2. Actor: AWR (sequential: with advantages from the value network after step 1).
        if not joint:
            advantages = target_q - self.value(observations)
            weights = losses.awr_weights(advantages, self.settings.beta)
        with tf.GradientTape() as tape:
            log_probs = self.actor.distribution(observations, dropout_seeds=dropout_seeds).log_prob(actions)
            actor_loss = losses.awr_actor_loss(log_probs, weights)
            total = tf.reduce_sum(actor_loss)
        self._apply(self.actor_optimizer, tape, total, self.actor)

        # 3. Critics: TD targets (sequential: bootstrapping from the value network after step 1).
        if not joint:
            target = self._td_target(batch)
        with tf.GradientTape() as tape:
            q1, q2 = self.critic(observations, actions)
            critic_loss = losses.critic_loss(q1, q2, target)
            total = tf.reduce_sum(critic_loss)
        self._apply(self.critic_optimizer, tape, total, self.critic)

        # 4. Target critics: Polyak averaging (sequential: towards the critics after step 3).
        if not joint:
            polyak_sources = self.critic.variables
        for target_variable, variable in zip(self.target_critic.variables, polyak_sources):
            target_variable.assign(
                (1.0 - self.settings.target_update_rate) * target_variable + self.settings.target_update_rate * variable
            )
        self.step.assign_add(1)

        per_member = lambda x: tf.reduce_mean(x, axis=list(range(1, x.shape.rank)))  # noqa: E731
        return dict(
            value_loss=value_loss,
            v_mean=per_member(v),
            actor_loss=actor_loss,
            advantage_mean=per_member(advantages),
            advantage_std=tf.math.reduce_std(advantages, axis=-1),
            advantage_max=tf.reduce_max(advantages, axis=-1),
            awr_weight_mean=per_member(weights),
            awr_weight_max=tf.reduce_max(weights, axis=-1),
            awr_weight_clipped_fraction=per_member(tf.cast(weights >= losses.MAX_AWR_WEIGHT, tf.float32)),
            policy_std_mean=per_member(self.actor.std()),
            critic_loss=critic_loss,
            q1_mean=per_member(q1),
            q2_mean=per_member(q2),
            target_mean=per_member(target),
            actor_lr=tf.fill([self.members], tf.cast(self.actor_optimizer.learning_rate, tf.float32)),
        )

    def held_out_metrics(self, transitions: Dict[str, tf.Tensor], chunk: int = 65536) -> Dict[str, np.ndarray]:
        """The losses and value statistics of every member on held-out transitions ([N, ...] each, prepared as
        the training batches, with `terminals`), without updating anything: each a [members] mean over N."""
        names = ("critic_loss", "value_loss", "q_mean", "v_mean", "target_mean", "advantage_mean")
        if self.takes_images:  # three encoders' activations of a chunk at once: 64x64 frames in thousands
            chunk = min(chunk, 1024)
        totals = {name: np.zeros(self.members) for name in names}
        size = int(transitions["rewards"].shape[0])
        for start in range(0, size, chunk):
            part = {key: tf.nest.map_structure(lambda values: values[start:start + chunk], transitions[key]) for key
                    in ("observations", "actions", "rewards", "next_observations", "terminals")}
            batch = tf.nest.map_structure(lambda value: tf.broadcast_to(value, [self.members, *value.shape]), part)
            batch["masks"] = 1.0 - batch.pop("terminals")
            q1, q2 = self.critic(batch["observations"], batch["actions"])
            target_q = tf.minimum(*self.target_critic(batch["observations"], batch["actions"]))
            v = self.value(batch["observations"])
            target = self._td_target(batch)
            per_member = {"critic_loss": losses.critic_loss(q1, q2, target),
                          "value_loss": losses.expectile_loss(target_q - v, self.settings.expectile),
                          "q_mean": tf.reduce_mean(tf.minimum(q1, q2), axis=-1), "v_mean": tf.reduce_mean(v, axis=-1),
                          "target_mean": tf.reduce_mean(target, axis=-1),
                          "advantage_mean": tf.reduce_mean(target_q - v, axis=-1)}
            rows = int(part["rewards"].shape[0])
            for name in names:
                totals[name] += per_member[name].numpy() * rows
        return {name: total / size for name, total in totals.items()}

    def _td_target(self, batch: Dict[str, tf.Tensor]) -> tf.Tensor:
        """r + discount * mask * V(s'), with the value network as it is now."""
        return losses.td_target(batch["rewards"], batch["masks"], self.value(batch["next_observations"]),
                                self.settings.discount)

    @staticmethod
    def _apply(optimizer: keras.optimizers.Optimizer, tape: tf.GradientTape, loss: tf.Tensor,
               model: keras.Model) -> None:
        variables = _trained(model)
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))

    def _sampled_update(self, batches: Batches) -> Dict[str, tf.Tensor]:
        batch = batches.sample(self.generators)
        dropout_seeds = tf.stack([generator.make_seeds(1)[:, 0] for generator in self.generators])
        if self.takes_images and self.settings.augmentation_probability > 0:
            batch = augmentation.shifted(batch, self.generators, self.settings.augmentation_probability)
        return self.update(batch, dropout_seeds)

    def _updates(self, batches: Batches, num_updates: tf.Tensor) -> Dict[str, tf.Tensor]:
        # K updates in one compiled call; the target update sits inside the loop (JAX-CORL #73: outside it,
        # fused updates train against a stale target). Metrics are averaged over the K updates; the loop stops
        # at the first non-finite loss so that the caller can name the step where it happened.
        totals = {name: tf.zeros([self.members]) for name in METRIC_NAMES}
        metrics = dict(totals)
        count = tf.constant(0.0)
        finite = tf.constant(True)
        for _ in tf.range(num_updates):
            if not finite:
                break
            metrics = self._sampled_update(batches)
            finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(metrics[name])) for name in LOSS_NAMES])
            totals = {name: totals[name] + metrics[name] for name in METRIC_NAMES}
            count += 1.0
        return {name: metrics[name] if name in _LAST_VALUE else totals[name] / count for name in METRIC_NAMES}

    def run_updates(self, batches: Batches, num_updates: int) -> Dict[str, np.ndarray]:
        """Runs `num_updates` updates on batches drawn from `batches` (the replay buffer, or a stream); returns
        their mean metrics, one value per member (actor_lr: the last). Compiled calls go over as many batches
        as `batches` has available (a buffer: all at once; a stream: what its current group holds, refilled in
        between). Stops early (see `step`) at the first non-finite loss."""
        self._check_ready(batches)
        done, calls = 0, []
        while done < num_updates:
            count = min(num_updates - done, batches.available())
            before = int(self.step)
            if num_updates == 1:
                metrics = self._compiled_update(batches)
            else:
                metrics = self._compiled_updates(batches, tf.constant(count, tf.int32))
            metrics = {name: value.numpy() for name, value in metrics.items()}
            made = int(self.step) - before
            calls.append((metrics, made))
            done += made
            if made < count or not all(np.all(np.isfinite(metrics[name])) for name in LOSS_NAMES):
                break  # a non-finite loss stopped the call, or ended it
        if len(calls) == 1:
            return calls[0][0]
        return {name: calls[-1][0][name] if name in _LAST_VALUE
                else sum(metrics[name] * made for metrics, made in calls) / max(done, 1) for name in METRIC_NAMES}

    def online_update_fn(self, buffer: ReplayBuffer) -> Callable[[np.ndarray, np.ndarray, tf.Tensor],
                                                                 Tuple[Dict[str, np.ndarray], np.ndarray]]:
        """Online fine-tuning's update bound to `buffer`: `fn(row, next_observations, noise_std)` appends one
        transition (`row`: packed by `buffer.pack`), makes one update, then samples the exploration actions for
        `next_observations` ([members, 1, obs]) with the updated policy, as `explore`; returns the update's
        metrics and those actions. One call with a fixed signature and the buffer bound, not passed: per call
        overhead, not arithmetic, is what one update per environment step pays for."""
        self._check_ready(buffer)

        # Never XLA as a whole: XLA would copy the buffer to write one row (the update inside may be XLA).
        @tf.function(input_signature=[*buffer.add.input_signature,
                                      tf.TensorSpec([self.members, 1, self.observation_dim], tf.float32),
                                      tf.TensorSpec([], tf.float32)])
        def append_update_explore(row, next_observations, noise_std):
            buffer.add(row)
            metrics = self._compiled_update(buffer)
            return metrics, self._explore(next_observations, noise_std)

        def update_fn(row: np.ndarray, next_observations: np.ndarray, noise_std: tf.Tensor):
            metrics, actions = append_update_explore(row, next_observations, noise_std)
            return {name: value.numpy() for name, value in metrics.items()}, actions.numpy()

        return update_fn

    def _explore(self, observations: tf.Tensor, noise_std: tf.Tensor) -> tf.Tensor:
        """Actions sampled from each member's policy (temperature 1) plus Gaussian exploration noise of std
        `noise_std`, clipped to [-1, 1]; drawn with the members' own generators, so a resumed run draws alike."""
        mean = self.actor(observations)
        shape = tf.shape(mean)[1:]
        policy_noise = tf.stack([generator.normal(shape) for generator in self.generators])
        extra_noise = tf.stack([generator.normal(shape) for generator in self.generators])
        return tf.clip_by_value(mean + self.actor.std() * policy_noise + noise_std * extra_noise, -1.0, 1.0)

    def weights_finite(self) -> Dict[str, bool]:
        """Whether each network's weights are all finite (checked before saving, evaluating, exporting)."""
        groups = {"value": self.value, "actor": self.actor, "critic": self.critic, "target_critic": self.target_critic}
        return {name: all(bool(tf.reduce_all(tf.math.is_finite(v))) for v in model.variables)
                for name, model in groups.items()}

    def member_weights(self, member: int) -> Dict[str, np.ndarray]:
        """The actor of one member as plain arrays (kernels [in, out], biases [out], log_std [act], and its image
        encoder's parameters as encoder/NAME, or encoder/PART/NAME), for export."""
        layers = list(self.actor.trunk.layers) + [self.actor.mean_head]
        weights = {}
        for i, layer in enumerate(layers):
            weights[f"kernel_{i}"], weights[f"bias_{i}"] = layer.member(member)
        weights["log_std"] = self.actor.log_std[member, 0].numpy()
        if self.actor.encoder is not None:
            weights.update({f"encoder/{key}": value for key, value in self.actor.encoder.member_arrays(member).items()})
        return weights


def _trained(model: keras.Model) -> List[tf.Variable]:
    """The variables a network's own loss trains: all but those of an encoder another network trains
    (`IQLAgent.shared_encoder`)."""
    if getattr(model, "encoder_trains", True):
        return model.trainable_variables
    shared = {id(variable) for variable in model.encoder.trainable_variables}
    return [variable for variable in model.trainable_variables if id(variable) not in shared]
