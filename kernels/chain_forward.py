"""Triton training-chain forward: the CUDA kernel of dacer2::chain_forward (its backward on CUDA is
dacer2/ops/composed.py's chain_backward: cuBLAS GEMMs with the two-stream L_q/L_g algorithm).

Fuses, in ONE launch for all T steps: the observation's share of layer 1 (once), per step layer 1 = share +
step_bias[t] + x @ w1x_t, the hidden mish MLP with mish' computed from the same exp, the output layer and the
posterior update with the injected noise; it writes visited x_t, eps_t and, for the backward, every layer's
post-activation and mish' straight into the saved buffers, which double as the inter-layer storage (the next
layer reads its input back in BLOCK_K chunks). Only the obs share needs a scratch buffer.
Reference twin: dacer2.ops.reference.chain_forward (tests: tests/ops/test_triton_chain_forward.py under
TRITON_INTERPRET=1, plus the sm_90 AOT compile of every shipped config).
Measured gain on an NVIDIA H200 (torch 2.11.0+cu130, Triton 3.6.0, 2026-11-30;
benchmarks/results/cuda-nvidia-h200.md), against the eager reference in the same run, 3x256 mish, medians: forward
HalfCheetah dims (17/6) T=5 B=256 1.56 -> 1.40 ms (1.1x, launch-bound at this size); T=20 B=256 5.96 -> 2.54 ms
(2.3x); Humanoid dims (348/17) T=20 B=256 8.4 -> 2.7 ms (3.1x). Supported: float32, every hidden layer the same
width H (multiple of BLOCK_N); else composed.py runs. """

from __future__ import annotations

import torch
import triton
import triton.language as tl

from dacer2.kernels.building_blocks import (action_pad, aot_compile, mish_and_grad, packed_offsets, posterior_step,
                                            store_obs_share, uniform_hidden_supported)


@triton.jit
def _chain_forward_kernel(
    obs_ptr, packed_ptr, sched_ptr, noise_ptr, action_ptr, visited_ptr, eps_ptr, saved_h_ptr, saved_d_ptr,
    scratch_ptr, B,
    S: tl.constexpr, A: tl.constexpr, T: tl.constexpr, H: tl.constexpr, L: tl.constexpr, A_PAD: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_N: tl.constexpr,
):
    pid = tl.program_id(0)
    rows = pid * BLOCK_B + tl.arange(0, BLOCK_B)
    rmask = rows < B
    cols_a = tl.arange(0, A_PAD)
    amask = cols_a < A
    ra_mask = rmask[:, None] & amask[None, :]
    ra_idx = rows[:, None].to(tl.int64) * A + cols_a[None, :]
    W1O, W1X, SB, HID, WO, BO = packed_offsets(S, A, T, H, L)
    scr = scratch_ptr + pid * BLOCK_B * H
    rr = tl.arange(0, BLOCK_B)

    store_obs_share(obs_ptr, packed_ptr + W1O, rows, rmask, scr, S, H, BLOCK_B, BLOCK_K, BLOCK_N)
    tl.debug_barrier()

    x = tl.load(noise_ptr + ra_idx, mask=ra_mask, other=0.0)
    for k in range(T):
        t = T - 1 - k
        tl.store(visited_ptr + k * B * A + ra_idx, x, mask=ra_mask)
        step_h = saved_h_ptr + k * B * L * H  # this step's [L][B, H] blocks
        step_d = saved_d_ptr + k * B * L * H
        for n0 in range(0, H, BLOCK_N):
            cn = n0 + tl.arange(0, BLOCK_N)
            z = tl.load(scr + rr[:, None] * H + cn[None, :])
            z += tl.load(packed_ptr + SB + t * H + cn)[None, :]
            wx = tl.load(packed_ptr + W1X + cols_a[:, None] * H + cn[None, :], mask=amask[:, None], other=0.0)
            z += tl.dot(x, wx, input_precision="ieee")
            h, d = mish_and_grad(z)
            tl.store(step_h + rows[:, None] * H + cn[None, :], h, mask=rmask[:, None])
            tl.store(step_d + rows[:, None] * H + cn[None, :], d, mask=rmask[:, None])
        tl.debug_barrier()
        for l in range(1, L):
            src = step_h + (l - 1) * B * H
            wl = packed_ptr + HID + (l - 1) * (H * H + H)
            for n0 in range(0, H, BLOCK_N):
                cn = n0 + tl.arange(0, BLOCK_N)
                acc = tl.zeros((BLOCK_B, BLOCK_N), tl.float32) + tl.load(wl + H * H + cn)[None, :]
                for k0 in range(0, H, BLOCK_K):
                    ck = k0 + tl.arange(0, BLOCK_K)
                    hk = tl.load(src + rows[:, None] * H + ck[None, :], mask=rmask[:, None], other=0.0)
                    w = tl.load(wl + ck[:, None] * H + cn[None, :])
                    acc += tl.dot(hk, w, input_precision="ieee")
                h, d = mish_and_grad(acc)
                tl.store(step_h + l * B * H + rows[:, None] * H + cn[None, :], h, mask=rmask[:, None])
                tl.store(step_d + l * B * H + rows[:, None] * H + cn[None, :], d, mask=rmask[:, None])
            tl.debug_barrier()
        last = step_h + (L - 1) * B * H
        e = tl.zeros((BLOCK_B, A_PAD), tl.float32) + tl.load(packed_ptr + BO + cols_a, mask=amask, other=0.0)[None, :]
        for k0 in range(0, H, BLOCK_K):
            ck = k0 + tl.arange(0, BLOCK_K)
            hk = tl.load(last + rows[:, None] * H + ck[None, :], mask=rmask[:, None], other=0.0)
            w = tl.load(packed_ptr + WO + ck[:, None] * A + cols_a[None, :], mask=amask[None, :], other=0.0)
            e += tl.dot(hk, w, input_precision="ieee")
        tl.store(eps_ptr + k * B * A + ra_idx, e, mask=ra_mask)
        x_new, sd = posterior_step(sched_ptr, t, T, x, e)
        if t > 0:
            x_new += sd * tl.load(noise_ptr + (k + 1) * B * A + ra_idx, mask=ra_mask, other=0.0)
        x = tl.where(ra_mask, x_new, 0.0)
        tl.debug_barrier()
    tl.store(action_ptr + ra_idx, x, mask=ra_mask)


