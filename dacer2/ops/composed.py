"""The training chain's fused algorithm written with torch ops: the CUDA implementation of
dacer2::chain_forward / chain_backward wherever the Triton kernels are unavailable or do not support the shape
(no Triton installed, float64, unequal hidden widths). GEMMs go to cuBLAS; a step's elementwise work is a
handful of torch kernels. It is the C++ kernel's algorithm, not the reference twin's: the forward
saves post-activations and mish' of every layer (no recompute), the backward runs L_q's and L_g's gradient as
two stacked streams that share one weight-gradient GEMM per layer, the observation's share of layer 1 is
computed once, and its weight gradient is one GEMM over the summed layer-1 deltas of all steps.
Device-agnostic, so tests/ops/test_chain_composed.py checks it against the C++ kernel on CPU.

It also holds the device-agnostic kernels that every dispatch key falls back to where no compiled kernel is
registered (dacer2._C not built, a CUDA shape Triton does not support). Those run *below* autograd in the
dispatcher, where the reference twins' autograd-recompute would record nothing: so chain_backward and
critic_action_grad here write their backward passes out explicitly.
"""

from __future__ import annotations

import torch

from dacer2.algo.diffusion import ReverseChain
from dacer2.algo.networks import CRITIC_CHOICES, twin_value
from dacer2.algo.precision import addmm, addmm_, mm
from dacer2.ops.packing import critic_layers, unpack_denoiser
from dacer2.ops.reference import critic_forward, mish_and_grad


def critic_action_grad(obs, action, packed, dims, mode, gemm_dtype=None):
    """min/mean/q1 (mode 0/1/2) of the twin critic means and its gradient w.r.t. the action, backward written out.
    Layout of `packed` and `dims` as reference.critic_forward; action [N, B, A], obs [B, S]."""
    S, A = dims[:2]
    N, B = action.shape[:2]
    derivs = []

    def mish_saving_grad(z):
        h, d = mish_and_grad(z)
        derivs.append(d)
        return h

    mu = critic_forward(obs, action, packed, dims, mish_saving_grad, gemm_dtype).view(2, N * B)
    q = twin_value(mu, CRITIC_CHOICES[mode])
    if mode == 0:
        dq_dmu = torch.nn.functional.one_hot(mu.argmin(dim=0), 2).t().to(mu.dtype)
    elif mode == 1:
        dq_dmu = torch.full_like(mu, 0.5)
    else:
        dq_dmu = torch.stack([torch.ones_like(mu[0]), torch.zeros_like(mu[0])])
    weights = [w for w, _ in critic_layers(packed, dims)]
    delta = mu.new_zeros(2, N * B, 2)
    delta[..., 0] = dq_dmu
    for i in range(len(weights) - 1, 0, -1):
        delta = mm(delta, weights[i].transpose(1, 2), gemm_dtype) * derivs[i - 1]
    grad_in = mm(delta, weights[0].transpose(1, 2), gemm_dtype).sum(0)  # both critics feed the same input
    return q.view(N, B), grad_in[:, S:].reshape(N, B, A).contiguous()


def _layer_views(flat, dims, B):
    """Per-step lists of [B, H_l] views into a saved buffer laid out [T][layer][B, H_l]."""
    T, H = dims[2], dims[3:]
    views, off = [], 0
    for _ in range(T):
        row = []
        for h in H:
            row.append(flat[off : off + B * h].view(B, h))
            off += B * h
        views.append(row)
    return views


def chain_forward(obs, packed, dims, sched, noise, eps_stop_grad, gemm_dtype=None):
    S, A, T, *H = dims
    B = obs.shape[0]
    w1o, w1x, sb, hidden, wo, bo = unpack_denoiser(packed, dims)
    saved_h = obs.new_empty(T * B * sum(H))
    saved_d = obs.new_empty(T * B * sum(H))
    hv, dv = _layer_views(saved_h, dims, B), _layer_views(saved_d, dims, B)
    share = mm(obs, w1o, gemm_dtype)

    def denoise_saving(_, x, t):
        k = T - 1 - t
        h, d = mish_and_grad(addmm(share + sb[t], x, w1x, gemm_dtype))
        hv[k][0].copy_(h)
        dv[k][0].copy_(d)
        for i, (w, b) in enumerate(hidden, start=1):
            h, d = mish_and_grad(addmm(b, h, w, gemm_dtype))
            hv[k][i].copy_(h)
            dv[k][i].copy_(d)
        return addmm(bo, h, wo, gemm_dtype)

    out = ReverseChain.from_coefficients(sched).sample(denoise_saving, obs, A, noise=noise)
    return out.action, out.visited, out.eps, saved_h, saved_d


def chain_backward(grad_action, grad_visited, grad_eps, obs, packed, dims, sched, noise, visited, eps, saved_h,
                   saved_d, eps_stop_grad, gemm_dtype=None):
    S, A, T, *H = dims
    B = obs.shape[0]
    w1o, w1x, sb, hidden, wo, bo = unpack_denoiser(packed, dims)
    grad_packed = torch.zeros_like(packed)
    g_w1o, g_w1x, g_sb, g_hidden, g_wo, g_bo = unpack_denoiser(grad_packed, dims)
    hv, dv = _layer_views(saved_h, dims, B), _layer_views(saved_d, dims, B)
    two_streams = grad_eps is not None and eps_stop_grad
    dx = grad_action
    d1_acc = obs.new_zeros(B, H[0])
    for k in reversed(range(T)):
        t = T - 1 - k
        cx, ce, c1, c2 = sched[0, t], sched[1, t], sched[2, t], sched[3, t]
        v = cx * visited[k] - ce * eps[k]
        g0 = torch.where((v >= -1.0) & (v <= 1.0), c1 * dx, torch.zeros_like(dx))
        gx = c2 * dx + cx * g0
        if grad_visited is not None:
            gx = gx + grad_visited[k]
        d_q = -ce * g0
        if grad_eps is not None and not two_streams:
            d_q = d_q + grad_eps[k]
        if two_streams:
            streams = torch.stack([d_q, grad_eps[k]])  # [2, B, A]: L_q's (reaches x_t) and L_g's (weights only)
        else:
            streams = d_q[None]
        total = streams.sum(0)
        addmm_(g_wo, hv[k][-1].t(), total, gemm_dtype)
        g_bo.add_(total.sum(0))
        delta = mm(streams, wo.t(), gemm_dtype) * dv[k][-1]
        for i in range(len(H) - 1, 0, -1):
            total = delta.sum(0)
            w, _ = hidden[i - 1]
            g_w, g_b = g_hidden[i - 1]
            addmm_(g_w, hv[k][i - 1].t(), total, gemm_dtype)
            g_b.add_(total.sum(0))
            delta = mm(delta, w.t(), gemm_dtype) * dv[k][i - 1]
        total = delta.sum(0)
        d1_acc.add_(total)
        g_sb[t].add_(total.sum(0))
        addmm_(g_w1x, visited[k].t(), total, gemm_dtype)
        gx = gx + mm(delta[0], w1x.t(), gemm_dtype)
        dx = gx
    addmm_(g_w1o, obs.t(), d1_acc, gemm_dtype)
    return mm(d1_acc, w1o.t(), gemm_dtype), grad_packed
