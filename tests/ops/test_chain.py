"""dacer2::chain_forward / chain_backward (the training chain with autograd) against the module chain, the
reference twin, and float64 gradcheck.

Semantics under test: `eps` output k is eps_theta(s, sg(x_t), t) when eps_stop_grad (its gradient reaches the
weights and obs but not x_t: L_g of docs/algorithm.md §3), or the chain's own eps otherwise.
float32 tolerance: atol = rtol = 1e-4 on outputs and 2e-4 on gradients (the first step's sqrt(1/abar) ~ 12-60
amplifies rounding); float64: 1e-9.
"""

import pytest
import torch

from dacer2.ops import ops, pack_denoiser, reference

F32 = dict(atol=1e-4, rtol=1e-4)
G32 = dict(atol=2e-4, rtol=2e-4)
SHAPES = [(1, 17, 6, 5), (7, 4, 1, 1), (7, 348, 17, 20), (256, 17, 6, 5), (256, 4, 17, 1), (1, 348, 1, 20)]


def module_losses(d, obs, noise, probe_action, probe_eps, sg=True):
    """sum(probe_action * action) + sum(probe_eps * eps_sg) through the plain modules (autograd)."""
    emb = d.net.step_embeddings(d.T)
    eps_l = []

    def denoise(s, x, t):
        eps = d.net(s, x, emb[t])
        eps_l.append(d.net(s, x.detach(), emb[t]) if sg else eps)
        return eps

    action = d.chain.sample(denoise, obs, d.A, noise=noise).action
    return sum((probe_eps[k] * e).sum() for k, e in enumerate(eps_l)) + (probe_action * action).sum()


@pytest.mark.parametrize("B,S,A,T", SHAPES)
def test_forward_and_gradients_match_modules(make_denoiser, B, S, A, T):
    d = make_denoiser(S, A, T)
    obs = torch.randn(B, S, requires_grad=True)
    noise = torch.randn(T, B, A)
    probe_action, probe_eps = torch.randn(B, A), torch.randn(T, B, A)
    packed, dims = pack_denoiser(d.net, T)
    action, visited, eps, _, _ = ops.chain_forward(obs, packed, dims, d.sched, noise, True)
    with torch.no_grad():
        torch.testing.assert_close(action, d.module_chain(obs, noise), **F32)
    loss = (probe_action * action).sum() + (probe_eps * eps).sum()
    params = list(d.net.parameters())
    fused = torch.autograd.grad(loss, [obs, *params])
    ref = torch.autograd.grad(module_losses(d, obs, noise, probe_action, probe_eps), [obs, *params])
    for a, b in zip(fused, ref):
        torch.testing.assert_close(a, b, **G32)


@pytest.mark.parametrize("sg", [True, False])
@pytest.mark.parametrize("with_visited", [False, True])
def test_backward_matches_twin(make_denoiser, sg, with_visited):
    d = make_denoiser(5, 3, 4)
    obs, noise = torch.randn(9, 5), torch.randn(4, 9, 3)
    out = ops.chain_forward(obs, d.packed, d.dims, d.sched, noise, sg)
    twin = reference.chain_forward(obs, d.packed, d.dims, d.sched, noise, sg)
    for a, b in zip(out, twin):
        torch.testing.assert_close(a, b, **F32)
    ga, gv, ge = torch.randn(9, 3), torch.randn(4, 9, 3) if with_visited else None, torch.randn(4, 9, 3)
    args = (obs, d.packed, d.dims, d.sched, noise, out[1], out[2], out[3], out[4], sg)
    fused = ops.chain_backward(ga, gv, ge, *args)
    expected = reference.chain_backward(ga, gv, ge, *args)
    for a, b in zip(fused, expected):
        torch.testing.assert_close(a, b, **G32)
    # No L_g gradient: the single-stream path.
    fused = ops.chain_backward(ga, None, None, *args)
    expected = reference.chain_backward(ga, None, None, *args)
    for a, b in zip(fused, expected):
        torch.testing.assert_close(a, b, **G32)


