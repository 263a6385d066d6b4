"""The FQL repository's IQL update with image observations, as plain JAX functions of parameters under neutral
names: the reference of `tests/test_reference_update.py`'s pixel test and of the pixel speed comparison.

Written from FQL's code (github.com/seohongpark/fql at 719d044: agents/iql.py, utils/networks.py and
utils/encoders.py's 'impala_small'), not copied: `python -m tools.fql_peer pixels` checks it against FQL's own
agent in FQL's venv. What it computes, as FQL does:

- Three encoders (value, critic, actor) and the target critic's copy, each impala_small: uint8 -> /255, three
  stacks of a 3x3 convolution, a 3x3 max-pool of stride 2 and one residual block, a relu, a dense layer with
  GELU (tanh form).
- V and the two Qs (which share the critic's encoder): GELU MLPs with layer normalisation (epsilon 1e-6) after
  each hidden activation; the policy: a GELU MLP without it, a linear mean, a std fixed at 1.
- One loss, summed, on the parameters before the step: expectile loss of V towards min target Q, TD loss of both
  Qs towards r + discount * mask * V(s'), AWR of the policy with min Q - V (the current critic, not the
  target) and weights exp(alpha * advantage) clipped at 100; one Adam (optax, 3e-4) over all parameters; then
  the target critic moved towards the critic's parameters from before the step (FQL's `target_update` reads the
  agent's old parameters).
- Augmentation (`random_crop`, FQL's utils/datasets.py): each image padded by 3 with its edges and cropped back at
  an offset in [0, 6] per row, the same offset for the observation and the next observation.

Parameters are a flat dict: 'value/encoder/stack0/kernel' (the encoder names of `iql_tf.encoders`),
'value/0/kernel' ... 'value/H/kernel' (H hidden layers, then the head), 'value/norm0/scale' and '/offset';
'critic/encoder/...', 'critic1/...', 'critic2/...', the same under 'target_critic'; 'actor/encoder/...',
'actor/0/kernel' ..., 'actor/mean/kernel'.
"""

import functools
from typing import Dict, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

Params = Dict[str, jnp.ndarray]
STACKS = 3
PADDING = 3
MAX_AWR_WEIGHT = 100.0


def _gelu(x: jnp.ndarray) -> jnp.ndarray:
    return jax.nn.gelu(x, approximate=True)


def _dense(params: Params, name: str, x: jnp.ndarray) -> jnp.ndarray:
    return x @ params[f"{name}/kernel"] + params[f"{name}/bias"]


def _conv(params: Params, name: str, x: jnp.ndarray) -> jnp.ndarray:
    y = jax.lax.conv_general_dilated(x, params[f"{name}/kernel"], (1, 1), "SAME",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return y + params[f"{name}/bias"]


def _layer_norm(params: Params, name: str, x: jnp.ndarray) -> jnp.ndarray:
    mean = x.mean(-1, keepdims=True)
    variance = jnp.square(x - mean).mean(-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(variance + 1e-6) * params[f"{name}/scale"] + params[f"{name}/offset"]


def impala_small(params: Params, name: str, images: jnp.ndarray) -> jnp.ndarray:
    x = images.astype(jnp.float32) / 255.0
    for stack in range(STACKS):
        x = _conv(params, f"{name}/stack{stack}", x)
        x = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, 2, 2, 1), "SAME")
        block = _conv(params, f"{name}/stack{stack}_residual_a", jax.nn.relu(x))
        x = x + _conv(params, f"{name}/stack{stack}_residual_b", jax.nn.relu(block))
    x = jax.nn.relu(x).reshape(x.shape[0], -1)
    return _gelu(_dense(params, f"{name}/features", x))


def _mlp(params: Params, name: str, x: jnp.ndarray, layers: int, layer_norm: bool) -> jnp.ndarray:
    """`layers` hidden GELU layers (each followed by layer normalisation if asked), not the output layer."""
    for layer in range(layers):
        x = _gelu(_dense(params, f"{name}/{layer}", x))
        if layer_norm:
            x = _layer_norm(params, f"{name}/norm{layer}", x)
    return x


def value(params: Params, observations: jnp.ndarray, layers: int) -> jnp.ndarray:
    features = impala_small(params, "value/encoder", observations)
    return _dense(params, f"value/{layers}", _mlp(params, "value", features, layers, True))[:, 0]


