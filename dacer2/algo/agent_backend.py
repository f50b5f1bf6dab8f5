"""The critic's seam between the agent's algorithm and its arithmetic: the two computations a critic backend
supplies to the agent (dacer2/algo/agent.py), and the plain-PyTorch backend that defines them.

`ReferenceCritic` below is the definition; `dacer2.ops.agent_backend.FusedCritic` runs the same computations through
the dacer2:: ops and is tested against it. (The policy's computations belong to its head, dacer2/algo/heads.py.)
"""

from __future__ import annotations

from typing import Protocol

import torch

from dacer2.algo.networks import TwinDistributionalCritic, twin_value


class CriticBackend(Protocol):
    def critic_value(self, obs: torch.Tensor, action: torch.Tensor, which: str) -> torch.Tensor:
        """A scalar Q per action through frozen critic weights, differentiable w.r.t. the action. obs [B, S];
        action [B, A], or a stack [T, B, A] of actions for the same states."""

    def action_grad(self, obs: torch.Tensor, action: torch.Tensor, which: str) -> torch.Tensor:
        """d Q / d action of critic_value at action [B, A] or at stacked actions [T, B, A] (L_g's visited x_t), as
        a plain tensor of the same shape: no graph to or from it."""

    def forget_cached_weights(self) -> None:
        """Drop anything derived from the critic's weights (a replayed CUDA graph changed them in place)."""


class ReferenceCritic:
    def __init__(self, critic: TwinDistributionalCritic):
        self.critic = critic

    def forget_cached_weights(self) -> None:
        pass  # computes from the module every time

    def critic_value(self, obs: torch.Tensor, action: torch.Tensor, which: str) -> torch.Tensor:
        lead = action.shape[:-1]
        if action.dim() == 3:  # one row per (step, state): the critic module takes a flat batch
            obs = obs.expand(*lead, obs.shape[-1]).reshape(-1, obs.shape[-1])
            action = action.reshape(-1, action.shape[-1])
        mu, _ = self.critic(obs, action, detach_params=True)
        return twin_value(mu, which).view(lead)

    def action_grad(self, obs: torch.Tensor, action: torch.Tensor, which: str) -> torch.Tensor:
        with torch.enable_grad():
            probe = action.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(self.critic_value(obs, probe, which).sum(), probe)
        return grad
