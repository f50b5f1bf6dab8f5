"""The ops with gemm_dtype=torch.bfloat16 against the float32 reference twins, outputs and every gradient.

Errors are norm-wise, ||got - want|| / ||want||. Tolerance from bf16's 8-bit significand (torch.finfo(torch.bfloat16)
.eps = 2^-7): every GEMM rounds its two operands and its product once each, so a product carries a relative error
of a few eps/2; through T chain steps and L layers these add rather than multiply (each step's x0 clip and
posterior mix are contractions). Bound: BF16_TOL = 4 eps = 0.031 (measured worst 0.009).
Two gradients pass through a decision: the chain's x0 clip (a pre-clip value that bf16 moves across +-1 switches its
element's gradient on or off) and the min of the twin critics (a row whose two means bf16 reorders takes the other
critic's gradient). The chain's gradients get FLIP_TOL = 0.1 (measured worst 0.059, a handful of flipped elements
among T B A); the critic's min compares only rows whose twin means differ by more than 5% of their scale.
The other side: bf16 must actually round. Its results must differ from fp32 by more than FP32_NOISE = 1e-5, far
above fp32 rounding (< 1e-6 here) and far below bf16's (> 5e-4), so the test fails if bf16 silently runs in fp32;
and the fp32 call must stay within FP32_NOISE of the twin, so it fails if fp32 runs in bf16. An action that the
clip pins to +-1 is the same in any precision, so actions are checked for rounding where they are off the clip.
"""

import pytest
import torch

from dacer2.ops import composed, ops, reference

BF16 = torch.bfloat16
BF16_TOL = 4 * torch.finfo(BF16).eps
FLIP_TOL = 0.1
FP32_NOISE = 1e-5
ROWS_VS_GEMM = 1e-5  # acting's bf16 row loops against the bf16 GEMM path (measured worst 8e-8)
# (B, S, A, T): batch 1/7/256, obs 4/17/348, action 1/6/17
SHAPES = [(1, 17, 6, 5), (7, 4, 1, 1), (7, 348, 17, 5), (256, 17, 6, 5), (256, 4, 17, 2), (1, 348, 1, 20)]


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    got, want = got.detach(), want.detach()
    return float((got - want).norm() / want.norm().clamp_min(1e-30))


def assert_bf16(got: torch.Tensor, want32: torch.Tensor, label: str, tol: float = BF16_TOL,
                action: bool = False) -> None:
    """got (a bf16-GEMM result) is within `tol` of the fp32 result and measurably not it."""
    assert got.dtype == want32.dtype == torch.float32, label
    err = relative_error(got, want32)
    assert err <= tol, f"{label}: relative error {err:.2e} > {tol:.2e}"
    free = want32.abs() < 1 - 1e-6 if action else torch.ones_like(want32, dtype=torch.bool)
    if free.any():
        err = relative_error(got[free], want32[free])
        assert err > FP32_NOISE, f"{label}: relative error {err:.2e}: bf16 did not round, it ran in fp32"


def assert_fp32(got: torch.Tensor, want32: torch.Tensor, label: str) -> None:
    err = relative_error(got, want32)
    assert err <= FP32_NOISE, f"{label}: relative error {err:.2e}: fp32 ran at a lower precision"


def sample_args(d, B, seed=0):
    """Acting arguments whose action stays off the [-1, 1] clip (a clipped action is the same in any precision):
    half-scale noise and no exploration."""
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(B, d.S, generator=g)
    noise = 0.5 * torch.randn(d.T + 1, B, d.A, generator=g)
    return (obs, d.packed, d.dims, d.sched, torch.tensor(0.4), torch.tensor([3, 0]), noise, True, False)


