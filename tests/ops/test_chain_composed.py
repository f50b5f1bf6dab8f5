"""dacer2.ops.composed (the training chain's fused algorithm in torch ops, the CUDA implementation until a
Triton kernel exists) against the C++ kernel on CPU, float64 (tolerance 1e-10) and float32 (2e-4)."""

import pytest
import torch

from dacer2.ops import composed, ops


@pytest.mark.parametrize("B,S,A,T,hidden", [(1, 17, 6, 5, (32, 32)), (7, 4, 1, 1, (16,)), (9, 348, 17, 20, (32, 16, 8))])
@pytest.mark.parametrize("sg,with_visited", [(True, False), (False, True)])
def test_matches_cpp_kernel(make_denoiser, B, S, A, T, hidden, sg, with_visited):
    d = make_denoiser(S, A, T, hidden=hidden, dtype=torch.float64)
    obs, noise = torch.randn(B, S, dtype=torch.float64), torch.randn(T, B, A, dtype=torch.float64)
    out = composed.chain_forward(obs, d.packed, d.dims, d.sched, noise, sg)
    expected = ops.chain_forward(obs, d.packed, d.dims, d.sched, noise, sg)
    for a, b in zip(out, expected):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)
    ga = torch.randn(B, A, dtype=torch.float64)
    gv = torch.randn(T, B, A, dtype=torch.float64) if with_visited else None
    ge = torch.randn(T, B, A, dtype=torch.float64)
    args = (obs, d.packed, d.dims, d.sched, noise, *expected[1:], sg)
    for grad_eps in (ge, None):
        got = composed.chain_backward(ga, gv, grad_eps, *args)
        want = ops.chain_backward(ga, gv, grad_eps, *args)
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)


def test_float32(make_denoiser):
    d = make_denoiser(17, 6, 5)
    obs, noise = torch.randn(64, 17), torch.randn(5, 64, 6)
    out = ops.chain_forward(obs, d.packed, d.dims, d.sched, noise, True)
    for a, b in zip(composed.chain_forward(obs, d.packed, d.dims, d.sched, noise, True), out):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    args = (torch.randn(64, 6), None, torch.randn(5, 64, 6), obs, d.packed, d.dims, d.sched, noise, *out[1:], True)
    for a, b in zip(composed.chain_backward(*args), ops.chain_backward(*args)):
        torch.testing.assert_close(a, b, atol=2e-4, rtol=2e-4)


def test_registered_for_cuda():
    for op in ("chain_forward", "chain_backward"):
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"dacer2::{op}", "CUDA"), op
