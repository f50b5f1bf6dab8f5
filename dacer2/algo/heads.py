"""Policy heads: what the agent's policy is. A head owns its network, its sampling and its acting; the agent
(dacer2/algo/agent.py) trains whichever head its --algo names with the same critics, entropy regulator and loop.

- `DiffusionHead`: the reverse diffusion chain (docs/algorithm.md §1), computed by a chain backend (the
  plain-PyTorch reference or the fused ops). It can also trace the chain's visited states for L_g.
- `GaussianHead`: a diagonal Gaussian, a = clip(mu(s) + sigma(s) z, -1, 1) (dacer2/baselines/gaussian_actor.py), the
  SAC-style comparison point of --algo gaussian. It has no chain steps, so no L_g (its preset forces eta = 0), and
  no fused kernels (its preset forces the reference backend).

The trainer, resume, Policy.load and the export ask a run's head (its `family`, stored in checkpoints as
`policy_family`), never the algorithm's name. Adding a head: docs/adding-things.md.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import nn

from dacer2.config import TrainConfig
from dacer2.algo.diffusion import ChainTrace, DiffusionSchedule, ReverseChain, add_exploration_noise


class PolicyHead(Protocol):
    family: str  # "diffusion" or "gaussian": checkpoints' policy_family, Policy.info.policy_family
    actor: nn.Module  # the policy's network; the agent registers it as its `actor` (checkpoint keys actor.*)
    traces: bool  # whether trace() exists, i.e. whether L_g has visited states to supervise

    def attach(self, log_alpha: torch.Tensor, generator: torch.Generator, backend: str) -> None:
        """Bind the agent's (or a deployed Policy's) alpha and random generator, and compute on `backend`
        ("reference" or "fused")."""

    def sample(self, obs: torch.Tensor, chain_noise: bool = True) -> torch.Tensor:
        """The policy's action before the exploration noise, [B, A]; differentiable w.r.t. the actor's weights in
        grad mode. chain_noise=False: the head's deterministic sample (fixed chain noise, or the Gaussian mean)."""

    def act(self, obs: torch.Tensor, deterministic: bool) -> torch.Tensor:
        """Executed actions in [-1, 1] without recording a graph: deterministic = no exploration noise."""


class DiffusionHead:
    family = "diffusion"
    traces = True

    def __init__(self, obs_dim: int, action_dim: int, cfg: TrainConfig):
        from dacer2.algo.networks import NoisePredictor

        self.cfg = cfg
        self.chain = ReverseChain(DiffusionSchedule.vp(cfg.diffusion_steps))
        self.actor = NoisePredictor(obs_dim, action_dim, cfg.actor_hidden, cfg.activation)
        self.compute = None  # the chain backend, built by attach()
        self.log_alpha: torch.Tensor | None = None

    def attach(self, log_alpha: torch.Tensor, generator: torch.Generator, backend: str) -> None:
        from dacer2.algo.agent_backend import ReferenceChain

        cfg = self.cfg
        self.log_alpha = log_alpha
        reference = ReferenceChain(self.actor, self.chain, log_alpha, generator, cfg.noise_scale,
                                   cfg.qgrad_stop_gradient)
        if backend == "fused":
            from dacer2.ops.agent_backend import FusedChain

            self.compute = FusedChain(reference, cfg.seed)
        else:
            self.compute = reference

    def sample(self, obs: torch.Tensor, chain_noise: bool = True) -> torch.Tensor:
        return self.compute.sample(obs, chain_noise)

    def trace(self, obs: torch.Tensor, chain_noise: bool = True) -> ChainTrace:
        """The chain with every visited state and its prediction, stacked [T, B, A] in visit order (under
        qgrad_stop_gradient the fused backend's eps are eps_theta(s, sg(x_t), t))."""
        return self.compute.trace(obs, chain_noise)

    def act(self, obs: torch.Tensor, deterministic: bool) -> torch.Tensor:
        chain_noise = self.cfg.deterministic_chain_noise if deterministic else True
        return self.compute.act(obs, chain_noise, explore=not deterministic)

    def qgrad_eps(self, obs: torch.Tensor, trace: ChainTrace) -> torch.Tensor:
        """eps_theta at every visited state, as L_g supervises it."""
        return self.compute.qgrad_eps(obs, trace)

    def qgrad_loss(self, eps: torch.Tensor, grad_q: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return self.compute.qgrad_loss(eps, grad_q, weight)


class GaussianHead:
    family = "gaussian"
    traces = False

    def __init__(self, obs_dim: int, action_dim: int, cfg: TrainConfig):
        from dacer2.baselines.gaussian_actor import GaussianActor

        self.cfg = cfg
        self.actor = GaussianActor(obs_dim, action_dim, cfg.actor_hidden, cfg.activation)
        self.log_alpha: torch.Tensor | None = None
        self.generator: torch.Generator | None = None

    def attach(self, log_alpha: torch.Tensor, generator: torch.Generator, backend: str) -> None:
        if backend != "reference":
            raise ValueError("the Gaussian head has no fused kernels; it runs on the reference backend")
        self.log_alpha, self.generator = log_alpha, generator

    def sample(self, obs: torch.Tensor, chain_noise: bool = True) -> torch.Tensor:
        # chain_noise=False means "no sampling noise": the mean.
        return self.actor.sample(obs, self.generator, deterministic=not chain_noise)

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool) -> torch.Tensor:
        if deterministic:  # the mean, whatever deterministic_chain_noise says: that switch is about the chain
            return self.actor.sample(obs, None, deterministic=True)
        return add_exploration_noise(self.sample(obs), self.log_alpha.exp(), self.cfg.noise_scale, self.generator)


HEADS: dict[str, type] = {head.family: head for head in (DiffusionHead, GaussianHead)}
# Which head each --algo trains; every other preset is a diffusion chain.
ALGO_HEADS: dict[str, str] = {"gaussian": GaussianHead.family}


def head_for(cfg: TrainConfig, obs_dim: int, action_dim: int) -> PolicyHead:
    """The head of cfg.algo, its network built (and its initial weights drawn from the global generator) now."""
    return HEADS[ALGO_HEADS.get(cfg.algo, DiffusionHead.family)](obs_dim, action_dim, cfg)
