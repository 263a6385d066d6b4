"""A JAX / Flax (linen) / optax reference of ONE IQL gradient update, for the speed comparison only.

It follows the structure of the authors' code (github.com/ikostrikov/implicit_q_learning): linen
modules for V, the twin critic and the Gaussian actor; a TrainState pytree per network; and one
jax.jit-compiled ``update(state, batch) -> (state, info)`` doing, in order, the expectile value
step, the AWR actor step, the critic step and the Polyak target update. Batches are drawn on the
host with numpy (as their ``Dataset.sample`` does) for ``single_update``; ``fused_updates`` runs K
updates in one jitted ``lax.scan`` with the dataset on device and in-graph sampling.

It is written to match the semantics of iql_tf's TF update so that the benchmark compares like
with like, and `tests/test_reference_update.py` checks one update of iql_tf against it from identical
weights (`set_weights`); it is not used for training and is no part of iql_tf's API.
"""

import dataclasses
from functools import partial
from typing import Any, Dict, Sequence, Tuple

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training.train_state import TrainState

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0
MAX_AWR_WEIGHT = 100.0
BATCH_KEYS = ("observations", "actions", "rewards", "masks", "next_observations")

Batch = Dict[str, jnp.ndarray]


def default_init() -> Any:
    return nn.initializers.orthogonal(jnp.sqrt(2.0))


class MLP(nn.Module):
    dims: Sequence[int]
    activate_final: bool = False

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        for i, size in enumerate(self.dims):
            x = nn.Dense(size, kernel_init=default_init())(x)  # biases: flax's default zeros
            if i + 1 < len(self.dims) or self.activate_final:
                x = nn.relu(x)
        return x


class ValueCritic(nn.Module):
    hidden_dims: Sequence[int]

    @nn.compact
    def __call__(self, observations: jnp.ndarray) -> jnp.ndarray:
        return jnp.squeeze(MLP((*self.hidden_dims, 1))(observations), -1)


class Critic(nn.Module):
    hidden_dims: Sequence[int]

    @nn.compact
    def __call__(self, observations: jnp.ndarray, actions: jnp.ndarray) -> jnp.ndarray:
        inputs = jnp.concatenate([observations, actions], -1)
        return jnp.squeeze(MLP((*self.hidden_dims, 1))(inputs), -1)


class DoubleCritic(nn.Module):
    hidden_dims: Sequence[int]

    @nn.compact
    def __call__(self, observations: jnp.ndarray, actions: jnp.ndarray) -> Tuple[jnp.ndarray, jnp.ndarray]:
        q1 = Critic(self.hidden_dims)(observations, actions)
        q2 = Critic(self.hidden_dims)(observations, actions)
        return q1, q2


class GaussianPolicy(nn.Module):
    """Returns (mean, log_std) of N(tanh(Dense(h)), exp(log_std)) over raw actions (no squashing)."""

    hidden_dims: Sequence[int]
    action_dim: int

    @nn.compact
    def __call__(self, observations: jnp.ndarray) -> Tuple[jnp.ndarray, jnp.ndarray]:
        h = MLP(self.hidden_dims, activate_final=True)(observations)
        means = nn.tanh(nn.Dense(self.action_dim, kernel_init=default_init())(h))
        log_stds = self.param("log_stds", nn.initializers.zeros, (self.action_dim,))
        return means, jnp.clip(log_stds, LOG_STD_MIN, LOG_STD_MAX)


def gaussian_log_prob(actions: jnp.ndarray, means: jnp.ndarray, log_stds: jnp.ndarray) -> jnp.ndarray:
    """log N(a; mean, diag(exp(log_std))^2), summed over action dimensions."""
    z = (actions - means) * jnp.exp(-log_stds)
    return jnp.sum(-0.5 * jnp.square(z) - log_stds - 0.5 * jnp.log(2.0 * jnp.pi), -1)


@flax.struct.dataclass
class IQLState:
    value: TrainState
    actor: TrainState
    critic: TrainState
    target_critic_params: Any


@dataclasses.dataclass(frozen=True)
class Hyper:
    """Hyperparameters, closed over by the jitted update as Python constants."""

    expectile: float = 0.7
    beta: float = 3.0
    discount: float = 0.99
    polyak: float = 0.005


