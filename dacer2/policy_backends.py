"""Inference backends of the deployable Policy: each turns a batch of float32 states into actions in [-1, 1].

Only the plain-PyTorch reference backends exist today. The registry keeps the switch in one place: a fused-kernel
backend registers under its own name with an `available()` check, and `select_backend("auto")` picks the first
available one in FASTEST_FIRST order, falling back to the reference.
"""

from __future__ import annotations

from typing import Callable, Protocol

import torch
from torch import nn

from dacer2.diffusion import ReverseChain, add_exploration_noise
from dacer2.gaussian import GaussianActor
from dacer2.networks import NoisePredictor


class Backend(Protocol):
    def __call__(self, obs: torch.Tensor, deterministic: bool, generator: torch.Generator) -> torch.Tensor: ...


class ReferenceDiffusion(nn.Module):
    """The reverse chain plus the executed action's alpha-noise, exactly as DACER2Agent.act computes them, so with
    the same generator state the two give the same actions."""

    def __init__(self, actor: NoisePredictor, chain: ReverseChain, log_alpha: torch.Tensor, noise_scale: float,
                 deterministic_chain_noise: bool):
        super().__init__()
        self.actor, self.chain = actor, chain
        self.register_buffer("log_alpha", log_alpha.detach().clone())
        self.noise_scale = noise_scale
        self.deterministic_chain_noise = deterministic_chain_noise

    @torch.no_grad()
    def forward(self, obs: torch.Tensor, deterministic: bool, generator: torch.Generator) -> torch.Tensor:
        step_emb = self.actor.step_embeddings(self.chain.num_steps)  # once per call, not once per step

        def denoise(s: torch.Tensor, x: torch.Tensor, t: int) -> torch.Tensor:
            return self.actor(s, x, step_emb[t])

        chain_noise = self.deterministic_chain_noise if deterministic else True
        action = self.chain.sample(denoise, obs, self.actor.action_dim, generator, chain_noise=chain_noise).action
        if deterministic:
            return action
        return add_exploration_noise(action, self.log_alpha.exp(), self.noise_scale, generator)


class ReferenceGaussian(nn.Module):
    """The Gaussian comparison policy (dacer2/gaussian.py): the mean, or a sample plus the alpha-noise."""

    def __init__(self, actor: GaussianActor, log_alpha: torch.Tensor, noise_scale: float):
        super().__init__()
        self.actor = actor
        self.register_buffer("log_alpha", log_alpha.detach().clone())
        self.noise_scale = noise_scale

    @torch.no_grad()
    def forward(self, obs: torch.Tensor, deterministic: bool, generator: torch.Generator) -> torch.Tensor:
        action = self.actor.sample(obs, generator, deterministic)
        if deterministic:
            return action
        return add_exploration_noise(action, self.log_alpha.exp(), self.noise_scale, generator)


# name -> (is it usable on this machine?, does it support this policy family?)
BACKENDS: dict[str, tuple[Callable[[], bool], Callable[[str], bool]]] = {
    "reference": (lambda: True, lambda family: family in ("diffusion", "gaussian")),
}
FASTEST_FIRST = ("reference",)


def select_backend(name: str, family: str) -> str:
    """The backend to use: the named one (checked), or for "auto" the fastest available for this policy family."""
    if name == "auto":
        for candidate in FASTEST_FIRST:
            available, supports = BACKENDS[candidate]
            if available() and supports(family):
                return candidate
        raise ValueError(f"no inference backend supports policy family {family!r}")
    if name not in BACKENDS:
        raise ValueError(f"unknown policy backend {name!r}; choose auto or one of {sorted(BACKENDS)}")
    available, supports = BACKENDS[name]
    if not available():
        raise ValueError(f"policy backend {name!r} is not available on this machine")
    if not supports(family):
        raise ValueError(f"policy backend {name!r} does not support {family} policies")
    return name