def test_gradcheck_float64(make_denoiser):
    d = make_denoiser(3, 2, 3, hidden=(8, 8), dtype=torch.float64)
    obs = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    packed = d.packed.clone().requires_grad_(True)
    noise = torch.randn(3, 4, 2, dtype=torch.float64)
    # eps_stop_grad=False: every output is an ordinary function of (obs, packed).
    torch.autograd.gradcheck(lambda o, p: ops.chain_forward(o, p, d.dims, d.sched, noise, False)[:3], (obs, packed))
    # eps_stop_grad=True changes only eps's gradient: check action and visited by gradcheck, eps against the twin.
    torch.autograd.gradcheck(lambda o, p: ops.chain_forward(o, p, d.dims, d.sched, noise, True)[:2], (obs, packed))
    out = ops.chain_forward(obs, packed, d.dims, d.sched, noise, True)
    probe = torch.randn_like(out[2])
    fused = torch.autograd.grad((probe * out[2]).sum(), [obs, packed])
    o_, p_ = obs.detach().requires_grad_(True), packed.detach().requires_grad_(True)
    twin = reference._chain(o_, p_, d.dims, d.sched, noise, True)[2]
    expected = torch.autograd.grad((probe * twin).sum(), [o_, p_])
    for a, b in zip(fused, expected):
        torch.testing.assert_close(a, b, atol=1e-9, rtol=1e-9)


def test_real_size_gradients(make_denoiser):
    """HalfCheetah dims with the real 3x256 network, batch 64."""
    d = make_denoiser(17, 6, 5, hidden=(256, 256, 256))
    obs, noise = torch.randn(64, 17), torch.randn(5, 64, 6)
    packed, dims = pack_denoiser(d.net, 5)
    action, _, eps = ops.chain_forward(obs, packed, dims, d.sched, noise, True)[:3]
    pa, pe = torch.randn_like(action), torch.randn_like(eps) * 0.1
    params = list(d.net.parameters())
    fused = torch.autograd.grad((pa * action).sum() + (pe * eps).sum(), params)
    ref = torch.autograd.grad(module_losses(d, obs, noise, pa, pe), params)
    for a, b in zip(fused, ref):
        torch.testing.assert_close(a, b, atol=5e-4, rtol=5e-4)


def test_opcheck(make_denoiser):
    d = make_denoiser(5, 3, 3, hidden=(8, 8))
    for B in (1, 6):
        obs = torch.randn(B, 5, requires_grad=True)
        packed = d.packed.clone().requires_grad_(True)
        noise = torch.randn(3, B, 3)
        torch.library.opcheck(ops.chain_forward.default, (obs, packed, d.dims, d.sched, noise, True))
        out = ops.chain_forward(obs.detach(), d.packed, d.dims, d.sched, noise, True)
        torch.library.opcheck(ops.chain_backward.default,
                              (torch.randn(B, 3), None, torch.randn(3, B, 3), obs.detach(), d.packed, d.dims, d.sched,
                               noise, out[1], out[2], out[3], out[4], True))


def test_bad_inputs_raise_clear_errors(make_denoiser):
    d = make_denoiser(5, 3, 3, hidden=(8, 8))
    obs, noise = torch.randn(2, 5), torch.randn(3, 2, 3)
    with pytest.raises(RuntimeError, match="noise must have shape"):
        ops.chain_forward(obs, d.packed, d.dims, d.sched, torch.randn(4, 2, 3), True)
    with pytest.raises(RuntimeError, match="dtype"):
        ops.chain_forward(obs, d.packed, d.dims, d.sched, noise.double(), True)
    with pytest.raises(RuntimeError, match="contiguous"):
        ops.chain_forward(torch.randn(5, 2).t(), d.packed, d.dims, d.sched, noise, True)
    with pytest.raises(RuntimeError, match="noise is on meta but obs is on cpu"):
        ops.chain_forward(obs, d.packed, d.dims, d.sched, noise.to("meta"), True)
    out = ops.chain_forward(obs, d.packed, d.dims, d.sched, noise, True)
    with pytest.raises(RuntimeError, match="grad_eps must have shape"):
        ops.chain_backward(torch.randn(2, 3), None, torch.randn(2, 2, 3), obs, d.packed, d.dims, d.sched, noise,
                           out[1], out[2], out[3], out[4], True)
