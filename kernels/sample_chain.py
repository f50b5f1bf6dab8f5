"""Triton acting sampler: the CUDA kernel of dacer2::sample_chain.

Fuses, in ONE launch for all T steps: the observation's share of layer 1 (once per call), per step layer 1 =
share + step_bias[t] + x @ w1x_t, the hidden mish MLP, the output layer, the posterior update with in-kernel
chain noise, and the alpha-noise + clip. Each program owns BLOCK_B rows; layer outputs go through a small
per-program scratch buffer in global memory (L1/L2 resident) between layers because a layer's output columns
are produced in BLOCK_N chunks and the next layer reads them back in BLOCK_K chunks. The noise is the ops'
counter-based hash (dacer2/ops/reference.py: normal_noise), read from the rng tensor [seed, offset] in device
memory so a CUDA-graph replay draws fresh noise (the wrapper advances the offset with a device-side add).

Reference twin: dacer2.ops.reference.sample_chain (tests: tests/ops/test_triton_sample_chain.py, run under
TRITON_INTERPRET=1 on CPU, plus an ahead-of-time sm_90 compile of every shipped config).
Measured gain on an NVIDIA H200 (torch 2.11.0+cu130, Triton 3.6.0, 2026-11-30;
benchmarks/results/cuda-nvidia-h200.md), against the eager reference in the same run, 3x256 mish, medians:
HalfCheetah dims (17/6) T=5: B=1 1.22 -> 0.41 ms (3x), B=256 2.0 -> 0.60 ms (3.3x); Humanoid dims (348/17) T=20
B=256 7.1 -> 2.14 ms (3.3x). The eager chain captured in a CUDA graph is faster still at these sizes (0.18 ms at
B=1, 0.37 ms at B=256): the op's Python wrapper and launch dominate.

Supported: float32, every hidden layer the same width H (the default 3x256); anything else falls back to the
reference twin.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from dacer2.kernels.building_blocks import (action_pad, aot_compile, mish, packed_offsets, posterior_step,
                                            store_obs_share, uniform_hidden_supported)


@triton.jit
def _hash32(x):
    # x: uint32 tensor. lowbias32 (same constants as csrc/kernels.h and the torch twin).
    x = x ^ (x >> 16)
    x = x * 0x7FEB352D
    x = x ^ (x >> 15)
    x = x * tl.full(x.shape, 0x846CA68B, tl.uint32)
    x = x ^ (x >> 16)
    return x


@triton.jit
def _normal(seed_lo, offset, idx):
    """N(0,1) for 64-bit counters offset + idx (idx int64 tensor); seed_lo is a uint32 scalar."""
    n = offset + idx
    lo = (n & 0xFFFFFFFF).to(tl.uint32)
    hi = ((n >> 32) & 0xFFFFFFFF).to(tl.uint32)
    key = _hash32(seed_lo ^ _hash32(hi ^ 0x68BC21EB))
    a = _hash32(key ^ _hash32(lo))
    b = _hash32(a ^ tl.full(a.shape, 0x9E3779B9, tl.uint32))
    u1 = ((a >> 8) + 1).to(tl.float32) * 5.9604644775390625e-8
    u2 = (b >> 8).to(tl.float32) * 5.9604644775390625e-8
    return tl.sqrt(-2.0 * tl.log(u1)) * tl.cos(6.283185307179586 * u2)


@triton.jit
def _sample_chain_kernel(
    obs_ptr, packed_ptr, sched_ptr, alpha_ptr, rng_ptr, noise_ptr, out_ptr, scratch_ptr, B,
    S: tl.constexpr, A: tl.constexpr, T: tl.constexpr, H: tl.constexpr, L: tl.constexpr,
    A_PAD: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_N: tl.constexpr,
    HAS_NOISE: tl.constexpr, CHAIN_NOISE: tl.constexpr, EXPLORE: tl.constexpr,
):
    pid = tl.program_id(0)
    rows = pid * BLOCK_B + tl.arange(0, BLOCK_B)
    rmask = rows < B
    cols_a = tl.arange(0, A_PAD)
    amask = cols_a < A
    ra_mask = rmask[:, None] & amask[None, :]
    W1O, W1X, SB, HID, WO, BO = packed_offsets(S, A, T, H, L)
    # per-program scratch: [3, BLOCK_B, H] = obs share, ping, pong
    scr = scratch_ptr + pid * 3 * BLOCK_B * H
    rr = tl.arange(0, BLOCK_B)

    seed_lo = (tl.load(rng_ptr) & 0xFFFFFFFF).to(tl.uint32)
    offset = tl.load(rng_ptr + 1)
    ra_idx = rows[:, None].to(tl.int64) * A + cols_a[None, :]

    # ---- observation share of layer 1, once per call ----
    store_obs_share(obs_ptr, packed_ptr + W1O, rows, rmask, scr, S, H, BLOCK_B, BLOCK_K, BLOCK_N)
    tl.debug_barrier()

    # ---- initial x ----
    if HAS_NOISE:
        x = tl.load(noise_ptr + ra_idx, mask=ra_mask, other=0.0)
    else:
        x = _normal(seed_lo, offset, ra_idx)
    x = tl.where(ra_mask, x, 0.0)

    for k in range(T):
        t = T - 1 - k
        # layer 1 -> ping
        for n0 in range(0, H, BLOCK_N):
            cn = n0 + tl.arange(0, BLOCK_N)
            z = tl.load(scr + rr[:, None] * H + cn[None, :])
            z += tl.load(packed_ptr + SB + t * H + cn)[None, :]
            wx = tl.load(packed_ptr + W1X + cols_a[:, None] * H + cn[None, :], mask=amask[:, None], other=0.0)
            z += tl.dot(x, wx, input_precision="ieee")
            tl.store(scr + BLOCK_B * H + rr[:, None] * H + cn[None, :], mish(z))
        tl.debug_barrier()
        # hidden layers 2..L: ping <-> pong
        for l in range(1, L):
            src = scr + (1 + (l - 1) % 2) * BLOCK_B * H
            dst = scr + (1 + l % 2) * BLOCK_B * H
            wl = packed_ptr + HID + (l - 1) * (H * H + H)
            for n0 in range(0, H, BLOCK_N):
                cn = n0 + tl.arange(0, BLOCK_N)
                acc = tl.zeros((BLOCK_B, BLOCK_N), tl.float32) + tl.load(wl + H * H + cn)[None, :]
                for k0 in range(0, H, BLOCK_K):
                    ck = k0 + tl.arange(0, BLOCK_K)
                    h = tl.load(src + rr[:, None] * H + ck[None, :])
                    w = tl.load(wl + ck[:, None] * H + cn[None, :])
                    acc += tl.dot(h, w, input_precision="ieee")
                tl.store(dst + rr[:, None] * H + cn[None, :], mish(acc))
            tl.debug_barrier()
        # output layer from the last written buffer
        last = scr + (1 + (L - 1) % 2) * BLOCK_B * H
        eps = tl.zeros((BLOCK_B, A_PAD), tl.float32) + tl.load(packed_ptr + BO + cols_a, mask=amask, other=0.0)[None, :]
        for k0 in range(0, H, BLOCK_K):
            ck = k0 + tl.arange(0, BLOCK_K)
            h = tl.load(last + rr[:, None] * H + ck[None, :])
            w = tl.load(packed_ptr + WO + ck[:, None] * A + cols_a[None, :], mask=amask[None, :], other=0.0)
            eps += tl.dot(h, w, input_precision="ieee")
        x_new, sd = posterior_step(sched_ptr, t, T, x, eps)
        if CHAIN_NOISE:
            if t > 0:
                if HAS_NOISE:
                    z = tl.load(noise_ptr + (k + 1) * B * A + ra_idx, mask=ra_mask, other=0.0)
                else:
                    z = _normal(seed_lo, offset, (k + 1) * B * A + ra_idx)
                x_new += sd * z
        x = tl.where(ra_mask, x_new, 0.0)
        tl.debug_barrier()  # the next step overwrites ping/pong that this step's last reads came from

    if EXPLORE:
        if HAS_NOISE:
            xi = tl.load(noise_ptr + T * B * A + ra_idx, mask=ra_mask, other=0.0)
        else:
            xi = _normal(seed_lo, offset, T * B * A + ra_idx)
        x = tl.minimum(tl.maximum(x + tl.load(alpha_ptr) * xi, -1.0), 1.0)
    tl.store(out_ptr + ra_idx, x, mask=ra_mask)


# Shipped launch configurations (every one is compiled ahead of time for sm_90 by the tests).
CONFIGS = {
    "small_batch": dict(BLOCK_B=16, BLOCK_K=32, BLOCK_N=64, num_warps=4),
    "large_batch": dict(BLOCK_B=64, BLOCK_K=32, BLOCK_N=64, num_warps=4),
}


def supported(dims, dtype) -> bool:
    return uniform_hidden_supported(dims[3:], dtype)


def pick_config(batch: int) -> dict:
    return CONFIGS["small_batch" if batch <= 16 else "large_batch"]


def constexprs(dims, has_noise, chain_noise, explore, cfg) -> dict:
    S, A, T, *hidden = dims
    return dict(S=S, A=A, T=T, H=hidden[0], L=len(hidden), A_PAD=action_pad(A),
                BLOCK_B=cfg["BLOCK_B"], BLOCK_K=cfg["BLOCK_K"], BLOCK_N=cfg["BLOCK_N"], HAS_NOISE=bool(has_noise),
                CHAIN_NOISE=bool(chain_noise), EXPLORE=bool(explore))


def launch(obs, packed, dims, sched, alpha_scale, rng, noise, chain_noise, explore, cfg=None):
    """Run the kernel (on CUDA tensors, or CPU tensors under TRITON_INTERPRET=1). Advances rng like the op."""
    S, A, T, *hidden = dims
    B = obs.shape[0]
    cfg = cfg or pick_config(B)
    out = torch.empty(B, A, dtype=obs.dtype, device=obs.device)
    if B == 0:
        return out
    grid = (triton.cdiv(B, cfg["BLOCK_B"]),)
    scratch = torch.empty(grid[0] * 3 * cfg["BLOCK_B"] * hidden[0], dtype=torch.float32, device=obs.device)
    noise_arg = noise if noise is not None else obs  # unused pointer when HAS_NOISE is False
    _sample_chain_kernel[grid](
        obs, packed, sched, alpha_scale, rng, noise_arg, out, scratch, B,
        **constexprs(dims, noise is not None, chain_noise, explore, cfg), num_warps=cfg["num_warps"],
    )
    if noise is None:
        rng[1:].add_((T + 1) * B * A)  # device-side: capturable in a CUDA graph
    return out


POINTER_ARGS = dict(obs_ptr="*fp32", packed_ptr="*fp32", sched_ptr="*fp32", alpha_ptr="*fp32", rng_ptr="*i64",
                    noise_ptr="*fp32", out_ptr="*fp32", scratch_ptr="*fp32", B="i32")


def compile_for(target, dims, cfg, has_noise=False, chain_noise=True, explore=True):
    """Ahead-of-time compile of one config for `target` (a triton GPUTarget): no GPU needed. Used by the tests
    to catch shapes the real compiler rejects (the interpreter accepts tl.dot tiles it would not)."""
    consts = constexprs(dims, has_noise, chain_noise, explore, cfg)
    return aot_compile(_sample_chain_kernel, POINTER_ARGS, consts, target, cfg["num_warps"])
