"""Triton L_g (dacer2::qgrad_loss and its backward): the CUDA kernels.

Fuses, per block of (step, sample) rows: the action-gradient's norm, the normalisation g / (||g|| + 1e-8),
the temporal weight w_k, the squared error against eps and a per-program partial sum (forward), or the
gradient 2 (eps - u) * grad / (T B A) (backward). The eager reference spends ~8 kernels on this.
Reference twin: dacer2.ops.reference.qgrad_loss / qgrad_loss_backward (tests:
tests/ops/test_triton_qgrad_loss.py under TRITON_INTERPRET=1, plus the sm_90 AOT compile).
Measured gain: not benchmarked alone; on an NVIDIA H200 (2026-11-30) the whole policy loss L_q + eta L_g, forward
and backward, HalfCheetah dims T=5 B=256, takes 11.2 ms eager and 5.17 ms fused (2.2x;
benchmarks/results/cuda-nvidia-h200.md). """

from __future__ import annotations

import torch
import triton
import triton.language as tl

from dacer2.kernels.building_blocks import aot_compile


@triton.jit
def _residual_rows(eps_ptr, g_ptr, w_ptr, pid, R, B, A: tl.constexpr, A_PAD: tl.constexpr, BLOCK_R: tl.constexpr):
    """This program's rows of eps - u with the target u = -w_k g / (||g|| + 1e-8) (zero outside the shape), and
    their offsets and mask."""
    rows = pid * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = tl.arange(0, A_PAD)
    rmask = rows < R
    mask = rmask[:, None] & (cols[None, :] < A)
    offs = rows[:, None].to(tl.int64) * A + cols[None, :]
    g = tl.load(g_ptr + offs, mask=mask, other=0.0)
    e = tl.load(eps_ptr + offs, mask=mask, other=0.0)
    w = tl.load(w_ptr + rows // B, mask=rmask, other=0.0)
    scale = -w / (tl.sqrt(tl.sum(g * g, axis=1)) + 1e-8)
    return tl.where(mask, e - scale[:, None] * g, 0.0), offs, mask


@triton.jit
def _qgrad_loss_kernel(eps_ptr, g_ptr, w_ptr, partial_ptr, R, B, A: tl.constexpr, A_PAD: tl.constexpr,
                       BLOCK_R: tl.constexpr):
    pid = tl.program_id(0)
    d, _, _ = _residual_rows(eps_ptr, g_ptr, w_ptr, pid, R, B, A, A_PAD, BLOCK_R)
    tl.store(partial_ptr + pid, tl.sum(tl.sum(d * d, axis=1), axis=0))


@triton.jit
def _qgrad_loss_backward_kernel(grad_ptr, eps_ptr, g_ptr, w_ptr, out_ptr, R, B, inv_n, A: tl.constexpr,
                                A_PAD: tl.constexpr, BLOCK_R: tl.constexpr):
    pid = tl.program_id(0)
    d, offs, mask = _residual_rows(eps_ptr, g_ptr, w_ptr, pid, R, B, A, A_PAD, BLOCK_R)
    tl.store(out_ptr + offs, 2.0 * d * tl.load(grad_ptr) * inv_n, mask=mask)


CONFIGS = {"default": dict(BLOCK_R=128, num_warps=4)}


def constexprs(A, cfg) -> dict:
    return dict(A=A, A_PAD=triton.next_power_of_2(A), BLOCK_R=cfg["BLOCK_R"])


def _meta(eps, cfg):
    T, B, A = eps.shape
    return T * B, B, constexprs(A, cfg)


def loss(eps, g, weight, cfg=None):
    cfg = cfg or CONFIGS["default"]
    R, B, meta = _meta(eps, cfg)
    grid = (max(1, triton.cdiv(R, cfg["BLOCK_R"])),)
    partial = torch.zeros(grid[0], dtype=torch.float32, device=eps.device)
    if R:
        _qgrad_loss_kernel[grid](eps, g, weight, partial, R, B, **meta, num_warps=cfg["num_warps"])
    return (partial.sum() / max(eps.numel(), 1)).to(eps.dtype)


def loss_backward(grad, eps, g, weight, cfg=None):
    cfg = cfg or CONFIGS["default"]
    R, B, meta = _meta(eps, cfg)
    out = torch.empty_like(eps)
    if R:
        grid = (triton.cdiv(R, cfg["BLOCK_R"]),)
        _qgrad_loss_backward_kernel[grid](grad, eps, g, weight, out, R, B, 1.0 / max(eps.numel(), 1), **meta,
                                          num_warps=cfg["num_warps"])
    return out


def compile_for(target, A, cfg=None, backward=False):
    """Ahead-of-time compile for `target` (no GPU needed)."""
    cfg = cfg or CONFIGS["default"]
    if backward:
        sig = dict(grad_ptr="*fp32", eps_ptr="*fp32", g_ptr="*fp32", w_ptr="*fp32", out_ptr="*fp32", R="i32",
                   B="i32", inv_n="fp32")
        fn = _qgrad_loss_backward_kernel
    else:
        sig = dict(eps_ptr="*fp32", g_ptr="*fp32", w_ptr="*fp32", partial_ptr="*fp32", R="i32", B="i32")
        fn = _qgrad_loss_kernel
    return aot_compile(fn, sig, constexprs(A, cfg), target, cfg["num_warps"])
