"""The two learned functions of DACER2: the noise-prediction network eps_theta(s, x, t) and the twin
distributional critic Q_i(s, a) -> (mu_i, sigma_i) (docs/algorithm.md §1 and §2).

The twin critics share one module with stacked weights so both are evaluated by batched matmuls in one call,
not two Python calls.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from dacer2.algo.diffusion import sinusoidal_embedding
from dacer2.algo.precision import addmm, linear

# Which scalar Q the actor's losses read from the twin means (algorithm.md §3, --qgrad-critic); the fused ops
# take the index into this tuple.
CRITIC_CHOICES = ("min", "mean", "q1")

ACTIVATIONS = {"mish": F.mish, "relu": F.relu, "gelu": F.gelu, "silu": F.silu, "tanh": torch.tanh}


def activation_fn(name):
    """The activation called `name`, or `name` itself when it is already a function (a backend's own kernel)."""
    if callable(name):
        return name
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}") from None


class NoisePredictor(nn.Module):
    """eps_theta(s, x, t): an MLP over concat[s, x, time embedding]."""

    def __init__(self, obs_dim: int, action_dim: int, hidden_sizes: tuple[int, ...] = (256, 256, 256),
                 activation: str = "mish", time_dim: int = 16, gemm_dtype: torch.dtype | None = None):
        super().__init__()
        self.obs_dim, self.action_dim, self.time_dim = obs_dim, action_dim, time_dim
        self.gemm_dtype = gemm_dtype  # the MLP's matrix multiplies (dacer2/algo/precision.py); the time MLP stays fp32
        self.act = activation_fn(activation)
        self.time_in = nn.Linear(time_dim, 2 * time_dim)
        self.time_out = nn.Linear(2 * time_dim, time_dim)
        sizes = (obs_dim + action_dim + time_dim, *hidden_sizes)
        self.hidden = nn.ModuleList(nn.Linear(i, o) for i, o in zip(sizes[:-1], sizes[1:]))
        self.out = nn.Linear(sizes[-1], action_dim)

    def step_embeddings(self, num_steps: int) -> torch.Tensor:
        """Learned embeddings of every step index, [T, time_dim]: computed once per chain, not once per step."""
        t = torch.arange(num_steps, device=self.out.weight.device, dtype=self.out.weight.dtype)
        return self.time_out(self.act(self.time_in(sinusoidal_embedding(t, self.time_dim))))

    def forward(self, obs: torch.Tensor, x: torch.Tensor, t_emb: torch.Tensor) -> torch.Tensor:
        """`t_emb` is one step's embedding [time_dim] (shared by the batch) or per-sample [B, time_dim]."""
        if t_emb.dim() == 1:
            t_emb = t_emb.expand(x.shape[0], -1)
        h = torch.cat([obs, x, t_emb], dim=-1)
        for layer in self.hidden:
            h = self.act(linear(h, layer, self.gemm_dtype))
        return linear(h, self.out, self.gemm_dtype)


class EnsembleLinear(nn.Module):
    """E independent linear layers applied in one batched matmul; weights stored [E, in, out]."""

    def __init__(self, ensemble: int, in_features: int, out_features: int, gemm_dtype: torch.dtype | None = None):
        super().__init__()
        self.gemm_dtype = gemm_dtype
        self.weight = nn.Parameter(torch.empty(ensemble, in_features, out_features))
        self.bias = nn.Parameter(torch.empty(ensemble, 1, out_features))
        # Same distribution as nn.Linear's default init, member by member.
        bound = 1.0 / math.sqrt(in_features)
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor, detach_params: bool = False) -> torch.Tensor:
        weight, bias = (self.weight.detach(), self.bias.detach()) if detach_params else (self.weight, self.bias)
        if x.dim() == 2:  # the same input for every member
            x = x.expand(weight.shape[0], -1, -1)
        return addmm(bias, x, weight, self.gemm_dtype)


class TwinDistributionalCritic(nn.Module):
    """Q_i(s, a) -> (mu_i, sigma_i) for i = 1, 2, sigma = softplus(raw)."""

    num_critics = 2

    def __init__(self, obs_dim: int, action_dim: int, hidden_sizes: tuple[int, ...] = (256, 256, 256),
                 activation: str = "mish", gemm_dtype: torch.dtype | None = None):
        super().__init__()
        self.act = activation_fn(activation)
        sizes = (obs_dim + action_dim, *hidden_sizes, 2)
        self.layers = nn.ModuleList(EnsembleLinear(self.num_critics, i, o, gemm_dtype)
                                    for i, o in zip(sizes[:-1], sizes[1:]))

    def forward(self, obs: torch.Tensor, action: torch.Tensor,
                detach_params: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (mu, sigma), each [2, N]. `detach_params=True` lets gradients reach the action (and obs)
        but not the critic's weights: the actor's losses use it."""
        h = torch.cat([obs, action], dim=-1)
        for layer in self.layers[:-1]:
            h = self.act(layer(h, detach_params))
        out = self.layers[-1](h, detach_params)
        return out[..., 0], F.softplus(out[..., 1])


def twin_value(mu: torch.Tensor, which: str = "min") -> torch.Tensor:
    """One value per sample from the twin means mu [2, ...]: their min, their mean, or Q1's."""
    if which == "min":
        return mu.min(dim=0).values
    if which == "mean":
        return mu.mean(dim=0)
    return mu[0]
