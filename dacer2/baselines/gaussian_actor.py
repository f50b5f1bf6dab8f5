"""The Gaussian-policy comparison point for the multimodality metric: the network of dacer2.algo.heads.GaussianHead.

--algo gaussian trains the DACER2 agent with one thing changed: the reverse diffusion chain is replaced by a
diagonal Gaussian head, a = clip(mu(s) + sigma(s) z, -1, 1). Everything else is the same: the twin distributional
critics and their loss, the executed action's alpha-noise, the GMM entropy regulator that tunes alpha, the delayed
policy update and the policy loss L_q = -min Q(s, a). The Q-gradient field loss L_g has no chain steps to
supervise, so eta is forced to 0. Comparing its goal coverage with DACER2's therefore isolates the policy family,
which is the claim the multi-goal task tests.

The executed policy is N(mu(s), sigma(s)^2 + (alpha k)^2) clipped to the box: Gaussian, so unimodal per state.
"""

from __future__ import annotations

import torch
from torch import nn

from dacer2.algo.networks import activation_fn
from dacer2.algo.precision import linear

POLICY_FAMILY = "gaussian"
LOG_STD_MIN, LOG_STD_MAX = -5.0, 0.5  # keeps sigma in [0.007, 1.65]: never degenerate, never wider than the box


class GaussianActor(nn.Module):
    """MLP over the state with two heads: the mean and the log standard deviation of the action."""

    def __init__(self, obs_dim: int, action_dim: int, hidden_sizes: tuple[int, ...], activation: str = "mish",
                 gemm_dtype: torch.dtype | None = None):
        super().__init__()
        self.gemm_dtype = gemm_dtype  # the matrix multiplies' precision (dacer2/algo/precision.py)
        self.act = activation_fn(activation)
        sizes = (obs_dim, *hidden_sizes)
        self.hidden = nn.ModuleList(nn.Linear(i, o) for i, o in zip(sizes[:-1], sizes[1:]))
        self.mean = nn.Linear(sizes[-1], action_dim)
        self.log_std = nn.Linear(sizes[-1], action_dim)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = obs
        for layer in self.hidden:
            h = self.act(linear(h, layer, self.gemm_dtype))
        return linear(h, self.mean, self.gemm_dtype), linear(h, self.log_std, self.gemm_dtype).clamp(LOG_STD_MIN,
                                                                                                       LOG_STD_MAX)

    def sample(self, obs: torch.Tensor, generator: torch.Generator | None, deterministic: bool) -> torch.Tensor:
        """Reparameterised sample in [-1, 1]; the deterministic action is the clipped mean."""
        mean, log_std = self(obs)
        if deterministic:
            return mean.clamp(-1.0, 1.0)
        z = torch.randn(mean.shape, device=mean.device, dtype=mean.dtype, generator=generator)
        return (mean + log_std.exp() * z).clamp(-1.0, 1.0)
