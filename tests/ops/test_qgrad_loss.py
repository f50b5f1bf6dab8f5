"""dacer2::qgrad_loss (L_g of docs/algorithm.md §3: normalisation, w(t), squared error) and its gradient.
float32 tolerance: atol = rtol = 1e-6 (loss), 1e-6 (gradient)."""

import pytest
import torch

from dacer2.ops import ops, reference


def definition(eps, g, w):
    u = -w[:, None, None] * g / (g.norm(dim=-1, keepdim=True) + 1e-8)
    return (eps - u).pow(2).mean()


@pytest.mark.parametrize("T,B,A", [(1, 1, 1), (5, 7, 6), (20, 256, 17), (5, 256, 1)])
def test_value_and_gradient(T, B, A):
    eps = torch.randn(T, B, A, requires_grad=True)
    g = torch.randn(T, B, A)
    g[0, 0] = 0.0  # a zero gradient: the 1e-8 keeps u finite
    w = torch.rand(T)
    loss = ops.qgrad_loss(eps, g, w)
    expected = definition(eps, g, w)
    torch.testing.assert_close(loss, expected, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(torch.autograd.grad(loss, eps)[0], torch.autograd.grad(expected, eps)[0],
                               atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(reference.qgrad_loss(eps, g, w), expected)


def test_gradcheck_float64():
    eps = torch.randn(3, 4, 2, dtype=torch.float64, requires_grad=True)
    g, w = torch.randn(3, 4, 2, dtype=torch.float64), torch.rand(3, dtype=torch.float64)
    torch.autograd.gradcheck(lambda e: ops.qgrad_loss(e, g, w), (eps,))


def test_opcheck():
    eps, g, w = torch.randn(3, 4, 2, requires_grad=True), torch.randn(3, 4, 2), torch.rand(3)
    torch.library.opcheck(ops.qgrad_loss.default, (eps, g, w))
    torch.library.opcheck(ops.qgrad_loss_backward.default, (torch.tensor(1.5), eps.detach(), g, w))


def test_bad_inputs_raise_clear_errors():
    eps, g, w = torch.randn(3, 4, 2), torch.randn(3, 4, 2), torch.rand(3)
    with pytest.raises(RuntimeError, match="g must have shape"):
        ops.qgrad_loss(eps, g[:, :2].contiguous(), w)
    with pytest.raises(RuntimeError, match="weight must have shape"):
        ops.qgrad_loss(eps, g, torch.rand(4))
    with pytest.raises(RuntimeError, match="dtype"):
        ops.qgrad_loss(eps, g.double(), w)
    with pytest.raises(RuntimeError, match="contiguous"):
        ops.qgrad_loss(torch.randn(3, 2, 4).transpose(1, 2), g, w)
    with pytest.raises(RuntimeError, match="eps must be"):
        ops.qgrad_loss(eps[0], g[0], w)
    with pytest.raises(RuntimeError, match="g is on meta but obs is on cpu|g is on meta"):
        ops.qgrad_loss(eps, g.to("meta"), w)