def critic(params: Params, name: str, observations: jnp.ndarray, actions: jnp.ndarray, layers: int
           ) -> Tuple[jnp.ndarray, jnp.ndarray]:
    inputs = jnp.concatenate([impala_small(params, f"{name}/encoder", observations), actions], -1)
    return tuple(_dense(params, f"{name}{q}/{layers}", _mlp(params, f"{name}{q}", inputs, layers, True))[:, 0]
                 for q in (1, 2))


def policy_mean(params: Params, observations: jnp.ndarray, layers: int) -> jnp.ndarray:
    features = impala_small(params, "actor/encoder", observations)
    return _dense(params, "actor/mean", _mlp(params, "actor", features, layers, False))


def losses(trained: Params, before: Params, batch: Dict[str, jnp.ndarray], layers: int, expectile: float,
           alpha: float, discount: float) -> Tuple[jnp.ndarray, Dict[str, jnp.ndarray]]:
    """FQL's summed loss of the `trained` parameters; what it does not differentiate is read from `before` (the
    same values: FQL's `network.select(...)` without `params`)."""
    observations, actions = batch["observations"], batch["actions"]
    target_q = jnp.minimum(*critic(before, "target_critic", observations, actions, layers))
    difference = target_q - value(trained, observations, layers)
    value_loss = jnp.mean(jnp.where(difference >= 0, expectile, 1 - expectile) * jnp.square(difference))

    next_v = value(before, batch["next_observations"], layers)
    target = batch["rewards"] + discount * batch["masks"] * next_v
    q1, q2 = critic(trained, "critic", observations, actions, layers)
    critic_loss = jnp.mean(jnp.square(q1 - target) + jnp.square(q2 - target))

    advantage = jnp.minimum(*critic(before, "critic", observations, actions, layers)) - value(before, observations,
                                                                                              layers)
    weights = jnp.minimum(jnp.exp(alpha * advantage), MAX_AWR_WEIGHT)
    means = policy_mean(trained, observations, layers)
    log_probs = jnp.sum(-0.5 * jnp.square(actions - means) - 0.5 * jnp.log(2 * jnp.pi), -1)  # std 1
    actor_loss = -jnp.mean(weights * log_probs)
    total = value_loss + critic_loss + actor_loss
    return total, {"value_loss": value_loss, "critic_loss": critic_loss, "actor_loss": actor_loss}


def random_crop(images: jnp.ndarray, offsets: jnp.ndarray) -> jnp.ndarray:
    """FQL's augmentation of images [B, h, w, c] with `offsets` [B, 2] (row, column in [0, 2 * PADDING])."""

    def crop(image, offset):
        padded = jnp.pad(image, ((PADDING, PADDING), (PADDING, PADDING), (0, 0)), mode="edge")
        return jax.lax.dynamic_slice(padded, (offset[0], offset[1], 0), image.shape)

    return jax.vmap(crop)(images, offsets)


class FqlPixelIQL:
    """One IQL agent as FQL's: parameters (a flat dict, see the module docstring), one Adam over all of them, and
    its jitted update; hidden `layers` of every MLP."""

    def __init__(self, params: Dict[str, np.ndarray], layers: int, expectile: float = 0.9, alpha: float = 1.0,
                 discount: float = 0.99, tau: float = 0.005, learning_rate: float = 3e-4):
        self.params = {name: jnp.asarray(value, jnp.float32) for name, value in params.items()}
        self.optimizer = optax.adam(learning_rate)
        self.optimizer_state = self.optimizer.init(self.params)
        self._update = jax.jit(functools.partial(self._step, layers=layers, expectile=expectile, alpha=alpha,
                                                 discount=discount, tau=tau))
        self.info: Dict[str, jnp.ndarray] = {}

    def _step(self, params, optimizer_state, batch, layers, expectile, alpha, discount, tau):
        gradients, info = jax.grad(losses, has_aux=True)(params, params, batch, layers, expectile, alpha, discount)
        updates, optimizer_state = self.optimizer.update(gradients, optimizer_state, params)
        updated = optax.apply_updates(params, updates)
        critics = [name for name in params if name.startswith("critic")]
        updated = dict(updated, **{f"target_{name}": tau * params[name] + (1 - tau) * params[f"target_{name}"]
                                   for name in critics})
        return updated, optimizer_state, info

    def update(self, batch: Dict[str, np.ndarray]) -> None:
        self.params, self.optimizer_state, self.info = self._update(self.params, self.optimizer_state, batch)

    def block(self) -> None:
        jax.block_until_ready(self.params)

    def weights(self) -> Dict[str, np.ndarray]:
        return {name: np.asarray(value) for name, value in self.params.items()}
