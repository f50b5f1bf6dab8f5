"""Policy heads: what the agent's policy is. A head owns its network, its sampling and its acting; the agent
(dacer2/algo/agent.py) trains whichever head its --algo names with the same critics, entropy regulator and loop.

- `DiffusionHead`: the reverse diffusion chain (docs/algorithm.md §1) in plain PyTorch, the definition. It can also
  trace the chain's visited states and compute L_g's pieces. `FusedDiffusionHead` (dacer2/ops/agent_backend.py) is
  the same head computed by the dacer2:: ops, tested against this one.
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

from dacer2.algo.acting import act_reference
from dacer2.algo.diffusion import ChainTrace, DiffusionSchedule, ReverseChain, add_exploration_noise
from dacer2.algo.networks import NoisePredictor
from dacer2.algo.precision import gemm_dtype
from dacer2.algo.qgrad import qgrad_loss
from dacer2.baselines.gaussian_actor import GaussianActor
from dacer2.config import TrainConfig


class PolicyHead(Protocol):
    family: str  # "diffusion" or "gaussian": checkpoints' policy_family, Policy.info.policy_family
    backend: str  # "reference" or "fused": what computes it (DACER2Agent.backend, Policy.info.backend)
    actor: nn.Module  # the policy's network; the agent registers it as its `actor` (checkpoint keys actor.*)
    traces: bool  # whether trace(), qgrad_eps() and qgrad_loss() exist, i.e. whether L_g applies

    def attach(self, log_alpha: torch.Tensor, generator: torch.Generator) -> None:
        """Bind the agent's (or a deployed Policy's) alpha and random generator, once they are on their device."""

    def sample(self, obs: torch.Tensor, chain_noise: bool = True) -> torch.Tensor:
        """The policy's action before the exploration noise, [B, A]; differentiable w.r.t. the actor's weights in
        grad mode. chain_noise=False: the head's deterministic sample (fixed chain noise, or the Gaussian mean)."""

    def act(self, obs: torch.Tensor, deterministic: bool) -> torch.Tensor:
        """Executed actions in [-1, 1] without recording a graph: deterministic = no exploration noise."""

    def forget_cached_weights(self) -> None:
        """Drop copies derived from the weights: a replayed CUDA graph changed them behind the version counters."""


class BaseHead:
    """What every head keeps: its config, and the alpha and generator that attach() binds."""
    backend = "reference"

    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        self.log_alpha: torch.Tensor | None = None
        self.generator: torch.Generator | None = None

    def attach(self, log_alpha: torch.Tensor, generator: torch.Generator) -> None:
        self.log_alpha, self.generator = log_alpha, generator

    def forget_cached_weights(self) -> None:
        """Drop whatever was derived from the weights (packed copies): they changed behind the version counters,
        as a replayed CUDA graph changes them. Plain-PyTorch heads derive nothing."""


class DiffusionHead(BaseHead):
    family = "diffusion"
    traces = True

    def __init__(self, obs_dim: int, action_dim: int, cfg: TrainConfig):
        super().__init__(cfg)
        self.chain = ReverseChain(DiffusionSchedule.vp(cfg.diffusion_steps))
        self.actor = NoisePredictor(obs_dim, action_dim, cfg.actor_hidden, cfg.activation,
                                    gemm_dtype=gemm_dtype(cfg.precision))

    def trace(self, obs: torch.Tensor, chain_noise: bool = True) -> ChainTrace:
        """The chain with every visited state and its prediction, stacked [T, B, A] in visit order, differentiable
        w.r.t. the actor's weights."""
        step_emb = self.actor.step_embeddings(self.chain.num_steps)  # once per chain, not once per step
        return self.chain.sample(lambda s, x, t: self.actor(s, x, step_emb[t]), obs, self.actor.action_dim,
                                 self.generator, chain_noise=chain_noise)

    def sample(self, obs: torch.Tensor, chain_noise: bool = True) -> torch.Tensor:
        return self.trace(obs, chain_noise).action

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool) -> torch.Tensor:
        chain_noise = self.cfg.deterministic_chain_noise if deterministic else True
        return act_reference(self.actor, self.chain, obs, self.log_alpha.exp() * self.cfg.noise_scale,
                             self.generator, chain_noise, explore=not deterministic)

    def qgrad_eps(self, obs: torch.Tensor, trace: ChainTrace) -> torch.Tensor:
        """[T, B, A]: eps_theta at every visited state as L_g supervises it, at sg(x_t) under qgrad_stop_gradient."""
        if not self.cfg.qgrad_stop_gradient:
            return trace.eps
        # The chain's own eps values, but no gradient into x_t. One pass over all T * B rows, each with its step's
        # embedding (rows in visit order: t = T-1 first).
        T, (B, S) = trace.visited.shape[0], obs.shape
        step_emb = self.actor.step_embeddings(self.chain.num_steps).flip(0)  # [T, E], visit order
        emb_all = step_emb[:, None, :].expand(T, B, -1).reshape(T * B, -1)
        obs_all = obs.expand(T, B, S).reshape(T * B, S)
        return self.actor(obs_all, trace.visited.detach().reshape(T * B, -1), emb_all).view(T, B, -1)

    def qgrad_loss(self, eps: torch.Tensor, grad_q: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """L_g from the predictions, the critic's action-gradients [T, B, A] and w(t) per row [T]."""
        return qgrad_loss(eps, grad_q, weight)


class GaussianHead(BaseHead):
    family = "gaussian"
    traces = False

    def __init__(self, obs_dim: int, action_dim: int, cfg: TrainConfig):
        super().__init__(cfg)
        self.actor = GaussianActor(obs_dim, action_dim, cfg.actor_hidden, cfg.activation, gemm_dtype(cfg.precision))

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


def build_head(family: str, obs_dim: int, action_dim: int, cfg: TrainConfig, backend: str) -> PolicyHead:
    """The head of `family` computed on `backend`, its network built (and its initial weights drawn from the global
    generator) now."""
    if backend == "fused":
        if family != DiffusionHead.family:
            raise ValueError(f"the {family} head has no fused kernels; it runs on the reference backend")
        from dacer2.ops.agent_backend import FusedDiffusionHead

        return FusedDiffusionHead(obs_dim, action_dim, cfg)
    return HEADS[family](obs_dim, action_dim, cfg)


def head_for(cfg: TrainConfig, obs_dim: int, action_dim: int, backend: str) -> PolicyHead:
    """The head cfg.algo trains."""
    return build_head(ALGO_HEADS.get(cfg.algo, DiffusionHead.family), obs_dim, action_dim, cfg, backend)
