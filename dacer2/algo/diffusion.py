"""The reverse-diffusion policy's fixed parts: the VP noise schedule, the temporal weight w(t), and the
reparameterised sampling chain (docs/algorithm.md §1 and the w(t) of §3).

The chain is written once, here, and returns every state it visits because DACER2's Q-gradient field loss
supervises the denoiser at each of them. Step index t runs T-1 (noisiest) down to 0, as in docs/algorithm.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, NamedTuple, Sequence

import torch

# A denoiser maps (obs [B, S], x [B, A], t: int) to a noise prediction [B, A].
Denoiser = Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]


@dataclass(frozen=True)
class DiffusionSchedule:
    """Per-step constants of the VP schedule, each a float64 tensor of length T indexed by step t."""

    alphas: torch.Tensor
    betas: torch.Tensor
    alphas_cumprod: torch.Tensor
    alphas_cumprod_prev: torch.Tensor
    sqrt_recip_alphas_cumprod: torch.Tensor
    sqrt_recipm1_alphas_cumprod: torch.Tensor
    posterior_log_variance: torch.Tensor
    posterior_mean_coef1: torch.Tensor
    posterior_mean_coef2: torch.Tensor

    @property
    def num_steps(self) -> int:
        return int(self.betas.shape[0])

    @classmethod
    def vp(cls, num_steps: int, beta_min: float = 0.1, beta_max: float = 10.0) -> "DiffusionSchedule":
        if num_steps < 1:
            raise ValueError(f"diffusion needs at least one step, got T={num_steps}")
        T = num_steps
        i = torch.arange(1, T + 1, dtype=torch.float64)
        alphas = torch.exp(-beta_min / T - 0.5 * (beta_max - beta_min) * (2 * i - 1) / T**2)
        betas = 1.0 - alphas
        abar = torch.cumprod(alphas, 0)
        abar_prev = torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])
        posterior_variance = betas * (1.0 - abar_prev) / (1.0 - abar)
        return cls(
            alphas=alphas,
            betas=betas,
            alphas_cumprod=abar,
            alphas_cumprod_prev=abar_prev,
            sqrt_recip_alphas_cumprod=torch.sqrt(1.0 / abar),
            sqrt_recipm1_alphas_cumprod=torch.sqrt(1.0 / abar - 1.0),
            # The last step's posterior variance is exactly 0; clip so its log stays finite.
            posterior_log_variance=torch.log(posterior_variance.clamp(min=1e-20)),
            posterior_mean_coef1=betas * torch.sqrt(abar_prev) / (1.0 - abar),
            posterior_mean_coef2=(1.0 - abar_prev) * torch.sqrt(alphas) / (1.0 - abar),
        )


def temporal_weight(num_steps: int, c: float = 0.4, d: float = -1.8, enabled: bool = True) -> torch.Tensor:
    """w(t) = exp(c (t + 1) + d) for t = 0..T-1; constant 1 when the weighting is switched off."""
    t = torch.arange(num_steps, dtype=torch.float64)
    if not enabled:
        return torch.ones(num_steps, dtype=torch.float64)
    return torch.exp(c * (t + 1) + d)


class ChainTrace(NamedTuple):
    """One pass of the reverse chain with every state it visited, for the Q-gradient field loss.

    Rows are in visit order, t = T-1 (noisiest) down to 0: `visited[k]` [B, A] is the state fed to the denoiser at
    step T-1-k (visited[0] is the initial noise x_{T-1}) and `eps[k]` its prediction there. `action` [B, A] is the
    chain's output x_0, before the exploration noise.
    """

    action: torch.Tensor
    visited: torch.Tensor  # [T, B, A]
    eps: torch.Tensor  # [T, B, A]

    @property
    def steps(self) -> list[int]:
        """The step index t of each row."""
        return list(reversed(range(self.visited.shape[0])))


class ChainCoefficients(NamedTuple):
    """The per-step constants of the posterior step, each indexable by step t: x0_hat = clip(coef_x x - coef_eps
    eps, -1, 1), then x = c1 x0_hat + c2 x (+ std z). The fused ops take them as the rows of one [5, T] tensor."""

    coef_x: Sequence
    coef_eps: Sequence
    c1: Sequence
    c2: Sequence
    std: Sequence


class ReverseChain:
    """Samples x_0 by running the reverse process from Gaussian noise, fully differentiable (reparameterised).

    Constants are cast once to the working dtype/device as plain Python floats, so the chain adds no host
    syncs and no per-call tensor allocations for them.
    """

    def __init__(self, schedule: DiffusionSchedule):
        self.schedule: DiffusionSchedule | None = schedule
        s = schedule
        self.coefficients = ChainCoefficients(
            coef_x=s.sqrt_recip_alphas_cumprod.tolist(),
            coef_eps=s.sqrt_recipm1_alphas_cumprod.tolist(),
            c1=s.posterior_mean_coef1.tolist(),
            c2=s.posterior_mean_coef2.tolist(),
            std=torch.exp(0.5 * s.posterior_log_variance).tolist(),
        )

    @classmethod
    def from_coefficients(cls, coefficients: Sequence[Sequence]) -> "ReverseChain":
        """A chain over given constants, e.g. the rows of a fused op's [5, T] schedule tensor: the ops' plain-PyTorch
        twins run this very chain, in the op's dtype and on its device."""
        chain = cls.__new__(cls)
        chain.schedule = None
        chain.coefficients = ChainCoefficients(*coefficients)
        return chain

    @property
    def num_steps(self) -> int:
        return len(self.coefficients.coef_x)

    def step(self, x: torch.Tensor, eps: torch.Tensor, t: int, noise: torch.Tensor | None) -> torch.Tensor:
        """One posterior step x_t -> x_{t-1}; `noise` is z ~ N(0, I), ignored at t = 0."""
        c = self.coefficients
        x0_hat = (c.coef_x[t] * x - c.coef_eps[t] * eps).clamp(-1.0, 1.0)
        mean = c.c1[t] * x0_hat + c.c2[t] * x
        if t > 0 and noise is not None:
            return mean + c.std[t] * noise
        return mean

    def sample(
        self,
        denoiser: Denoiser,
        obs: torch.Tensor,
        action_dim: int,
        generator: torch.Generator | None = None,
        chain_noise: bool = True,
        noise: torch.Tensor | None = None,
    ) -> ChainTrace:
        """Run all T steps. `chain_noise=False` zeroes the per-step posterior noise (a deterministic chain
        from fixed initial noise). `noise` [>= T, B, A] (draw_chain_noise's layout) supplies all of it; else it is
        drawn from `generator` step by step."""
        if noise is None:
            noise = draw_chain_noise(self.num_steps, obs, action_dim, generator, chain_noise=chain_noise)
        x = noise[0]
        visited, eps_seen = [], []
        for k, t in enumerate(reversed(range(self.num_steps))):
            eps = denoiser(obs, x, t)
            visited.append(x)
            eps_seen.append(eps)
            x = self.step(x, eps, t, noise[k + 1] if chain_noise and t > 0 else None)
        return ChainTrace(action=x, visited=torch.stack(visited), eps=torch.stack(eps_seen))


