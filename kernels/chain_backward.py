"""Triton training-chain backward: the CUDA kernel of dacer2::chain_backward.

Fuses, in ONE launch for all T steps (reverse order): the posterior step's backward through the clip, L_q's
gradient stream (which flows on to x_t) and L_g's (weights and obs only) stacked as two streams through the
mish MLP using the saved post-activations and mish', weight-gradient products on the streams' sum (shared, one
per layer and step), the step-bias and x-share gradients of layer 1, and at the end the observation share's
weight gradient and grad_obs from the layer-1 deltas summed over steps. Each program owns BLOCK_B rows and
accumulates its weight gradients into its own slice of a [programs, P] buffer; the wrapper sums the slices
(no atomics: deterministic).
Reference twin: dacer2.ops.reference.chain_backward (tests: tests/ops/test_triton_chain_backward.py under
TRITON_INTERPRET=1, plus the sm_90 AOT compile of the shipped config).
Measured gain on an NVIDIA H200 (torch 2.11.0+cu130, Triton 3.6.0, 2026-11-30;
benchmarks/results/cuda-nvidia-h200.md), against the eager reference in the same run, 3x256 mish, medians: backward
HalfCheetah dims (17/6) T=5 B=256 4.68 -> 1.86 ms (2.5x); T=20 B=256 17.5 -> 6.04 ms (2.9x); Humanoid dims (348/17)
T=20 B=256 15.4 -> 6.55 ms (2.4x). Supported: float32, every hidden layer the same width H (multiple of BLOCK_N);
else composed.py runs. """

from __future__ import annotations

import torch
import triton
import triton.language as tl

from dacer2.kernels.building_blocks import action_pad, aot_compile, packed_offsets, uniform_hidden_supported


