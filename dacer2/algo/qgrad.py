"""L_g, the Q-gradient field loss (docs/algorithm.md §3), written once: the reference backend computes it with
these functions and the dacer2::qgrad_loss op's twin is them, so the fused kernels are checked against the same
definition the agent trains with."""

from __future__ import annotations

import torch

GRAD_NORM_EPS = 1e-8  # g_hat = g / (||g|| + 1e-8)


def qgrad_target(grad_q: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """u_t = -w(t) g_t / (||g_t|| + 1e-8) per sample: grad_q [T, B, A] (rows in visit order), weight [T]. The predicted
    noise points against the direction that raises Q, so removing it moves x up the Q landscape."""
    grad_unit = grad_q / (grad_q.norm(dim=-1, keepdim=True) + GRAD_NORM_EPS)
    return -weight[:, None, None] * grad_unit


def qgrad_loss(eps: torch.Tensor, grad_q: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """L_g = mean over steps, batch and action dims of (eps_theta - u_t)^2; eps [T, B, A] as L_g sees it."""
    return (eps - qgrad_target(grad_q, weight)).pow(2).mean()
