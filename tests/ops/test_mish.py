"""dacer2::mish (the eager critic's activation on the fused backend in bf16): mish(x) and mish'(x) against aten's
F.mish and its autograd derivative, on the odd shapes, with the CPU kernel and the twin. float32 tolerance:
1e-6 on mish (one exp and a division instead of softplus + tanh), 1e-5 on the derivative (1 - tanh^2 cancels, and
the kernel's vectorised exp differs from aten's by a few ulp), far inside bf16's 4e-3."""

import pytest
import torch
import torch.nn.functional as F

from dacer2.config import TrainConfig
from dacer2.ops import HAS_CPU_KERNELS, ops, reference
from dacer2.ops.agent_backend import critic_activation

SHAPES = [(1, 4), (7, 17), (256, 348), (2, 7, 6), (2, 256, 1), (2, 1, 17)]


@pytest.mark.parametrize("shape", SHAPES)
def test_values_and_gradient_match_aten(shape):
    x = (torch.randn(shape) * 4).requires_grad_()  # past |x| = 8, where mish saturates on both sides
    x.data.view(-1)[0] = 25.0  # beyond the kernel's exp clamp at 20
    grad_out = torch.randn(shape)
    h, derivative = ops.mish(x)
    expected = F.mish(x)
    (expected_grad,) = torch.autograd.grad(expected, x, grad_out, retain_graph=True)
    torch.testing.assert_close(h, expected.detach(), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(derivative, torch.autograd.grad(expected.sum(), x)[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(torch.autograd.grad(h, x, grad_out)[0], expected_grad, rtol=1e-5, atol=1e-5)
    twin_h, twin_d = reference.mish(x.detach())
    torch.testing.assert_close(twin_h, h.detach(), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(twin_d, derivative, rtol=1e-5, atol=1e-5)


def test_gradcheck_float64_and_opcheck():
    x = torch.randn(3, 5, 7, dtype=torch.float64, requires_grad=True)
    torch.autograd.gradcheck(lambda v: ops.mish(v)[0], (x,))
    torch.library.opcheck(ops.mish.default, (torch.randn(4, 6, requires_grad=True),))


@pytest.mark.skipif(not HAS_CPU_KERNELS, reason="dacer2._C is not built: pip install --no-build-isolation -e .")
def test_the_cpu_kernel_is_the_one_that_runs():
    x = torch.randn(64, 33)
    with torch.profiler.profile() as prof:
        ops.mish(x)
    names = {e.key for e in prof.key_averages()}
    assert "dacer2::mish" in names and "aten::mish" not in names and "aten::softplus" not in names


def test_non_contiguous_input_is_refused():
    with pytest.raises(RuntimeError, match="contiguous"):
        ops.mish(torch.randn(8, 6).t())


@pytest.mark.parametrize("precision, fused", [("bf16", True), ("fp32", False)])
def test_only_the_bf16_critic_uses_the_fused_mish(precision, fused):
    cfg = TrainConfig(precision=precision, device="cpu").resolved()
    activation = critic_activation(cfg)
    x = torch.randn(5, 8)
    assert (activation != "mish") == fused  # fp32 keeps aten's mish, so its numerics never move
    if fused:
        torch.testing.assert_close(activation(x), F.mish(x), rtol=1e-6, atol=1e-6)
