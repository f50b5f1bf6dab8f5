"""The seam between the agent's algorithm and its arithmetic: the few computations a backend supplies, and the
plain-PyTorch backends that define them.

Two seams, one per network. The diffusion head (dacer2/algo/heads.py) asks a chain backend for the reverse chain (a
sample, or a trace with every visited state), for acting, and for L_g's pieces; the agent (dacer2/algo/agent.py) asks a
critic backend for the critic's value and its action-gradient. Everything else the agent computes itself.
`ReferenceChain` and `ReferenceCritic` below are the definitions; `dacer2.ops.agent_backend` runs the same
computations through the dacer2:: ops and is tested against them. A backend is handed the modules and settings it
needs when it is built and never reads the agent.
"""

from __future__ import annotations

from typing import Protocol

import torch

from dacer2.algo.acting import act_reference
from dacer2.algo.diffusion import ChainTrace, ReverseChain
from dacer2.algo.networks import NoisePredictor, TwinDistributionalCritic, twin_value
from dacer2.algo.qgrad import qgrad_loss


class ChainBackend(Protocol):
    name: str  # "reference" or "fused": DACER2Agent.backend

    def act(self, obs: torch.Tensor, chain_noise: bool, explore: bool) -> torch.Tensor:
        """Actions for a batch of states, never recording a graph; `explore` adds the alpha-noise."""

    def sample(self, obs: torch.Tensor, chain_noise: bool) -> torch.Tensor:
        """The chain's output x_0 [B, A] (no exploration noise); differentiable w.r.t. the actor's weights when
        grad mode is on."""

    def trace(self, obs: torch.Tensor, chain_noise: bool) -> ChainTrace:
        """The chain with every visited state and prediction, differentiable w.r.t. the actor's weights."""

    def qgrad_eps(self, obs: torch.Tensor, trace: ChainTrace) -> torch.Tensor:
        """[T, B, A]: the denoiser's prediction at every state the chain visited, as L_g supervises it."""

    def qgrad_loss(self, eps: torch.Tensor, grad_q: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """L_g from the predictions, the critic's action-gradients [T, B, A] and w(t) per row [T]."""


class CriticBackend(Protocol):
    def critic_value(self, obs: torch.Tensor, action: torch.Tensor, which: str) -> torch.Tensor:
        """A scalar Q per action through frozen critic weights, differentiable w.r.t. the action. obs [B, S];
        action [B, A], or a stack [T, B, A] of actions for the same states."""

    def action_grad(self, obs: torch.Tensor, action: torch.Tensor, which: str) -> torch.Tensor:
        """d Q / d action of critic_value at action [B, A] or at stacked actions [T, B, A] (L_g's visited x_t), as
        a plain tensor of the same shape: no graph to or from it."""


class ReferenceChain:
    name = "reference"

    def __init__(self, actor: NoisePredictor, chain: ReverseChain, log_alpha: torch.Tensor,
                 generator: torch.Generator, noise_scale: float, qgrad_stop_gradient: bool):
        self.actor, self.chain = actor, chain
        self.log_alpha, self.generator = log_alpha, generator
        self.noise_scale = noise_scale
        self.qgrad_stop_gradient = qgrad_stop_gradient

    def trace(self, obs: torch.Tensor, chain_noise: bool) -> ChainTrace:
        step_emb = self.actor.step_embeddings(self.chain.num_steps)  # once per chain, not once per step

        def denoise(s: torch.Tensor, x: torch.Tensor, t: int) -> torch.Tensor:
            return self.actor(s, x, step_emb[t])

        return self.chain.sample(denoise, obs, self.actor.action_dim, self.generator, chain_noise=chain_noise)

    def sample(self, obs: torch.Tensor, chain_noise: bool) -> torch.Tensor:
        return self.trace(obs, chain_noise).action

    @torch.no_grad()
    def act(self, obs: torch.Tensor, chain_noise: bool, explore: bool) -> torch.Tensor:
        return act_reference(self.actor, self.chain, obs, self.log_alpha.exp() * self.noise_scale, self.generator,
                             chain_noise, explore)

    def qgrad_eps(self, obs: torch.Tensor, trace: ChainTrace) -> torch.Tensor:
        if not self.qgrad_stop_gradient:
            return trace.eps
        # eps_theta(s, sg(x_t), t): the chain's own eps values, but no gradient into x_t. One pass over all
        # T * B rows, each with its step's embedding (rows in visit order: t = T-1 first).
        T, (B, S) = trace.visited.shape[0], obs.shape
        step_emb = self.actor.step_embeddings(self.chain.num_steps).flip(0)  # [T, E], visit order
        emb_all = step_emb[:, None, :].expand(T, B, -1).reshape(T * B, -1)
        obs_all = obs.expand(T, B, S).reshape(T * B, S)
        return self.actor(obs_all, trace.visited.detach().reshape(T * B, -1), emb_all).view(T, B, -1)

    def qgrad_loss(self, eps: torch.Tensor, grad_q: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return qgrad_loss(eps, grad_q, weight)


class ReferenceCritic:
    name = "reference"

    def __init__(self, critic: TwinDistributionalCritic):
        self.critic = critic

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
