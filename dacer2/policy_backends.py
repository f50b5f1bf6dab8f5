"""Inference backends of the deployable Policy: each turns a batch of float32 states into actions in [-1, 1].

* `reference`: plain PyTorch, the same code path as DACER2Agent's reference backend.
* `fused`: the dacer2:: `sample_chain` op (C++ on CPU, Triton on CUDA; see dacer2/ops), the whole chain in one
  call.

Both draw every random number of a call in one block from the Policy's torch.Generator (`acting_noise`) and feed
the same rows to the same computation, so they give the same actions for the same generator state (up to float
rounding): switching backend never changes a deployed policy's behaviour.

`select_backend` resolves "auto" exactly as training does (dacer2.ops.resolve_backend: env DACER2_BACKEND, else
fused where kernels exist and the activation is mish); the Gaussian comparison policy always runs the reference.
"""

from __future__ import annotations

import torch
from torch import nn

from dacer2.diffusion import ReverseChain, add_exploration_noise, draw_chain_noise
from dacer2.baselines.gaussian_actor import GaussianActor
from dacer2.networks import NoisePredictor


def acting_noise(T: int, obs: torch.Tensor, action_dim: int, generator: torch.Generator) -> torch.Tensor:
    """Every random number of one diffusion-policy action, [T + 1, B, A] in draw_chain_noise's layout (the `noise`
    input of a dacer2-export ONNX file), drawn in one block, so a Policy and its exported file agree for a seed."""
    return draw_chain_noise(T, obs, action_dim, generator, exploration_row=True, one_draw=True)


class ReferenceDiffusion(nn.Module):
    """The reverse chain plus the executed action's alpha-noise in plain PyTorch, from one block of noise."""

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

        noise = acting_noise(self.chain.num_steps, obs, self.actor.action_dim, generator)
        chain_noise = self.deterministic_chain_noise if deterministic else True
        action = self.chain.sample(denoise, obs, self.actor.action_dim, chain_noise=chain_noise, noise=noise).action
        if deterministic:
            return action
        return add_exploration_noise(action, self.log_alpha.exp(), self.noise_scale, xi=noise[-1])


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
    """The diffusion policy through the fused `dacer2::sample_chain` op, with generator-drawn injected noise."""

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
        self.register_buffer("rng", new_rng_state(0, device))  # unused: the noise is always injected
        self.dims = list(dims)
        self.num_steps, self.action_dim = chain.num_steps, actor.action_dim
        self.deterministic_chain_noise = reference.deterministic_chain_noise
        self.sample_chain = torch.ops.dacer2.sample_chain.default  # the op itself: no Python wrapper per call

    @torch.no_grad()
    def forward(self, obs: torch.Tensor, deterministic: bool, generator: torch.Generator) -> torch.Tensor:
        chain_noise = self.deterministic_chain_noise if deterministic else True
        noise = acting_noise(self.num_steps, obs, self.action_dim, generator)
        # The op reads the chain-noise rows only when chain_noise and the last row only when exploring.
        return self.sample_chain(obs.contiguous(), self.packed, self.dims, self.sched, self.alpha_scale, self.rng,
                                 noise, chain_noise, not deterministic)


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