CONFIGS = {"default": dict(BLOCK_B=32, BLOCK_K=32, BLOCK_N=64, num_warps=4)}


def supported(dims, dtype) -> bool:
    return uniform_hidden_supported(dims[3:], dtype)


def constexprs(dims, cfg) -> dict:
    S, A, T, *hidden = dims
    return dict(S=S, A=A, T=T, H=hidden[0], L=len(hidden), A_PAD=action_pad(A),
                BLOCK_B=cfg["BLOCK_B"], BLOCK_K=cfg["BLOCK_K"], BLOCK_N=cfg["BLOCK_N"])


def launch(obs, packed, dims, sched, noise, cfg=None):
    cfg = cfg or CONFIGS["default"]
    S, A, T, *hidden = dims
    B = obs.shape[0]
    n = T * B * sum(hidden)
    new = lambda *shape: torch.empty(*shape, dtype=obs.dtype, device=obs.device)  # noqa: E731
    action, visited, eps, saved_h, saved_d = new(B, A), new(T, B, A), new(T, B, A), new(n), new(n)
    if B:
        grid = (triton.cdiv(B, cfg["BLOCK_B"]),)
        scratch = new(grid[0] * cfg["BLOCK_B"] * hidden[0])
        _chain_forward_kernel[grid](obs, packed, sched, noise, action, visited, eps, saved_h, saved_d, scratch, B,
                                    **constexprs(dims, cfg), num_warps=cfg["num_warps"])
    return action, visited, eps, saved_h, saved_d


def compile_for(target, dims, cfg=None):
    """Ahead-of-time compile for `target` (no GPU needed)."""
    cfg = cfg or CONFIGS["default"]
    ptrs = ("obs_ptr", "packed_ptr", "sched_ptr", "noise_ptr", "action_ptr", "visited_ptr", "eps_ptr",
            "saved_h_ptr", "saved_d_ptr", "scratch_ptr")
    arg_types = {**{p: "*fp32" for p in ptrs}, "B": "i32"}
    return aot_compile(_chain_forward_kernel, arg_types, constexprs(dims, cfg), target, cfg["num_warps"])