def update(state: IQLState, batch: Batch, hp: Hyper) -> Tuple[IQLState, Dict[str, jnp.ndarray]]:
    """One IQL update: value, actor, critics, targets (in that order, as the authors' learner)."""
    obs, act = batch["observations"], batch["actions"]
    # Target critics for the value and actor steps: never differentiated.
    tq1, tq2 = state.critic.apply_fn({"params": state.target_critic_params}, obs, act)
    target_q = jnp.minimum(tq1, tq2)

    # 1. Value: expectile regression of V(s) towards min target Q.
    def value_loss_fn(params: Any) -> jnp.ndarray:
        u = target_q - state.value.apply_fn({"params": params}, obs)
        weight = jnp.where(u > 0, hp.expectile, 1.0 - hp.expectile)
        return jnp.mean(weight * jnp.square(u))

    value_loss, grads = jax.value_and_grad(value_loss_fn)(state.value.params)
    value = state.value.apply_gradients(grads=grads)

    # 2. Actor: AWR with advantages from the UPDATED value network.
    v_new = value.apply_fn({"params": value.params}, obs)
    weights = jax.lax.stop_gradient(jnp.minimum(jnp.exp(hp.beta * (target_q - v_new)), MAX_AWR_WEIGHT))

    def actor_loss_fn(params: Any) -> jnp.ndarray:
        means, log_stds = state.actor.apply_fn({"params": params}, obs)
        return -jnp.mean(weights * gaussian_log_prob(act, means, log_stds))

    actor_loss, grads = jax.value_and_grad(actor_loss_fn)(state.actor.params)
    actor = state.actor.apply_gradients(grads=grads)

    # 3. Critics: TD regression towards r + gamma * mask * V_new(s').
    next_v = value.apply_fn({"params": value.params}, batch["next_observations"])
    y = jax.lax.stop_gradient(batch["rewards"] + hp.discount * batch["masks"] * next_v)

    def critic_loss_fn(params: Any) -> jnp.ndarray:
        q1, q2 = state.critic.apply_fn({"params": params}, obs, act)
        return jnp.mean(jnp.square(q1 - y)) + jnp.mean(jnp.square(q2 - y))

    critic_loss, grads = jax.value_and_grad(critic_loss_fn)(state.critic.params)
    critic = state.critic.apply_gradients(grads=grads)

    # 4. Polyak average of the target critics.
    target = jax.tree_util.tree_map(
        lambda p, t: hp.polyak * p + (1.0 - hp.polyak) * t, critic.params, state.target_critic_params
    )
    info = {"value_loss": value_loss, "actor_loss": actor_loss, "critic_loss": critic_loss}
    return IQLState(value=value, actor=actor, critic=critic, target_critic_params=target), info


def fused(
    state: IQLState, data: Batch, key: jnp.ndarray, hp: Hyper, num_updates: int, batch_size: int
) -> Tuple[IQLState, Dict[str, jnp.ndarray]]:
    """num_updates updates in one lax.scan; each draws its batch in-graph from the on-device data."""
    size = data["rewards"].shape[0]

    def step(carry: Tuple[IQLState, Dict[str, jnp.ndarray]], step_key: jnp.ndarray) -> Tuple[Any, None]:
        state, _ = carry
        idx = jax.random.randint(step_key, (batch_size,), 0, size)
        batch = {k: v[idx] for k, v in data.items()}
        return update(state, batch, hp), None

    zero = jnp.zeros((), jnp.float32)
    init_info = {"value_loss": zero, "actor_loss": zero, "critic_loss": zero}
    # The carry holds the last update's losses, so only those (not K of them) leave the device.
    (state, info), _ = jax.lax.scan(step, (state, init_info), jax.random.split(key, num_updates))
    return state, info


def _layer_paths(hidden_dims: Sequence[int]) -> Dict[str, Tuple[str, Tuple[str, ...]]]:
    """Neutral weight names ("value/0/kernel", kernels [in, out]) -> (network, flax param path)."""
    n = len(hidden_dims) + 1
    paths: Dict[str, Tuple[str, Tuple[str, ...]]] = {}
    for leaf in ("kernel", "bias"):
        for i in range(n):
            paths[f"value/{i}/{leaf}"] = ("value", ("MLP_0", f"Dense_{i}", leaf))
            for c in (1, 2):
                flax_path = (f"Critic_{c - 1}", "MLP_0", f"Dense_{i}", leaf)
                paths[f"critic{c}/{i}/{leaf}"] = ("critic", flax_path)
                paths[f"target_critic{c}/{i}/{leaf}"] = ("target_critic", flax_path)
        for i in range(n - 1):
            paths[f"actor/{i}/{leaf}"] = ("actor", ("MLP_0", f"Dense_{i}", leaf))
        paths[f"actor/{n - 1}/{leaf}"] = ("actor", ("Dense_0", leaf))
    paths["actor/log_std"] = ("actor", ("log_stds",))
    return paths


