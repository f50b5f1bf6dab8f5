"""Inference backends of the deployable Policy: each turns a batch of float32 states into actions in [-1, 1].

* `reference`: plain PyTorch, dacer2.algo.acting.act_reference, which DACER2Agent's reference backend acts through.
* `fused`: the dacer2:: `sample_chain` op (C++ on CPU, Triton on CUDA; see dacer2/ops), the whole chain in one
  call, through dacer2.algo.acting.act_fused as DACER2Agent's fused backend.

Each draws its noise from the Policy's torch.Generator in its backend's layout (dacer2/algo/acting.py), the training
agent's, so a Policy and the agent it was trained as give the same actions for the same generator state on the
same backend. The two backends agree in distribution, not draw for draw.

`select_backend` resolves "auto" exactly as training does (dacer2.ops.resolve_backend: env DACER2_BACKEND, else
fused where kernels exist and the activation is mish); the Gaussian comparison policy always runs the reference.
"""

from __future__ import annotations

import torch
from torch import nn

from dacer2.algo.acting import act_fused, act_reference
from dacer2.algo.diffusion import ReverseChain, add_exploration_noise
from dacer2.baselines.gaussian_actor import GaussianActor
from dacer2.algo.networks import NoisePredictor


class ReferenceDiffusion(nn.Module):
    """The reverse chain plus the executed action's alpha-noise in plain PyTorch."""

    def __init__(self, actor: NoisePredictor, chain: ReverseChain, log_alpha: torch.Tensor, noise_scale: float,
                 deterministic_chain_noise: bool):
        super().__init__()
        self.actor, self.chain = actor, chain
        self.register_buffer("log_alpha", log_alpha.detach().clone())
        self.noise_scale = noise_scale
        self.deterministic_chain_noise = deterministic_chain_noise

    @torch.no_grad()
    def forward(self, obs: torch.Tensor, deterministic: bool, generator: torch.Generator) -> torch.Tensor:
        chain_noise = self.deterministic_chain_noise if deterministic else True
        return act_reference(self.actor, self.chain, obs, self.log_alpha.exp() * self.noise_scale, generator,
                             chain_noise, explore=not deterministic)


class ReferenceGaussian(nn.Module):
    """The Gaussian comparison policy (dacer2/baselines/gaussian_actor.py): the mean, or a sample plus the alpha-noise."""

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


class FusedDiffusion(nn.Module):
    """The diffusion policy through the fused `dacer2::sample_chain` op, drawing its noise in-op."""

    def __init__(self, reference: ReferenceDiffusion):
        super().__init__()
        from dacer2.ops import new_rng_state
        from dacer2.ops.packing import pack_denoiser, schedule_tensor

        actor, chain = reference.actor, reference.chain
        device = actor.out.weight.device
        with torch.no_grad():
            packed, dims = pack_denoiser(actor, chain.num_steps)
        self.register_buffer("packed", packed.detach().contiguous())
        self.register_buffer("sched", schedule_tensor(chain, torch.float32, device))
        self.register_buffer("alpha_scale", (reference.log_alpha.exp() * reference.noise_scale).detach())
        self.register_buffer("rng", new_rng_state(0, device))  # refilled from the generator on every call
        self.dims = list(dims)
        self.num_steps, self.action_dim = chain.num_steps, actor.action_dim
        self.deterministic_chain_noise = reference.deterministic_chain_noise
        self.sample_chain = torch.ops.dacer2.sample_chain.default  # the op itself: no Python wrapper per call

    @torch.no_grad()
    def forward(self, obs: torch.Tensor, deterministic: bool, generator: torch.Generator) -> torch.Tensor:
        chain_noise = self.deterministic_chain_noise if deterministic else True
        return act_fused(self.sample_chain, obs, self.packed, self.dims, self.sched, self.alpha_scale, self.rng,
                         generator, chain_noise, not deterministic)


def select_backend(name: str, family: str, device: torch.device | str = "cpu", activation: str = "mish") -> str:
    """"fused" or "reference" for this policy: the named one (checked) or, for "auto", the fastest available."""
    if name not in ("auto", "fused", "reference"):
        raise ValueError(f"unknown policy backend {name!r}; choose auto, fused or reference")
    if family != "diffusion":
        if name == "fused":
            raise ValueError(f"the fused backend implements the diffusion policy only, not {family} policies")
        return "reference"
    try:
        from dacer2.ops import resolve_backend
    except ImportError:  # the ops package failed to import: the reference always works
        if name == "fused":
            raise ValueError("the fused backend is unavailable here (dacer2.ops failed to import)") from None
        return "reference"
    return resolve_backend(name, device, activation)
