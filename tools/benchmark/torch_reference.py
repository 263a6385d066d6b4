"""An eager PyTorch reference of ONE IQL gradient update, for the speed comparison only.

It is written in the style of CORL's single-file IQL (corl-team/CORL, algorithms/offline/iql.py):
nn.Sequential MLPs, a TwinQ module with a deep-copied target, a Gaussian policy with a
state-independent log_std, one Adam per network (CosineAnnealingLR on the actor's), batches drawn
with torch.randint from tensors held by a buffer, and an eager update.

Its semantics follow iql_tf's TF update rather than CORL's where they differ, so the benchmark
compares like with like: the update order is value, actor, critics, targets; the advantages and
the TD target use V AFTER its step; the critic loss is the SUM of the two MSEs; every Linear is
orthogonal(gain sqrt(2)) with zero biases. It is not used for training and is no part of
iql_tf's API.
"""

import copy
import math
import sys
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

# torch's default (CUDA) build imports triton, the GPU kernel compiler, when an optimiser is built; in a process
# that has loaded TensorFlow that import crashes (segmentation fault). On the CPU nothing needs triton.
sys.modules.setdefault("triton", None)
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.distributions import Normal  # noqa: E402
from torch.optim.lr_scheduler import CosineAnnealingLR  # noqa: E402

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0
MAX_AWR_WEIGHT = 100.0
BATCH_KEYS = ("observations", "actions", "rewards", "masks", "next_observations")

TensorBatch = Dict[str, torch.Tensor]


def mlp(dims: Sequence[int], output_activation: Optional[nn.Module] = None) -> nn.Sequential:
    """Linear layers of sizes dims[0] -> ... -> dims[-1], ReLU between them."""
    layers: List[nn.Module] = []
    for i in range(len(dims) - 1):
        linear = nn.Linear(dims[i], dims[i + 1])
        nn.init.orthogonal_(linear.weight, gain=math.sqrt(2.0))
        nn.init.zeros_(linear.bias)
        layers.append(linear)
        if i + 2 < len(dims):
            layers.append(nn.ReLU())
    if output_activation is not None:
        layers.append(output_activation)
    return nn.Sequential(*layers)


class ValueFunction(nn.Module):
    def __init__(self, state_dim: int, hidden_dims: Sequence[int]):
        super().__init__()
        self.v = mlp((state_dim, *hidden_dims, 1))

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        return self.v(state).squeeze(-1)


