"""Triton critic action-gradient: the CUDA kernel of dacer2::critic_action_grad.

Fuses, in one launch for a [N, B] stack of (state, action) pairs: both critics' forward (layer 1 from the obs
row and the action, mish and mish' from one exp, the hidden layers, the mu column of the output layer), the
min/mean/q1 selection, and the backward to the action only (no weight gradients: the deltas overwrite the
saved activations in a per-program scratch buffer, since only mish' is needed on the way back).
Reference twin: dacer2.ops.reference.critic_action_grad (tests: tests/ops/test_triton_critic_action_grad.py
under TRITON_INTERPRET=1, plus the sm_90 AOT compile of every shipped config).
Measured gain on an NVIDIA H200 (torch 2.11.0+cu130, Triton 3.6.0, 2026-11-30;
benchmarks/results/cuda-nvidia-h200.md), against the eager reference in the same run, 3x256 mish, medians:
HalfCheetah dims (17/6) B=256 over T=5 steps 1.18 -> 0.62 ms (1.9x); Humanoid dims (348/17) B=256 0.89 -> 0.64 ms
(1.4x). Supported: float32, every hidden layer the same width H (multiple of BLOCK_N); else the reference twin runs.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from dacer2.kernels.building_blocks import action_pad, aot_compile, mish_and_grad, uniform_hidden_supported


@triton.jit
def _critic_grad_kernel(
    obs_ptr, act_ptr, packed_ptr, q_ptr, g_ptr, scratch_ptr, M, B,
    S: tl.constexpr, A: tl.constexpr, H: tl.constexpr, L: tl.constexpr, MODE: tl.constexpr,
    A_PAD: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_N: tl.constexpr,
):
    pid = tl.program_id(0)
    rows = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    rmask = rows < M
    orow = rows % B
    rr = tl.arange(0, BLOCK_M)
    ca = tl.arange(0, A_PAD)
    amask = ca < A
    IN0: tl.constexpr = S + A
    # packed offsets: per layer weight [2, in, out] then bias [2, out]
    B0: tl.constexpr = 2 * IN0 * H
    HID: tl.constexpr = B0 + 2 * H
    WO: tl.constexpr = HID + (L - 1) * (2 * H * H + 2 * H)
    BO: tl.constexpr = WO + 2 * H * 2
    # scratch per program: [2 critics, L layers, 2 (h or delta, d), BLOCK_M, H]
    scr = scratch_ptr + pid * (2 * L * 2 * BLOCK_M * H)
    a_tile = tl.load(act_ptr + rows[:, None] * A + ca[None, :], mask=rmask[:, None] & amask[None, :], other=0.0)

    mu0 = tl.zeros((BLOCK_M,), tl.float32)
    mu1 = tl.zeros((BLOCK_M,), tl.float32)
    for c in tl.static_range(2):
        # ---- forward ----
        for n0 in range(0, H, BLOCK_N):
            cn = n0 + tl.arange(0, BLOCK_N)
            z = tl.zeros((BLOCK_M, BLOCK_N), tl.float32) + tl.load(packed_ptr + B0 + c * H + cn)[None, :]
            for k0 in range(0, S, BLOCK_K):
                ck = k0 + tl.arange(0, BLOCK_K)
                o = tl.load(obs_ptr + orow[:, None] * S + ck[None, :], mask=rmask[:, None] & (ck[None, :] < S),
                            other=0.0)
                w = tl.load(packed_ptr + c * IN0 * H + ck[:, None] * H + cn[None, :], mask=ck[:, None] < S,
                            other=0.0)
                z += tl.dot(o, w, input_precision="ieee")
            wa = tl.load(packed_ptr + c * IN0 * H + (S + ca[:, None]) * H + cn[None, :], mask=amask[:, None],
                         other=0.0)
            z += tl.dot(a_tile, wa, input_precision="ieee")
            h, d = mish_and_grad(z)
            base = scr + ((c * L + 0) * 2) * BLOCK_M * H
            tl.store(base + rr[:, None] * H + cn[None, :], h)
            tl.store(base + BLOCK_M * H + rr[:, None] * H + cn[None, :], d)
        tl.debug_barrier()
        for l in range(1, L):
            src = scr + ((c * L + l - 1) * 2) * BLOCK_M * H
            dst = scr + ((c * L + l) * 2) * BLOCK_M * H
            wl = packed_ptr + HID + (l - 1) * (2 * H * H + 2 * H) + c * H * H
            bl = packed_ptr + HID + (l - 1) * (2 * H * H + 2 * H) + 2 * H * H + c * H
            for n0 in range(0, H, BLOCK_N):
                cn = n0 + tl.arange(0, BLOCK_N)
                z = tl.zeros((BLOCK_M, BLOCK_N), tl.float32) + tl.load(bl + cn)[None, :]
                for k0 in range(0, H, BLOCK_K):
                    ck = k0 + tl.arange(0, BLOCK_K)
                    hk = tl.load(src + rr[:, None] * H + ck[None, :])
                    w = tl.load(wl + ck[:, None] * H + cn[None, :])
                    z += tl.dot(hk, w, input_precision="ieee")
                h, d = mish_and_grad(z)
                tl.store(dst + rr[:, None] * H + cn[None, :], h)
                tl.store(dst + BLOCK_M * H + rr[:, None] * H + cn[None, :], d)
            tl.debug_barrier()
        last = scr + ((c * L + L - 1) * 2) * BLOCK_M * H
        mu = tl.zeros((BLOCK_M,), tl.float32) + tl.load(packed_ptr + BO + c * 2)
        for k0 in range(0, H, BLOCK_K):
            ck = k0 + tl.arange(0, BLOCK_K)
            hk = tl.load(last + rr[:, None] * H + ck[None, :])
            wcol = tl.load(packed_ptr + WO + c * H * 2 + ck * 2)
            mu += tl.sum(hk * wcol[None, :], axis=1)
        if c == 0:
            mu0 = mu
        else:
            mu1 = mu

    # ---- selection ----
    if MODE == 0:
        first = mu0 <= mu1
        q = tl.where(first, mu0, mu1)
        coef0 = tl.where(first, 1.0, 0.0)
        coef1 = 1.0 - coef0
    elif MODE == 1:
        q = 0.5 * (mu0 + mu1)
        coef0 = tl.zeros((BLOCK_M,), tl.float32) + 0.5
        coef1 = coef0
    else:
        q = mu0
        coef0 = tl.zeros((BLOCK_M,), tl.float32) + 1.0
        coef1 = tl.zeros((BLOCK_M,), tl.float32)
    tl.store(q_ptr + rows, q, mask=rmask)

    # ---- backward to the action ----
    grad = tl.zeros((BLOCK_M, A_PAD), tl.float32)
    for c in tl.static_range(2):
        coef = coef0 if c == 0 else coef1
        last = scr + ((c * L + L - 1) * 2) * BLOCK_M * H
        for n0 in range(0, H, BLOCK_N):
            cn = n0 + tl.arange(0, BLOCK_N)
            wcol = tl.load(packed_ptr + WO + c * H * 2 + cn * 2)
            d = tl.load(last + BLOCK_M * H + rr[:, None] * H + cn[None, :])
            tl.store(last + rr[:, None] * H + cn[None, :], coef[:, None] * wcol[None, :] * d)
        tl.debug_barrier()
        for j in range(0, L - 1):
            i = L - 1 - j
            src = scr + ((c * L + i) * 2) * BLOCK_M * H  # delta_i [BLOCK_M, H] (out side of W_i)
            dst = scr + ((c * L + i - 1) * 2) * BLOCK_M * H  # becomes delta_{i-1}
            wl = packed_ptr + HID + (i - 1) * (2 * H * H + 2 * H) + c * H * H  # W_i [in=H, out=H]
            for n0 in range(0, H, BLOCK_N):
                cn = n0 + tl.arange(0, BLOCK_N)  # in-side columns
                acc = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
                for k0 in range(0, H, BLOCK_K):
                    ck = k0 + tl.arange(0, BLOCK_K)  # out-side
                    dk = tl.load(src + rr[:, None] * H + ck[None, :])
                    wt = tl.load(wl + cn[None, :] * H + ck[:, None])  # W_i[cn, ck] laid out as [BLOCK_K, BLOCK_N]
                    acc += tl.dot(dk, wt, input_precision="ieee")
                d = tl.load(dst + BLOCK_M * H + rr[:, None] * H + cn[None, :])
                tl.store(dst + rr[:, None] * H + cn[None, :], acc * d)
            tl.debug_barrier()
        first_l = scr + ((c * L + 0) * 2) * BLOCK_M * H
        for k0 in range(0, H, BLOCK_K):
            ck = k0 + tl.arange(0, BLOCK_K)
            dk = tl.load(first_l + rr[:, None] * H + ck[None, :])
            wat = tl.load(packed_ptr + c * IN0 * H + (S + ca[None, :]) * H + ck[:, None], mask=amask[None, :],
                          other=0.0)  # W0[S + a, ck] as [BLOCK_K, A_PAD]
            grad += tl.dot(dk, wat, input_precision="ieee")
    tl.store(g_ptr + rows[:, None] * A + ca[None, :], grad, mask=rmask[:, None] & amask[None, :])


CONFIGS = {"default": dict(BLOCK_M=32, BLOCK_K=32, BLOCK_N=64, num_warps=4)}


def supported(dims, dtype) -> bool:
    return uniform_hidden_supported(dims[2:], dtype)


def constexprs(dims, mode, cfg) -> dict:
    S, A, *hidden = dims
    return dict(S=S, A=A, H=hidden[0], L=len(hidden), MODE=int(mode), A_PAD=action_pad(A),
                BLOCK_M=cfg["BLOCK_M"], BLOCK_K=cfg["BLOCK_K"], BLOCK_N=cfg["BLOCK_N"])


def launch(obs, action, packed, dims, mode, cfg=None):
    cfg = cfg or CONFIGS["default"]
    S, A, *hidden = dims
    N, B = action.shape[:2]
    M = N * B
    q = torch.empty(N, B, dtype=obs.dtype, device=obs.device)
    g = torch.empty(N, B, A, dtype=obs.dtype, device=obs.device)
    if M == 0:
        return q, g
    grid = (triton.cdiv(M, cfg["BLOCK_M"]),)
    scratch = torch.empty(grid[0] * 2 * len(hidden) * 2 * cfg["BLOCK_M"] * hidden[0], dtype=torch.float32,
                          device=obs.device)
    _critic_grad_kernel[grid](obs, action, packed, q, g, scratch, M, B, **constexprs(dims, mode, cfg),
                              num_warps=cfg["num_warps"])
    return q, g


def compile_for(target, dims, mode, cfg=None):
    """Ahead-of-time compile for `target` (no GPU needed)."""
    cfg = cfg or CONFIGS["default"]
    arg_types = dict(obs_ptr="*fp32", act_ptr="*fp32", packed_ptr="*fp32", q_ptr="*fp32", g_ptr="*fp32",
                     scratch_ptr="*fp32", M="i32", B="i32")
    return aot_compile(_critic_grad_kernel, arg_types, constexprs(dims, mode, cfg), target, cfg["num_warps"])
