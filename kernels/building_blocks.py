"""Pieces the Triton kernels share: mish (and mish'), layer 1's observation share, the posterior step, the shape
check and constexprs of the uniform-width MLP kernels, and the ahead-of-time compile the tests use.

The @triton.jit helpers are inlined into each kernel by the compiler, so sharing them costs nothing at run time.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def mish(z):
    e = tl.exp(tl.minimum(z, 20.0))
    n = e * (e + 2.0)
    return z * n / (n + 2.0)


@triton.jit
def mish_and_grad(z):
    """mish(z) and mish'(z) from one exp."""
    e = tl.exp(tl.minimum(z, 20.0))
    n = e * (e + 2.0)
    tq = n / (n + 2.0)
    return z * tq, tq + z * (1.0 - tq * tq) * e / (1.0 + e)


@triton.jit
def packed_offsets(S: tl.constexpr, A: tl.constexpr, T: tl.constexpr, H: tl.constexpr, L: tl.constexpr):
    """Where each block of the packed denoiser starts (layout: csrc/kernels.h): layer 1's obs rows, its action
    rows, the per-step biases, the hidden layers (weight then bias), the output weight, the output bias."""
    W1O = 0
    W1X = W1O + S * H
    SB = W1X + A * H
    HID = SB + T * H
    WO = HID + (L - 1) * (H * H + H)
    BO = WO + H * A
    return W1O, W1X, SB, HID, WO, BO


@triton.jit
def store_obs_share(obs_ptr, w1o_ptr, rows, rmask, dst, S: tl.constexpr, H: tl.constexpr, BLOCK_B: tl.constexpr,
                    BLOCK_K: tl.constexpr, BLOCK_N: tl.constexpr):
    """dst[BLOCK_B, H] = obs[rows] @ W1_obs: the part of layer 1 that is the same at every denoising step."""
    rr = tl.arange(0, BLOCK_B)
    for n0 in range(0, H, BLOCK_N):
        cn = n0 + tl.arange(0, BLOCK_N)
        acc = tl.zeros((BLOCK_B, BLOCK_N), tl.float32)
        for k0 in range(0, S, BLOCK_K):
            ck = k0 + tl.arange(0, BLOCK_K)
            o = tl.load(obs_ptr + rows[:, None] * S + ck[None, :], mask=rmask[:, None] & (ck[None, :] < S), other=0.0)
            w = tl.load(w1o_ptr + ck[:, None] * H + cn[None, :], mask=(ck[:, None] < S), other=0.0)
            acc += tl.dot(o, w, input_precision="ieee")
        tl.store(dst + rr[:, None] * H + cn[None, :], acc)


@triton.jit
def posterior_step(sched_ptr, t, T: tl.constexpr, x, eps):
    """The posterior mean c1 clip(cx x - ce eps) + c2 x of step t, and that step's noise std (sched rows: cx, ce,
    c1, c2, sd; see dacer2/ops/reference.py)."""
    cx = tl.load(sched_ptr + t)
    ce = tl.load(sched_ptr + T + t)
    c1 = tl.load(sched_ptr + 2 * T + t)
    c2 = tl.load(sched_ptr + 3 * T + t)
    sd = tl.load(sched_ptr + 4 * T + t)
    return c1 * tl.minimum(tl.maximum(cx * x - ce * eps, -1.0), 1.0) + c2 * x, sd


def uniform_hidden_supported(hidden, dtype) -> bool:
    """The MLP kernels tile every hidden layer by BLOCK_N=64 and need them all the same width, in float32."""
    return dtype == torch.float32 and len(set(hidden)) == 1 and hidden[0] % 64 == 0


def action_pad(A: int) -> int:
    """Action columns padded to a power of two of at least 16 (tl.dot's smallest tile)."""
    return max(16, triton.next_power_of_2(A))


def aot_compile(fn, arg_types: dict, consts: dict, target, num_warps: int):
    """Ahead-of-time compile of `fn` for `target` (a triton GPUTarget): no GPU needed. The tests use it to catch
    shapes the real compiler rejects (the interpreter accepts tl.dot tiles it would not)."""
    from triton.compiler import ASTSource

    signature = {**arg_types, **{k: "constexpr" for k in consts}}
    return triton.compile(ASTSource(fn=fn, signature=signature, constexprs=consts), target=target,
                          options=dict(num_warps=num_warps))