class TwinQ(nn.Module):
    def __init__(self, state_dim: int, action_dim: int, hidden_dims: Sequence[int]):
        super().__init__()
        self.q1 = mlp((state_dim + action_dim, *hidden_dims, 1))
        self.q2 = mlp((state_dim + action_dim, *hidden_dims, 1))

    def both(self, state: torch.Tensor, action: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        sa = torch.cat([state, action], -1)
        return self.q1(sa).squeeze(-1), self.q2(sa).squeeze(-1)

    def forward(self, state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return torch.min(*self.both(state, action))


class GaussianPolicy(nn.Module):
    """N(tanh(Linear(h)), exp(clip(log_std))) over raw actions: no squashed distribution."""

    def __init__(self, state_dim: int, action_dim: int, hidden_dims: Sequence[int]):
        super().__init__()
        self.net = mlp((state_dim, *hidden_dims, action_dim), output_activation=nn.Tanh())
        self.log_std = nn.Parameter(torch.zeros(action_dim, dtype=torch.float32))

    def forward(self, obs: torch.Tensor) -> Normal:
        std = torch.exp(self.log_std.clamp(LOG_STD_MIN, LOG_STD_MAX))
        return Normal(self.net(obs), std)


class TorchIQL:
    """The benchmark's driver around the eager update (see the module docstring)."""

    def __init__(
        self,
        data: Dict[str, np.ndarray],
        observation_dim: int,
        action_dim: int,
        hidden_dims: Sequence[int] = (256, 256),
        batch_size: int = 256,
        seed: int = 0,
        max_steps: int = 1_000_000,
    ):
        self.hidden_dims = tuple(hidden_dims)
        self.batch_size = batch_size
        self.expectile, self.beta, self.discount, self.polyak = 0.7, 3.0, 0.99, 0.005
        self.device = torch.device("cpu")
        # The buffer: the whole dataset as tensors, as CORL's ReplayBuffer holds it.
        self._data = {k: torch.as_tensor(np.asarray(data[k], np.float32), device=self.device) for k in BATCH_KEYS}
        self._size = self._data["rewards"].shape[0]
        self._gen = torch.Generator(device=self.device).manual_seed(seed)

        torch.manual_seed(seed)  # network init, as CORL's set_seed
        self.vf = ValueFunction(observation_dim, self.hidden_dims).to(self.device)
        self.qf = TwinQ(observation_dim, action_dim, self.hidden_dims).to(self.device)
        self.q_target = copy.deepcopy(self.qf).requires_grad_(False)
        self.actor = GaussianPolicy(observation_dim, action_dim, self.hidden_dims).to(self.device)
        self.v_optimizer = torch.optim.Adam(self.vf.parameters(), lr=3e-4, eps=1e-8)
        self.q_optimizer = torch.optim.Adam(self.qf.parameters(), lr=3e-4, eps=1e-8)
        self.actor_optimizer = torch.optim.Adam(self.actor.parameters(), lr=3e-4, eps=1e-8)
        self.actor_lr_schedule = CosineAnnealingLR(self.actor_optimizer, max_steps)
        self._losses: Dict[str, float] = {}
        self._last: Dict[str, torch.Tensor] = {}

    def _sample(self) -> TensorBatch:
        idx = torch.randint(0, self._size, (self.batch_size,), generator=self._gen, device=self.device)
        return {k: v[idx] for k, v in self._data.items()}

    def _train(self, batch: TensorBatch) -> None:
        obs, act = batch["observations"], batch["actions"]
        with torch.no_grad():
            target_q = self.q_target(obs, act)

        # 1. Value: expectile regression towards min target Q.
        u = target_q - self.vf(obs)
        weight = torch.where(u > 0, self.expectile, 1.0 - self.expectile)
        value_loss = torch.mean(weight * u**2)
        self.v_optimizer.zero_grad(set_to_none=True)
        value_loss.backward()
        self.v_optimizer.step()

        # The UPDATED value network feeds the advantages and the TD target.
        with torch.no_grad():
            adv = target_q - self.vf(obs)
            next_v = self.vf(batch["next_observations"])
            awr_weights = torch.exp(self.beta * adv).clamp(max=MAX_AWR_WEIGHT)

        # 2. Actor: advantage-weighted regression.
        log_probs = self.actor(obs).log_prob(act).sum(-1)
        actor_loss = -torch.mean(awr_weights * log_probs)
        self.actor_optimizer.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_optimizer.step()
        self.actor_lr_schedule.step()

        # 3. Critics: TD regression towards r + gamma * mask * V_new(s').
        targets = batch["rewards"] + self.discount * batch["masks"] * next_v
        q1, q2 = self.qf.both(obs, act)
        critic_loss = F.mse_loss(q1, targets) + F.mse_loss(q2, targets)
        self.q_optimizer.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.q_optimizer.step()

        # 4. Polyak average of the target critics.
        with torch.no_grad():
            for t, p in zip(self.q_target.parameters(), self.qf.parameters()):
                t.mul_(1.0 - self.polyak).add_(p, alpha=self.polyak)

        # Kept as tensors: converting to floats here would add a sync to every timed update.
        self._last = {"value_loss": value_loss, "actor_loss": actor_loss, "critic_loss": critic_loss}

    def single_update(self) -> None:
        self._train(self._sample())

    def update_on(self, batch: Dict[str, np.ndarray]) -> None:
        """One update on a given batch (for equality checks)."""
        self._train({k: torch.as_tensor(np.asarray(batch[k], np.float32), device=self.device) for k in BATCH_KEYS})

    def fused_updates(self, num_updates: int) -> None:
        raise NotImplementedError("eager PyTorch has no fused multi-update form")

    def block(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def losses(self) -> Dict[str, float]:
        return {k: float(v.detach()) for k, v in self._last.items()}
