"""Plain-PyTorch twins of every dacer2:: op: the test oracle, and the kernels registered for devices that have
no fused kernel (CompositeExplicitAutograd). Each twin takes the op's exact arguments and returns its outputs,
computed by the definitions the reference agent uses (ReverseChain's loop, add_exploration_noise, dacer2.algo.qgrad,
twin_value) on the op's packed buffers.

The in-op noise is a counter-based generator (so a kernel draws it from a seed/offset tensor, and a CUDA graph
replay draws fresh noise): draw n of a call is N(0,1) from hash(seed, offset + n), with a 32-bit integer hash
that C++, Triton and this twin compute bit-identically, then Box-Muller in the op's dtype. Only the last
float steps (log/cos) differ by rounding between implementations.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from dacer2.algo import qgrad
from dacer2.algo.diffusion import ReverseChain, add_exploration_noise
from dacer2.algo.networks import CRITIC_CHOICES, twin_value
from dacer2.algo.precision import addmm, mm
from dacer2.ops.packing import critic_layers, unpack_denoiser

MASK32 = 0xFFFFFFFF


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """(x * c) mod 2^32 for int64 x in [0, 2^32) without int64 overflow: split c into 16-bit halves."""
    lo, hi = c & 0xFFFF, c >> 16
    return ((x * lo) + (((x * hi) & 0xFFFF) << 16)) & MASK32


def hash32(x: torch.Tensor) -> torch.Tensor:
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def normal_noise(seed: int, offset: int, shape, dtype=torch.float32, device="cpu") -> torch.Tensor:
    """The ops' noise: element i (row-major) of the result is z(seed, offset + i)."""
    n = 1
    for s in shape:
        n *= s
    ctr = torch.arange(n, dtype=torch.int64, device=device) + offset
    lo, hi = ctr & MASK32, (ctr >> 32) & MASK32
    key = hash32((seed & MASK32) ^ hash32(hi ^ 0x68BC21EB))
    a = hash32(key ^ hash32(lo))
    b = hash32(a ^ 0x9E3779B9)
    u1 = ((a >> 8) + 1).to(torch.float32) * 2.0**-24
    u2 = (b >> 8).to(torch.float32) * 2.0**-24
    r = torch.sqrt(-2.0 * torch.log(u1.to(dtype)))
    return (r * torch.cos(2 * math.pi * u2.to(dtype))).view(shape)