@triton.jit
def _chain_backward_kernel(
    ga_ptr, gv_ptr, ge_ptr, obs_ptr, packed_ptr, sched_ptr, visited_ptr, eps_ptr, saved_h_ptr, saved_d_ptr,
    gobs_ptr, part_ptr, scratch_ptr, B,
    S: tl.constexpr, A: tl.constexpr, T: tl.constexpr, H: tl.constexpr, L: tl.constexpr, A_PAD: tl.constexpr,
    HAS_GV: tl.constexpr, HAS_GE: tl.constexpr, SG: tl.constexpr, TWO: tl.constexpr, P: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_N: tl.constexpr,
):
    pid = tl.program_id(0)
    rows = pid * BLOCK_B + tl.arange(0, BLOCK_B)
    rmask = rows < B
    rr = tl.arange(0, BLOCK_B)
    ca = tl.arange(0, A_PAD)
    amask = ca < A
    ra_mask = rmask[:, None] & amask[None, :]
    ra_idx = rows[:, None].to(tl.int64) * A + ca[None, :]
    W1O, W1X, SB, HID, WO, BO = packed_offsets(S, A, T, H, L)
    part = part_ptr + pid * P
    # scratch: [2 ping-pong][2 streams][BLOCK_B, H] deltas, [BLOCK_B, H] stream sum, [BLOCK_B, H] layer-1 acc
    BH: tl.constexpr = BLOCK_B * H
    scr = scratch_ptr + pid * 6 * BH
    SUM = scr + 4 * BH
    D1 = scr + 5 * BH
    for n0 in range(0, H, BLOCK_N):
        cn = n0 + tl.arange(0, BLOCK_N)
        tl.store(D1 + rr[:, None] * H + cn[None, :], tl.zeros((BLOCK_B, BLOCK_N), tl.float32))

    dx = tl.load(ga_ptr + ra_idx, mask=ra_mask, other=0.0)
    for j in range(T):
        k = T - 1 - j
        t = T - 1 - k
        step_h = saved_h_ptr + k * B * L * H
        step_d = saved_d_ptr + k * B * L * H
        xk = tl.load(visited_ptr + k * B * A + ra_idx, mask=ra_mask, other=0.0)
        ek = tl.load(eps_ptr + k * B * A + ra_idx, mask=ra_mask, other=0.0)
        cx = tl.load(sched_ptr + t)
        ce = tl.load(sched_ptr + T + t)
        c1 = tl.load(sched_ptr + 2 * T + t)
        c2 = tl.load(sched_ptr + 3 * T + t)
        v = cx * xk - ce * ek
        g0 = tl.where((v >= -1.0) & (v <= 1.0), c1 * dx, 0.0)
        gx = c2 * dx + cx * g0
        if HAS_GV:
            gx += tl.load(gv_ptr + k * B * A + ra_idx, mask=ra_mask, other=0.0)
        dq = -ce * g0
        dg = tl.zeros((BLOCK_B, A_PAD), tl.float32)
        if HAS_GE:
            gek = tl.load(ge_ptr + k * B * A + ra_idx, mask=ra_mask, other=0.0)
            if SG:
                dg = gek
            else:
                dq += gek
        total = dq + dg
        # ---- output layer: weight/bias gradients, then deltas of the last hidden layer ----
        hl = step_h + (L - 1) * B * H
        for k0 in range(0, H, BLOCK_K):
            ck = k0 + tl.arange(0, BLOCK_K)
            h_t = tl.load(hl + rows[None, :] * H + ck[:, None], mask=rmask[None, :], other=0.0)  # [BK, BB]
            tile_ptr = part + WO + ck[:, None] * A + ca[None, :]
            cur = tl.load(tile_ptr, mask=amask[None, :], other=0.0)
            tl.store(tile_ptr, cur + tl.dot(h_t, total, input_precision="ieee"), mask=amask[None, :])
        cur_b = tl.load(part + BO + ca, mask=amask, other=0.0)
        tl.store(part + BO + ca, cur_b + tl.sum(total, axis=0), mask=amask)
        dl = step_d + (L - 1) * B * H
        for n0 in range(0, H, BLOCK_N):
            cn = n0 + tl.arange(0, BLOCK_N)
            wo_t = tl.load(packed_ptr + WO + cn[None, :] * A + ca[:, None], mask=amask[:, None], other=0.0)  # [A_PAD, BN]
            d = tl.load(dl + rows[:, None] * H + cn[None, :], mask=rmask[:, None], other=0.0)
            s0 = tl.dot(dq, wo_t, input_precision="ieee") * d
            tl.store(scr + rr[:, None] * H + cn[None, :], s0)
            if TWO:
                s1 = tl.dot(dg, wo_t, input_precision="ieee") * d
                tl.store(scr + BH + rr[:, None] * H + cn[None, :], s1)
                s0 += s1
            tl.store(SUM + rr[:, None] * H + cn[None, :], s0)
        tl.debug_barrier()
        # ---- hidden layers L-1 .. 1 (W_i maps layer i-1 to layer i) ----
        for jj in range(0, L - 1):
            i = L - 1 - jj
            cur_buf = scr + ((jj % 2) * 2) * BH
            nxt_buf = scr + (((jj + 1) % 2) * 2) * BH
            wl = packed_ptr + HID + (i - 1) * (H * H + H)
            pw = part + HID + (i - 1) * (H * H + H)
            hprev = step_h + (i - 1) * B * H
            for k0 in range(0, H, BLOCK_K):  # dW_i[in-chunk, out-chunk] += h_{i-1}^T @ sum
                ck = k0 + tl.arange(0, BLOCK_K)
                h_t = tl.load(hprev + rows[None, :] * H + ck[:, None], mask=rmask[None, :], other=0.0)  # [BK, BB]
                for n0 in range(0, H, BLOCK_N):
                    cn = n0 + tl.arange(0, BLOCK_N)
                    sm = tl.load(SUM + rr[:, None] * H + cn[None, :])
                    tptr = pw + ck[:, None] * H + cn[None, :]
                    tl.store(tptr, tl.load(tptr) + tl.dot(h_t, sm, input_precision="ieee"))
            for n0 in range(0, H, BLOCK_N):
                cn = n0 + tl.arange(0, BLOCK_N)
                sm = tl.load(SUM + rr[:, None] * H + cn[None, :])
                tl.store(pw + H * H + cn, tl.load(pw + H * H + cn) + tl.sum(sm, axis=0))
            tl.debug_barrier()
            dprev = step_d + (i - 1) * B * H
            for n0 in range(0, H, BLOCK_N):  # delta_{i-1}[:, n-chunk] = (delta_i @ W_i^T)[:, n-chunk] * d_{i-1}
                cn = n0 + tl.arange(0, BLOCK_N)
                a0 = tl.zeros((BLOCK_B, BLOCK_N), tl.float32)
                a1 = tl.zeros((BLOCK_B, BLOCK_N), tl.float32)
                for k0 in range(0, H, BLOCK_K):
                    ck = k0 + tl.arange(0, BLOCK_K)
                    wt = tl.load(wl + cn[None, :] * H + ck[:, None])  # W_i[cn, ck] as [BK, BN]
                    a0 += tl.dot(tl.load(cur_buf + rr[:, None] * H + ck[None, :]), wt, input_precision="ieee")
                    if TWO:
                        a1 += tl.dot(tl.load(cur_buf + BH + rr[:, None] * H + ck[None, :]), wt, input_precision="ieee")
                d = tl.load(dprev + rows[:, None] * H + cn[None, :], mask=rmask[:, None], other=0.0)
                a0 = a0 * d
                tl.store(nxt_buf + rr[:, None] * H + cn[None, :], a0)
                if TWO:
                    a1 = a1 * d
                    tl.store(nxt_buf + BH + rr[:, None] * H + cn[None, :], a1)
                    a0 += a1
                tl.store(SUM + rr[:, None] * H + cn[None, :], a0)
            tl.debug_barrier()
        first = scr + (((L - 1) % 2) * 2) * BH  # stream deltas of layer 1
        # ---- layer 1: step bias, x share, obs-share accumulator, gradient into x_t (stream 0 only) ----
        x_t = tl.trans(xk)  # [A_PAD, BB]
        for n0 in range(0, H, BLOCK_N):
            cn = n0 + tl.arange(0, BLOCK_N)
            sm = tl.load(SUM + rr[:, None] * H + cn[None, :])
            dacc = tl.load(D1 + rr[:, None] * H + cn[None, :])
            tl.store(D1 + rr[:, None] * H + cn[None, :], dacc + sm)
            sbp = part + SB + t * H + cn
            tl.store(sbp, tl.load(sbp) + tl.sum(sm, axis=0))
            wxp = part + W1X + ca[:, None] * H + cn[None, :]
            tl.store(wxp, tl.load(wxp, mask=amask[:, None], other=0.0) + tl.dot(x_t, sm, input_precision="ieee"),
                     mask=amask[:, None])
            w1x_t = tl.load(packed_ptr + W1X + ca[None, :] * H + cn[:, None], mask=amask[None, :], other=0.0)  # [BN, A_PAD]
            gx += tl.dot(tl.load(first + rr[:, None] * H + cn[None, :]), w1x_t, input_precision="ieee")
        dx = tl.where(ra_mask, gx, 0.0)
        tl.debug_barrier()

    # ---- observation share: dW1o = obs^T @ D1, grad_obs = D1 @ w1o^T ----
    for k0 in range(0, S, BLOCK_K):
        ck = k0 + tl.arange(0, BLOCK_K)
        smask = ck < S
        o_t = tl.load(obs_ptr + rows[None, :] * S + ck[:, None], mask=rmask[None, :] & smask[:, None], other=0.0)
        go = tl.zeros((BLOCK_B, BLOCK_K), tl.float32)
        for n0 in range(0, H, BLOCK_N):
            cn = n0 + tl.arange(0, BLOCK_N)
            dacc = tl.load(D1 + rr[:, None] * H + cn[None, :])
            wp = part + W1O + ck[:, None] * H + cn[None, :]
            tl.store(wp, tl.load(wp, mask=smask[:, None], other=0.0) + tl.dot(o_t, dacc, input_precision="ieee"),
                     mask=smask[:, None])
            w1o_t = tl.load(packed_ptr + W1O + ck[None, :] * H + cn[:, None], mask=smask[None, :], other=0.0)  # [BN, BK]
            go += tl.dot(dacc, w1o_t, input_precision="ieee")
        tl.store(gobs_ptr + rows[:, None] * S + ck[None, :], go, mask=rmask[:, None] & smask[None, :])