def draw_chain_noise(
    num_steps: int, obs: torch.Tensor, action_dim: int, generator: torch.Generator | None = None, *,
    chain_noise: bool = True, exploration_row: bool = False, draw_exploration: bool = False,
) -> torch.Tensor:
    """Every random number of one pass of the chain for the states `obs`, as a block [T, B, A] in the op's dtype
    and device: row 0 is the initial sample x_{T-1}, row k the posterior noise z of step T-1-k, and with
    `exploration_row` a row T for the executed action's xi. The fused ops and an exported file take this layout.

    The rows are drawn one by one in the order the chain consumes them, and only those that are used: the chain
    rows that `chain_noise=False` switches off stay zero, and so does the exploration row unless
    `draw_exploration` (drawn last, as the training agent draws its xi after the chain). Seeded runs, checkpoints
    and both agent backends reproduce this order (dacer2/algo/acting.py).
    """
    rows = num_steps + int(exploration_row)
    noise = obs.new_zeros((rows, obs.shape[0], action_dim))
    for k in range(num_steps if chain_noise else 1):
        noise[k].normal_(generator=generator)  # the same numbers torch.randn(B, A) would draw here
    if exploration_row and draw_exploration:
        noise[num_steps].normal_(generator=generator)
    return noise


def add_exploration_noise(
    action: torch.Tensor, alpha: torch.Tensor | float, noise_scale: float,
    generator: torch.Generator | None = None, xi: torch.Tensor | None = None,
) -> torch.Tensor:
    """DACER's entropy regulator on the executed action: clip(x + alpha * k * xi, -1, 1); xi is drawn from
    `generator` unless given (the Policy and the exported file pass their pre-drawn noise row)."""
    if xi is None:
        xi = torch.randn(action.shape, device=action.device, dtype=action.dtype, generator=generator)
    return (action + alpha * noise_scale * xi).clamp(-1.0, 1.0)


def sinusoidal_embedding(t: torch.Tensor, dim: int, base: float = 10000.0) -> torch.Tensor:
    """Scaled sinusoidal encoding of step indices: [sin(t f_j), cos(t f_j)] / sqrt(dim), f_j = base^(-j / (dim/2))."""
    if dim % 2:
        raise ValueError(f"time embedding dim must be even, got {dim}")
    half = dim // 2
    freqs = torch.exp(-math.log(base) * torch.arange(half, dtype=t.dtype, device=t.device) / half)
    angles = t[:, None] * freqs[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=-1) / math.sqrt(dim)