def mish_and_grad(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """mish(z) = z tanh(softplus(z)) and its derivative from one exp, as the C++ and Triton kernels compute them
    (tanh(softplus(z)) = n / (n + 2) with n = e (e + 2), e = exp(z); beyond z = 20 both factors are 1 in float)."""
    e = torch.exp(z.clamp(max=20.0))
    n = e * (e + 2.0)
    tq = n / (n + 2.0)
    return z * tq, tq + z * (1.0 - tq * tq) * e / (1.0 + e)


def mish(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """dacer2::mish's twin: (mish(x), mish'(x))."""
    return mish_and_grad(x)


def denoise(obs_share: torch.Tensor, x: torch.Tensor, t: int, parts, save: list | None = None,
            gemm_dtype: torch.dtype | None = None) -> torch.Tensor:
    """eps_theta at step t from packed parts; obs_share = obs @ w1o_t (computed once per chain). With a gemm_dtype
    the matrix multiplies round to it (dacer2/algo/precision.py), the layer-1 action share (K = A) included."""
    _, w1x, sb, hidden, wo, bo = parts
    z = obs_share + mm(x, w1x, gemm_dtype) + sb[t]
    h = F.mish(z)
    if save is not None:
        save.append((h, mish_and_grad(z)[1]))
    for w, b in hidden:
        z = addmm(b, h, w, gemm_dtype)
        h = F.mish(z)
        if save is not None:
            save.append((h, mish_and_grad(z)[1]))
    return addmm(bo, h, wo, gemm_dtype)


def sample_chain(obs, packed, dims, sched, alpha_scale, rng, noise, chain_noise, explore, gemm_dtype=None,
                 packed_gemm=None):  # packed_gemm: a speed aid for compiled kernels; the twin casts per call
    S, A, T = dims[:3]
    B = obs.shape[0]
    if noise is None:
        seed, offset = (int(v) for v in rng.tolist())
        noise = normal_noise(seed, offset, (T + 1, B, A), obs.dtype, obs.device)
        rng[1] += (T + 1) * B * A
    with torch.no_grad():
        parts = unpack_denoiser(packed, dims)
        share = mm(obs, parts[0], gemm_dtype)
        chain = ReverseChain.from_coefficients(sched)
        x = chain.sample(lambda _, x, t: denoise(share, x, t, parts, None, gemm_dtype), obs, A, chain_noise=chain_noise,
                         noise=noise).action
        if explore:
            x = add_exploration_noise(x, alpha_scale, 1.0, xi=noise[T])
        return x.clone()


def _chain(obs, packed, dims, sched, noise, eps_stop_grad, save=None, gemm_dtype=None):
    """Differentiable chain. With eps_stop_grad, the returned eps are eps_theta(s, sg(x_t), t): same values,
    gradient only into the weights and obs (computed by a second denoiser pass here; the fused op avoids it)."""
    parts = unpack_denoiser(packed, dims)
    share = mm(obs, parts[0], gemm_dtype)
    eps_sg = []

    def denoiser(_, x, t):
        eps = denoise(share, x, t, parts, save, gemm_dtype)
        if eps_stop_grad:
            eps_sg.append(denoise(share, x.detach(), t, parts, None, gemm_dtype))
        return eps

    out = ReverseChain.from_coefficients(sched).sample(denoiser, obs, dims[1], noise=noise)
    return out.action, out.visited, torch.stack(eps_sg) if eps_stop_grad else out.eps


def chain_forward(obs, packed, dims, sched, noise, eps_stop_grad, gemm_dtype=None):
    save: list = []
    with torch.no_grad():
        action, visited, eps = _chain(obs, packed, dims, sched, noise, False, save, gemm_dtype)
    saved_h = torch.cat([h.reshape(-1) for h, _ in save])
    saved_d = torch.cat([d.reshape(-1) for _, d in save])
    return action, visited, eps, saved_h, saved_d


def chain_backward(grad_action, grad_visited, grad_eps, obs, packed, dims, sched, noise, visited, eps, saved_h,
                   saved_d, eps_stop_grad, gemm_dtype=None):
    with torch.enable_grad():
        obs_ = obs.detach().requires_grad_(True)
        packed_ = packed.detach().requires_grad_(True)
        action, vis, ep = _chain(obs_, packed_, dims, sched, noise, eps_stop_grad, gemm_dtype=gemm_dtype)
        outs, grads = [action], [grad_action]
        if grad_visited is not None:
            outs.append(vis)
            grads.append(grad_visited)
        if grad_eps is not None:
            outs.append(ep)
            grads.append(grad_eps)
        keep = [i for i, o in enumerate(outs) if o.requires_grad]  # e.g. visited of a 1-step chain is pure noise
        g_obs, g_packed = torch.autograd.grad([outs[i] for i in keep], [obs_, packed_], [grads[i] for i in keep],
                                              allow_unused=True)
    g_obs = torch.zeros_like(obs) if g_obs is None else g_obs
    g_packed = torch.zeros_like(packed) if g_packed is None else g_packed
    return g_obs, g_packed


def qgrad_loss(eps, g, weight):
    return qgrad.qgrad_loss(eps, g, weight)


def qgrad_loss_backward(grad, eps, g, weight):
    n = max(eps.numel(), 1)
    return grad * 2.0 * (eps - qgrad.qgrad_target(g, weight)) / n


def critic_forward(obs, action, packed, dims, activation=F.mish, gemm_dtype=None):
    """mu [2, N, B] of the twin critic from a packed buffer; action [N, B, A]. composed.py passes an `activation`
    that also records mish' for its explicit backward."""
    S, A = dims[:2]
    N, B = action.shape[:2]
    h = torch.cat([obs.expand(N, B, S), action], dim=-1).reshape(N * B, S + A)
    h = h.expand(2, -1, -1)
    layers = critic_layers(packed, dims)
    for i, (w, b) in enumerate(layers):
        h = addmm(b, h, w, gemm_dtype)
        if i < len(layers) - 1:
            h = activation(h)
    return h[..., 0].view(2, N, B)


def critic_action_grad(obs, action, packed, dims, mode, gemm_dtype=None):
    with torch.enable_grad():
        a = action.detach().requires_grad_(True)
        q = twin_value(critic_forward(obs.detach(), a, packed.detach(), dims, gemm_dtype=gemm_dtype),
                       CRITIC_CHOICES[mode])
        (g,) = torch.autograd.grad(q.sum(), a)
    return q.detach(), g
