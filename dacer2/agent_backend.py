"""The seam between DACER2Agent's algorithm and its arithmetic: the few computations a backend supplies, and the
plain-PyTorch backend that defines them.

The agent (dacer2/agent.py) asks its backend for the reverse chain, for acting, for the critic's value (whose
autograd gradient is the action-gradient L_g needs) and for L_g's pieces; everything else it computes itself.
`ReferenceBackend` below is the definition; `dacer2.ops.agent_backend.FusedBackend` runs the same computations
through the dacer2:: ops and is tested against it. A backend is handed the modules and settings it needs when it
is built and never reads the agent.
"""

from __future__ import annotations

from typing import Protocol

import torch

from dacer2.diffusion import ChainOutput, ReverseChain, add_exploration_noise
from dacer2.networks import NoisePredictor, TwinDistributionalCritic, twin_value
from dacer2.qgrad import qgrad_loss


class AgentBackend(Protocol):
    name: str  # "reference" or "fused": DACER2Agent.backend

    def act(self, obs: torch.Tensor, chain_noise: bool, explore: bool) -> torch.Tensor:
        """Actions for a batch of states, never recording a graph; `explore` adds the alpha-noise."""

    def run_chain(self, obs: torch.Tensor, chain_noise: bool) -> ChainOutput:
        """The reverse chain, differentiable w.r.t. the actor's weights when grad mode is on."""

    def critic_value(self, obs: torch.Tensor, action: torch.Tensor, which: str) -> torch.Tensor:
        """A scalar Q per action through frozen critic weights, differentiable w.r.t. the action. obs [B, S];
        action [B, A], or a stack [T, B, A] of actions for the same states (L_g's visited x_t)."""

    def qgrad_eps(self, obs: torch.Tensor, chain: ChainOutput) -> torch.Tensor:
        """[T, B, A]: the denoiser's prediction at every state the chain visited, as L_g supervises it."""

    def qgrad_loss(self, eps: torch.Tensor, grad_q: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """L_g from the predictions, the critic's action-gradients [T, B, A] and w(t) per row [T]."""


class ReferenceBackend:
    name = "reference"

    def __init__(self, actor: NoisePredictor, critic: TwinDistributionalCritic, chain: ReverseChain,
                 log_alpha: torch.Tensor, generator: torch.Generator, noise_scale: float, qgrad_stop_gradient: bool):
        self.actor, self.critic, self.chain = actor, critic, chain
        self.log_alpha, self.generator = log_alpha, generator
        self.noise_scale = noise_scale
        self.qgrad_stop_gradient = qgrad_stop_gradient

    def run_chain(self, obs: torch.Tensor, chain_noise: bool) -> ChainOutput:
        step_emb = self.actor.step_embeddings(self.chain.num_steps)  # once per chain, not once per step

        def denoise(s: torch.Tensor, x: torch.Tensor, t: int) -> torch.Tensor:
            return self.actor(s, x, step_emb[t])

        return self.chain.sample(denoise, obs, self.actor.action_dim, self.generator, chain_noise=chain_noise)

    @torch.no_grad()
    def act(self, obs: torch.Tensor, chain_noise: bool, explore: bool) -> torch.Tensor:
        action = self.run_chain(obs, chain_noise).action
        if explore:
            action = add_exploration_noise(action, self.log_alpha.exp(), self.noise_scale, self.generator)
        return action

    def critic_value(self, obs: torch.Tensor, action: torch.Tensor, which: str) -> torch.Tensor:
        lead = action.shape[:-1]
        if action.dim() == 3:  # one row per (step, state): the critic module takes a flat batch
            obs = obs.expand(*lead, obs.shape[-1]).reshape(-1, obs.shape[-1])
            action = action.reshape(-1, action.shape[-1])
        mu, _ = self.critic(obs, action, detach_params=True)
        return twin_value(mu, which).view(lead)

    def qgrad_eps(self, obs: torch.Tensor, chain: ChainOutput) -> torch.Tensor:
        if not self.qgrad_stop_gradient:
            return torch.stack(chain.eps)
        # eps_theta(s, sg(x_t), t): the chain's own eps values, but no gradient into x_t. One pass over all
        # T * B rows, each with its step's embedding.
        T, (B, S) = len(chain.steps), obs.shape
        visited = torch.stack(chain.visited).detach()
        steps = torch.tensor(chain.steps, device=obs.device)
        step_emb = self.actor.step_embeddings(self.chain.num_steps)[steps]  # [T, E]
        emb_all = step_emb[:, None, :].expand(T, B, -1).reshape(T * B, -1)
        obs_all = obs.expand(T, B, S).reshape(T * B, S)
        return self.actor(obs_all, visited.reshape(T * B, -1), emb_all).view(T, B, -1)

    def qgrad_loss(self, eps: torch.Tensor, grad_q: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return qgrad_loss(eps, grad_q, weight)
