"""dacer2::critic_action_grad against autograd through the twin critic module (detached weights).

float32 tolerance: atol = rtol = 1e-5 on q and the action-gradient; float64: 1e-10.
"""

import pytest
import torch

from dacer2.ops import ops, reference

F32 = dict(atol=1e-5, rtol=1e-5)
MODES = {"min": 0, "mean": 1, "q1": 2}
# (N = T stacks, B, S, A)
SHAPES = [(1, 1, 17, 6), (5, 7, 4, 1), (20, 7, 348, 17), (5, 256, 17, 6), (1, 256, 348, 1), (20, 1, 4, 17)]


def module_q_and_grad(critic, obs, action, which):
    N, B, A = action.shape
    a = action.reshape(N * B, A).clone().requires_grad_(True)
    mu, _ = critic(obs.repeat(N, 1), a, detach_params=True)
    q = {"min": mu.min(0).values, "mean": mu.mean(0), "q1": mu[0]}[which]
    (g,) = torch.autograd.grad(q.sum(), a)
    return q.view(N, B), g.view(N, B, A)


@pytest.mark.parametrize("N,B,S,A", SHAPES)
@pytest.mark.parametrize("which", ["min", "mean", "q1"])
def test_matches_module_autograd(make_critic, N, B, S, A, which):
    c = make_critic(S, A)
    obs, action = torch.randn(B, S), torch.rand(N, B, A) * 2 - 1
    q, g = ops.critic_action_grad(obs, action, c.packed, c.dims, MODES[which])
    q_ref, g_ref = module_q_and_grad(c.net, obs, action, which)
    torch.testing.assert_close(q, q_ref, **F32)
    torch.testing.assert_close(g, g_ref, **F32)
    q_twin, g_twin = reference.critic_action_grad(obs, action, c.packed, c.dims, MODES[which])
    torch.testing.assert_close(q, q_twin, **F32)
    torch.testing.assert_close(g, g_twin, **F32)


def test_real_size_float64(make_critic):
    c = make_critic(17, 6, hidden=(256, 256, 256), dtype=torch.float64)
    obs = torch.randn(33, 17, dtype=torch.float64)
    action = torch.rand(5, 33, 6, dtype=torch.float64) * 2 - 1
    q, g = ops.critic_action_grad(obs, action, c.packed, c.dims, 0)
    q_ref, g_ref = module_q_and_grad(c.net, obs, action, "min")
    torch.testing.assert_close(q, q_ref, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(g, g_ref, atol=1e-10, rtol=1e-10)


def test_no_weight_gradients_and_constant_outputs(make_critic):
    c = make_critic(4, 2)
    packed = c.packed.clone().requires_grad_(True)
    action = torch.rand(3, 5, 2, requires_grad=True)
    q, g = ops.critic_action_grad(torch.randn(5, 4), action, packed, c.dims, 0)
    assert not q.requires_grad and not g.requires_grad  # a stop-gradient target by definition (docs/algorithm.md §3)


def test_opcheck(make_critic):
    c = make_critic(5, 3)
    for mode in (0, 1, 2):
        torch.library.opcheck(ops.critic_action_grad.default, (torch.randn(4, 5), torch.randn(2, 4, 3), c.packed, c.dims, mode))


def test_bad_inputs_raise_clear_errors(make_critic):
    c = make_critic(5, 3)
    obs, action = torch.randn(4, 5), torch.randn(2, 4, 3)
    with pytest.raises(RuntimeError, match="float32 or float64"):
        ops.critic_action_grad(obs.half(), action.half(), c.packed.half(), c.dims, 0)
    with pytest.raises(RuntimeError, match="dtype"):
        ops.critic_action_grad(obs, action.double(), c.packed, c.dims, 0)
    with pytest.raises(RuntimeError, match="contiguous"):
        ops.critic_action_grad(obs, torch.randn(2, 3, 4).transpose(1, 2), c.packed, c.dims, 0)
    with pytest.raises(RuntimeError, match="action must be"):
        ops.critic_action_grad(obs, torch.randn(2, 5, 3), c.packed, c.dims, 0)
    with pytest.raises(RuntimeError, match="critic packed must have shape"):
        ops.critic_action_grad(obs, action, c.packed[1:].contiguous(), c.dims, 0)
    with pytest.raises(RuntimeError, match="mode"):
        ops.critic_action_grad(obs, action, c.packed, c.dims, 3)
    with pytest.raises(RuntimeError, match="action is on meta but obs is on cpu"):
        ops.critic_action_grad(obs, action.to("meta"), c.packed, c.dims, 0)


@pytest.mark.parametrize("mode", [0, 1, 2])
def test_gradient_matches_finite_differences_float64(make_critic, mode):
    """The op's d q / d action against central differences of its own q (the float64 gradcheck of an op whose
    outputs are constants for autograd)."""
    c = make_critic(4, 3, hidden=(16, 16), dtype=torch.float64)
    obs = torch.randn(5, 4, dtype=torch.float64)
    action = torch.rand(2, 5, 3, dtype=torch.float64) * 2 - 1
    q, g = ops.critic_action_grad(obs, action, c.packed, c.dims, mode)
    h = 1e-6
    for a in range(3):
        step = torch.zeros_like(action)
        step[..., a] = h
        q_plus, _ = ops.critic_action_grad(obs, action + step, c.packed, c.dims, mode)
        q_minus, _ = ops.critic_action_grad(obs, action - step, c.packed, c.dims, mode)
        torch.testing.assert_close(g[..., a], (q_plus - q_minus) / (2 * h), atol=1e-7, rtol=1e-6)
