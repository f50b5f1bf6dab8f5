"""dacer2::qgrad_loss (L_g of docs/algorithm.md §3: normalisation, w(t), squared error) and its gradient.
float32 tolerance: atol = rtol = 1e-6 (loss), 1e-6 (gradient)."""

import math

import pytest
import torch

from dacer2.ops import ops, reference


def per_element(eps, g, w):
    """L_g and dL_g/d eps written element by element with Python floats: an oracle that shares no code (and no
    broadcasting) with the op or its twin."""
    T, B, A = eps.shape
    n = T * B * A
    loss, grad = 0.0, torch.empty(T, B, A, dtype=torch.float64)
    for t in range(T):
        for b in range(B):
            norm = math.sqrt(sum(float(g[t, b, i]) ** 2 for i in range(A)))
            for i in range(A):
                diff = float(eps[t, b, i]) + float(w[t]) * float(g[t, b, i]) / (norm + 1e-8)
                loss += diff * diff / n
                grad[t, b, i] = 2.0 * diff / n
    return loss, grad


def test_hand_computed_value_and_gradient():
    # g = (3, 4): |g| = 5, u = -0.5 (0.6, 0.8) = (-0.3, -0.4); eps - u = (1.3, 2.4)
    eps = torch.tensor([[[1.0, 2.0]]], requires_grad=True)
    loss = ops.qgrad_loss(eps, torch.tensor([[[3.0, 4.0]]]), torch.tensor([0.5]))
    assert loss.item() == pytest.approx((1.3**2 + 2.4**2) / 2, rel=1e-6)
    (grad,) = torch.autograd.grad(loss, eps)
    torch.testing.assert_close(grad, torch.tensor([[[1.3, 2.4]]]), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("T,B,A", [(1, 1, 1), (5, 7, 6), (20, 64, 17), (5, 256, 1)])
def test_value_and_gradient(T, B, A):
    eps = torch.randn(T, B, A, requires_grad=True)
    g = torch.randn(T, B, A)
    g[0, 0] = 0.0  # a zero gradient: the 1e-8 keeps u finite
    w = torch.rand(T)
    loss = ops.qgrad_loss(eps, g, w)
    expected_loss, expected_grad = per_element(eps.detach(), g, w)
    assert loss.item() == pytest.approx(expected_loss, rel=1e-5)
    torch.testing.assert_close(torch.autograd.grad(loss, eps)[0].double(), expected_grad, atol=1e-7, rtol=1e-5)
    assert reference.qgrad_loss(eps, g, w).item() == pytest.approx(expected_loss, rel=1e-5)


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