@pytest.mark.parametrize("B,S,A,T", SHAPES[:-1] + [(1, 348, 17, 5)])  # (1, 348, 1, 20): its one action sits on the clip
def test_sample_chain(make_denoiser, B, S, A, T):
    d = make_denoiser(S, A, T)
    args = sample_args(d, B)
    want = reference.sample_chain(*args)
    assert (want.abs() < 1 - 1e-6).any(), "every action sits on the clip: this case could not see bf16's rounding"
    assert_fp32(ops.sample_chain(*args), want, "op fp32")
    gemm_path = ops.sample_chain(*args, BF16)
    assert_bf16(gemm_path, want, "op bf16", action=True)
    assert_bf16(reference.sample_chain(*args, BF16), want, "twin bf16", action=True)
    # With the weights already in bf16 (acting's cached copy) batches below 16 take the per-row loops, which round
    # what the GEMM path rounds: the two differ only by the order of fp32 sums (a bf16 product may land one ulp
    # apart), far below bf16's distance from fp32.
    rows = ops.sample_chain(*args, BF16, d.packed.to(BF16))
    assert_bf16(rows, want, "op bf16 with packed_gemm", action=True)
    assert relative_error(rows, gemm_path) <= ROWS_VS_GEMM, relative_error(rows, gemm_path)


def test_packed_gemm_must_be_packed_in_the_gemm_dtype(make_denoiser):
    d = make_denoiser(4, 2, 3)
    args = sample_args(d, 2)
    with pytest.raises(RuntimeError, match="packed_gemm must be packed cast to gemm_dtype"):
        ops.sample_chain(*args, None, d.packed.to(BF16))  # no gemm_dtype
    with pytest.raises(RuntimeError, match="packed_gemm must be packed cast to gemm_dtype"):
        ops.sample_chain(*args, BF16, d.packed.clone())  # fp32 storage
    with pytest.raises(RuntimeError, match="contiguous copy of packed"):
        ops.sample_chain(*args, BF16, d.packed[:-1].to(BF16))


def chain_outputs_and_grads(chain_forward, d, obs, noise, probes, gemm_dtype):
    """action, eps and the gradients of sum(probe * output) w.r.t. obs and the packed weights."""
    obs = obs.clone().requires_grad_(True)
    packed = d.packed.clone().requires_grad_(True)
    action, visited, eps, *_ = chain_forward(obs, packed, d.dims, d.sched, noise, True, gemm_dtype)
    loss = (probes[0] * action).sum() + (probes[1] * eps).sum() + (probes[2] * visited).sum()
    g_obs, g_packed = torch.autograd.grad(loss, [obs, packed])
    return {"action": action, "eps": eps, "grad obs": g_obs, "grad packed": g_packed}


class _TwinChain(torch.autograd.Function):
    """The reference twins' forward and backward as one differentiable function, so both paths get one driver."""

    @staticmethod
    def forward(ctx, obs, packed, dims, sched, noise, sg, gemm_dtype):
        out = reference.chain_forward(obs, packed, dims, sched, noise, sg, gemm_dtype)
        ctx.save_for_backward(obs, packed, sched, noise, *out[1:])
        ctx.dims, ctx.sg, ctx.gemm_dtype = dims, sg, gemm_dtype
        return out

    @staticmethod
    def backward(ctx, g_action, g_visited, g_eps, _h, _d):
        obs, packed, sched, noise, visited, eps, saved_h, saved_d = ctx.saved_tensors
        g_obs, g_packed = reference.chain_backward(g_action, g_visited, g_eps, obs, packed, ctx.dims, sched, noise,
                                                   visited, eps, saved_h, saved_d, ctx.sg, ctx.gemm_dtype)
        return g_obs, g_packed, None, None, None, None, None


@pytest.mark.parametrize("B,S,A,T", SHAPES)
def test_chain_forward_and_backward(make_denoiser, B, S, A, T):
    d = make_denoiser(S, A, T)
    obs, noise = torch.randn(B, S), torch.randn(T, B, A)
    probes = (torch.randn(B, A), torch.randn(T, B, A), torch.randn(T, B, A))
    want = chain_outputs_and_grads(_TwinChain.apply, d, obs, noise, probes, None)
    for name, value in chain_outputs_and_grads(ops.chain_forward, d, obs, noise, probes, None).items():
        assert_fp32(value, want[name], f"op fp32 {name}")
    paths = {"op": ops.chain_forward, "twin": _TwinChain.apply}
    for path, chain_forward in paths.items():
        for name, value in chain_outputs_and_grads(chain_forward, d, obs, noise, probes, BF16).items():
            assert_bf16(value, want[name], f"{path} bf16 {name}", FLIP_TOL if "grad" in name else BF16_TOL,
                        action=name == "action")