class JaxIQL:
    """The benchmark's driver around the jitted update (see the module docstring)."""

    def __init__(
        self,
        data: Dict[str, np.ndarray],
        observation_dim: int,
        action_dim: int,
        hidden_dims: Sequence[int] = (256, 256),
        batch_size: int = 256,
        seed: int = 0,
        max_steps: int = 1_000_000,
        expectile: float = 0.7,
        beta: float = 3.0,
    ):
        self.hidden_dims = tuple(hidden_dims)
        self.batch_size = batch_size
        self._host_data = {k: np.asarray(data[k], np.float32) for k in BATCH_KEYS}
        self._size = self._host_data["rewards"].shape[0]
        self._np_rng = np.random.RandomState(seed)
        self._device_data = jax.device_put(self._host_data)  # for the fused, in-graph sampling

        key = jax.random.PRNGKey(seed)
        key, k_actor, k_critic, k_value = jax.random.split(key, 4)
        self._key = key
        obs = jnp.zeros((1, observation_dim), jnp.float32)
        act = jnp.zeros((1, action_dim), jnp.float32)

        actor_def = GaussianPolicy(self.hidden_dims, action_dim)
        critic_def = DoubleCritic(self.hidden_dims)
        value_def = ValueCritic(self.hidden_dims)
        actor_tx = optax.adam(optax.cosine_decay_schedule(3e-4, max_steps), eps=1e-8)
        critic_params = critic_def.init(k_critic, obs, act)["params"]
        self.state = IQLState(
            actor=TrainState.create(
                apply_fn=actor_def.apply, params=actor_def.init(k_actor, obs)["params"], tx=actor_tx
            ),
            critic=TrainState.create(apply_fn=critic_def.apply, params=critic_params, tx=optax.adam(3e-4, eps=1e-8)),
            value=TrainState.create(
                apply_fn=value_def.apply, params=value_def.init(k_value, obs)["params"], tx=optax.adam(3e-4, eps=1e-8)
            ),
            target_critic_params=critic_params,  # immutable arrays: sharing them is a copy
        )
        hp = Hyper(expectile=expectile, beta=beta)
        # jit once; num_updates is static, so fused compiles once per distinct value.
        self._update = jax.jit(partial(update, hp=hp))
        self._fused = jax.jit(partial(fused, hp=hp, batch_size=batch_size), static_argnames="num_updates")
        self._info: Dict[str, jnp.ndarray] = {}

    def _sample(self) -> Dict[str, np.ndarray]:
        idx = self._np_rng.randint(self._size, size=self.batch_size)
        return {k: v[idx] for k, v in self._host_data.items()}

    def single_update(self) -> None:
        self.state, self._info = self._update(self.state, self._sample())

    def update_on(self, batch: Dict[str, np.ndarray]) -> None:
        """One update on a given batch (for equality checks)."""
        batch = {k: np.asarray(batch[k], np.float32) for k in BATCH_KEYS}
        self.state, self._info = self._update(self.state, batch)

    def fused_updates(self, num_updates: int) -> None:
        self._key, key = jax.random.split(self._key)
        self.state, self._info = self._fused(self.state, self._device_data, key, num_updates=num_updates)

    def block(self) -> None:
        jax.block_until_ready(self.state)

    def losses(self) -> Dict[str, float]:
        return {k: float(v) for k, v in self._info.items()}

    def _trees(self) -> Dict[str, Any]:
        return {
            "value": self.state.value.params,
            "actor": self.state.actor.params,
            "critic": self.state.critic.params,
            "target_critic": self.state.target_critic_params,
        }

    def get_weights(self) -> Dict[str, np.ndarray]:
        """All parameters under neutral names, e.g. "critic1/0/kernel" ([in, out]), "actor/log_std"."""
        flat = {net: flax.traverse_util.flatten_dict(tree) for net, tree in self._trees().items()}
        return {name: np.array(flat[net][path]) for name, (net, path) in _layer_paths(self.hidden_dims).items()}

    def set_weights(self, weights: Dict[str, np.ndarray]) -> None:
        """Replaces the parameters (not the optimiser state); meant for before the first update."""
        flat = {net: dict(flax.traverse_util.flatten_dict(tree)) for net, tree in self._trees().items()}
        for name, (net, path) in _layer_paths(self.hidden_dims).items():
            if name in weights:
                old = flat[net][path]
                flat[net][path] = jnp.asarray(np.asarray(weights[name], np.float32).reshape(old.shape))
        trees = {net: flax.traverse_util.unflatten_dict(f) for net, f in flat.items()}
        self.state = self.state.replace(
            value=self.state.value.replace(params=trees["value"]),
            actor=self.state.actor.replace(params=trees["actor"]),
            critic=self.state.critic.replace(params=trees["critic"]),
            target_critic_params=trees["target_critic"],
        )