CONFIGS = {"default": dict(BLOCK_B=32, BLOCK_K=32, BLOCK_N=64, num_warps=4)}


def supported(dims, dtype) -> bool:
    return uniform_hidden_supported(dims[3:], dtype)


def packed_numel(dims) -> int:
    S, A, T, *hidden = dims
    H, L = hidden[0], len(hidden)
    return (S + A + T) * H + (L - 1) * (H * H + H) + H * A + A


def constexprs(dims, has_gv, has_ge, sg, cfg) -> dict:
    S, A, T, *hidden = dims
    return dict(S=S, A=A, T=T, H=hidden[0], L=len(hidden), A_PAD=action_pad(A),
                HAS_GV=bool(has_gv), HAS_GE=bool(has_ge), SG=bool(sg), TWO=bool(has_ge and sg), P=packed_numel(dims),
                BLOCK_B=cfg["BLOCK_B"], BLOCK_K=cfg["BLOCK_K"], BLOCK_N=cfg["BLOCK_N"])


def launch(grad_action, grad_visited, grad_eps, obs, packed, dims, sched, visited, eps, saved_h, saved_d, sg,
           cfg=None):
    cfg = cfg or CONFIGS["default"]
    S, A, T, *hidden = dims
    B = obs.shape[0]
    grad_obs = torch.zeros_like(obs)
    if B == 0:
        return grad_obs, torch.zeros_like(packed)
    grid = (triton.cdiv(B, cfg["BLOCK_B"]),)
    partial = torch.zeros(grid[0], packed.numel(), dtype=torch.float32, device=obs.device)
    scratch = torch.empty(grid[0] * 6 * cfg["BLOCK_B"] * hidden[0], dtype=torch.float32, device=obs.device)
    gv = grad_visited if grad_visited is not None else grad_action
    ge = grad_eps if grad_eps is not None else grad_action
    _chain_backward_kernel[grid](grad_action, gv, ge, obs, packed, sched, visited, eps, saved_h, saved_d, grad_obs,
                                 partial, scratch, B,
                                 **constexprs(dims, grad_visited is not None, grad_eps is not None, sg, cfg),
                                 num_warps=cfg["num_warps"])
    return grad_obs, partial.sum(0)


def compile_for(target, dims, has_gv=False, has_ge=True, sg=True, cfg=None):
    """Ahead-of-time compile for `target` (no GPU needed)."""
    cfg = cfg or CONFIGS["default"]
    ptrs = ("ga_ptr", "gv_ptr", "ge_ptr", "obs_ptr", "packed_ptr", "sched_ptr", "visited_ptr", "eps_ptr",
            "saved_h_ptr", "saved_d_ptr", "gobs_ptr", "part_ptr", "scratch_ptr")
    arg_types = {**{p: "*fp32" for p in ptrs}, "B": "i32"}
    return aot_compile(_chain_backward_kernel, arg_types, constexprs(dims, has_gv, has_ge, sg, cfg), target,
                       cfg["num_warps"])