@pytest.mark.parametrize("B,S,A,T", SHAPES[:3])
def test_composed_chain_backward(make_denoiser, B, S, A, T):
    """composed.py (the CUDA fallback) with bf16 GEMMs, forward and explicit backward, against the fp32 twin."""
    d = make_denoiser(S, A, T)
    obs, noise, grad_action = torch.randn(B, S), torch.randn(T, B, A), torch.randn(B, A)
    grad_eps = torch.randn(T, B, A)
    out32 = reference.chain_forward(obs, d.packed, d.dims, d.sched, noise, True)
    want = reference.chain_backward(grad_action, None, grad_eps, obs, d.packed, d.dims, d.sched, noise, *out32[1:],
                                    True)
    out16 = composed.chain_forward(obs, d.packed, d.dims, d.sched, noise, True, BF16)
    assert_bf16(out16[0], out32[0], "composed bf16 action", action=True)
    assert_bf16(out16[2], out32[2], "composed bf16 eps")
    got = composed.chain_backward(grad_action, None, grad_eps, obs, d.packed, d.dims, d.sched, noise, *out16[1:], True,
                                  BF16)
    for name, g, w in zip(("grad obs", "grad packed"), got, want):
        assert_bf16(g, w, f"composed bf16 {name}", FLIP_TOL)


@pytest.mark.parametrize("N,B,S,A", [(1, 1, 17, 6), (5, 7, 4, 1), (5, 256, 348, 17), (20, 1, 4, 17)])
@pytest.mark.parametrize("mode", [0, 1, 2])
def test_critic_action_grad(make_critic, N, B, S, A, mode):
    c = make_critic(S, A)
    obs, action = torch.randn(B, S), torch.rand(N, B, A) * 2 - 1
    q32, g32 = reference.critic_action_grad(obs, action, c.packed, c.dims, mode)
    mu = reference.critic_forward(obs, action, c.packed, c.dims)  # [2, N, B]
    decided = (mu[0] - mu[1]).abs() > 0.05 * mu.abs().max() if mode == 0 else torch.ones_like(q32, dtype=torch.bool)
    q, g = ops.critic_action_grad(obs, action, c.packed, c.dims, mode)
    assert_fp32(q, q32, "op fp32 q")
    assert_fp32(g, g32, "op fp32 grad")
    for path, fn in {"op": ops.critic_action_grad, "twin": reference.critic_action_grad,
                     "composed": composed.critic_action_grad}.items():
        q, g = fn(obs, action, c.packed, c.dims, mode, BF16)
        assert_bf16(q, q32, f"{path} bf16 q")
        assert_bf16(g[decided], g32[decided], f"{path} bf16 grad")


def test_a_gemm_dtype_other_than_bf16_is_refused(make_denoiser):
    d = make_denoiser(4, 2, 3)
    with pytest.raises(RuntimeError, match="gemm_dtype"):
        ops.sample_chain(*sample_args(d, 2), torch.float16)


def test_opcheck_with_bf16(make_denoiser, make_critic):
    """Schema, fake kernels and autograd registration hold with the new argument."""
    d = make_denoiser(4, 2, 3)
    obs, noise = torch.randn(3, 4), torch.randn(3, 3, 2)
    torch.library.opcheck(ops.chain_forward.default,
                          (obs, d.packed.clone().requires_grad_(True), d.dims, d.sched, noise, True, BF16))
    c = make_critic(4, 2)
    torch.library.opcheck(ops.critic_action_grad.default, (obs, torch.randn(2, 3, 2), c.packed, c.dims, 0, BF16))
    for B in (1, 20):  # the row loops and the GEMM path
        torch.library.opcheck(ops.sample_chain.default, (*sample_args(d, B)[:6], None, True, True, BF16,
                                                         d.packed.to(BF16)))
