import math

import pytest
import torch

from dacer2.algo.diffusion import DiffusionSchedule, ReverseChain, draw_chain_noise, sinusoidal_embedding, temporal_weight


def test_vp_schedule_T5_matches_spec():
    s = DiffusionSchedule.vp(5)
    assert torch.allclose(s.betas, torch.tensor([0.1959, 0.4588, 0.6358, 0.7549, 0.8350], dtype=torch.float64), atol=5e-5)
    # alpha_1 = exp(-0.1/5 - 0.5 * 9.9 / 25) from the closed form, and the products built from it.
    assert s.alphas[0].item() == pytest.approx(math.exp(-0.02 - 0.198), rel=1e-12)
    assert torch.allclose(s.alphas_cumprod, torch.cumprod(s.alphas, 0))
    assert s.alphas_cumprod_prev[0].item() == 1.0
    assert torch.allclose(s.alphas_cumprod_prev[1:], s.alphas_cumprod[:-1])
    # The last step's posterior variance is exactly zero and is clipped at log(1e-20).
    assert s.posterior_log_variance[0].item() == pytest.approx(math.log(1e-20))
    # At t = 0 the posterior mean is exactly x0_hat: c1 = 1, c2 = 0.
    assert s.posterior_mean_coef1[0].item() == pytest.approx(1.0)
    assert s.posterior_mean_coef2[0].item() == pytest.approx(0.0)
    t = 3
    expected_c1 = s.betas[t] * math.sqrt(s.alphas_cumprod_prev[t]) / (1 - s.alphas_cumprod[t])
    assert s.posterior_mean_coef1[t].item() == pytest.approx(expected_c1.item())


def closed_form_schedule(T: int, b_min: float = 0.1, b_max: float = 10.0) -> dict[str, list[float]]:
    """Every per-step constant of the VP schedule written out with scalar math, independently of DiffusionSchedule:
    alpha_i = exp(-b_min/T - (b_max - b_min)(2i - 1)/(2 T^2)), abar_i = prod_{j<=i} alpha_j, and the DDPM posterior
    q(x_{i-1} | x_i, x_0) = N(c1 x_0 + c2 x_i, beta_i (1 - abar_{i-1}) / (1 - abar_i))."""
    out = {k: [] for k in ("beta", "abar", "recip", "recipm1", "c1", "c2", "var", "logvar")}
    abar_prev = 1.0
    for i in range(1, T + 1):
        alpha = math.exp(-b_min / T - (b_max - b_min) * (2 * i - 1) / (2 * T * T))
        abar = abar_prev * alpha
        beta = 1.0 - alpha
        var = beta * (1.0 - abar_prev) / (1.0 - abar)
        out["beta"].append(beta)
        out["abar"].append(abar)
        out["recip"].append(1.0 / math.sqrt(abar))
        out["recipm1"].append(math.sqrt(1.0 / abar - 1.0))
        out["c1"].append(beta * math.sqrt(abar_prev) / (1.0 - abar))
        out["c2"].append((1.0 - abar_prev) * math.sqrt(alpha) / (1.0 - abar))
        out["var"].append(var)
        out["logvar"].append(math.log(max(var, 1e-20)))
        abar_prev = abar
    return out


@pytest.mark.parametrize("T", [1, 5, 20])
def test_every_schedule_coefficient_matches_its_closed_form(T):
    s, ref = DiffusionSchedule.vp(T), closed_form_schedule(T)
    got = {
        "beta": s.betas, "abar": s.alphas_cumprod, "recip": s.sqrt_recip_alphas_cumprod,
        "recipm1": s.sqrt_recipm1_alphas_cumprod, "c1": s.posterior_mean_coef1, "c2": s.posterior_mean_coef2,
        "var": torch.exp(s.posterior_log_variance), "logvar": s.posterior_log_variance,
    }
    for name, values in got.items():
        expected = torch.tensor(ref[name], dtype=torch.float64)
        if name == "var":  # exp(log 1e-20) is the clip, not the exact 0 of the last step
            expected = expected.clamp(min=1e-20)
        torch.testing.assert_close(values, expected, rtol=1e-12, atol=0.0, msg=f"T={T}: {name}")
    # The chain's own per-step noise std is the square root of that variance (0 at t = 0 where it is unused).
    chain = ReverseChain(s)
    for t in range(1, T):
        assert chain.coefficients.std[t] == pytest.approx(math.sqrt(ref["var"][t]), rel=1e-12)


def test_schedule_rejects_zero_steps():
    with pytest.raises(ValueError, match="at least one step"):
        DiffusionSchedule.vp(0)


def test_temporal_weight_values():
    w = temporal_weight(5)
    assert w[4].item() == pytest.approx(math.exp(0.2))  # noisiest step, largest weight
    assert w[0].item() == pytest.approx(math.exp(-1.4))  # last step, smallest weight
    assert torch.all(w[1:] > w[:-1])
    assert torch.equal(temporal_weight(5, enabled=False), torch.ones(5, dtype=torch.float64))
    assert temporal_weight(3, c=1.0, d=0.0)[2].item() == pytest.approx(math.exp(3.0))


def test_sinusoidal_embedding_is_scaled_sin_cos():
    emb = sinusoidal_embedding(torch.tensor([0.0, 2.0]), 16)
    assert emb.shape == (2, 16)
    assert torch.allclose(emb[0, :8], torch.zeros(8)) and torch.allclose(emb[0, 8:], torch.full((8,), 0.25))
    assert emb[1, 0].item() == pytest.approx(math.sin(2.0) / 4)
    assert emb[1, 9].item() == pytest.approx(math.cos(2.0 * 10000 ** (-1 / 8)) / 4)


def _linear_denoiser(obs, x, t):
    return 0.3 * x + 0.1 * obs[:, :1] + 0.05 * t


@pytest.mark.parametrize("T", [1, 5, 20])
def test_sampler_shape_range_and_seed(T):
    chain = ReverseChain(DiffusionSchedule.vp(T))
    obs = torch.randn(7, 4)
    out = chain.sample(_linear_denoiser, obs, 3, torch.Generator().manual_seed(1))
    assert out.action.shape == (7, 3)
    # The last step's mean is the clipped x0 estimate, so the chain ends inside the action box.
    assert out.action.abs().max() <= 1.0
    assert len(out.visited) == len(out.eps) == T and out.steps == list(reversed(range(T)))
    again = chain.sample(_linear_denoiser, obs, 3, torch.Generator().manual_seed(1))
    other = chain.sample(_linear_denoiser, obs, 3, torch.Generator().manual_seed(2))
    assert torch.equal(out.action, again.action)
    assert not torch.equal(out.action, other.action)


def test_chain_noise_switch():
    chain = ReverseChain(DiffusionSchedule.vp(5))
    obs, noise_a, noise_b = torch.randn(4, 2), torch.randn(5, 4, 3), torch.randn(5, 4, 3)
    noise_b[0] = noise_a[0]  # the same start x_{T-1}, other chain noise
    quiet_a = chain.sample(_linear_denoiser, obs, 3, chain_noise=False, noise=noise_a)
    quiet_b = chain.sample(_linear_denoiser, obs, 3, chain_noise=False, noise=noise_b)
    noisy = chain.sample(_linear_denoiser, obs, 3, chain_noise=True, noise=noise_a)
    assert torch.equal(quiet_a.action, quiet_b.action)  # no randomness left once the start is fixed
    assert not torch.allclose(quiet_a.action, noisy.action)


@pytest.mark.parametrize("chain_noise", [True, False])
def test_generator_draws_are_the_noise_block(chain_noise):
    """Drawn step by step, the chain's noise is one randn per row in the order the chain uses it (the training
    agent's draw order, which the fused backend reproduces by injecting draw_chain_noise's block)."""
    chain, obs = ReverseChain(DiffusionSchedule.vp(5)), torch.randn(7, 2)
    g = torch.Generator().manual_seed(4)
    rows = [torch.randn(7, 3, generator=g) for _ in range(5 if chain_noise else 1)]
    block = draw_chain_noise(5, obs, 3, torch.Generator().manual_seed(4), chain_noise=chain_noise)
    assert torch.equal(block[: len(rows)], torch.stack(rows)) and not block[len(rows):].any()
    drawn = chain.sample(_linear_denoiser, obs, 3, torch.Generator().manual_seed(4), chain_noise=chain_noise)
    given = chain.sample(_linear_denoiser, obs, 3, chain_noise=chain_noise, noise=block)
    assert torch.equal(drawn.action, given.action)


def test_chain_from_schedule_tensor_rows():
    """The ops' twins run ReverseChain over the rows of a [5, T] tensor: the same chain as the Python floats."""
    from dacer2.ops import schedule_tensor

    chain = ReverseChain(DiffusionSchedule.vp(5))
    obs, noise = torch.randn(6, 2, dtype=torch.float64), torch.randn(5, 6, 3, dtype=torch.float64)
    twin = ReverseChain.from_coefficients(schedule_tensor(chain, torch.float64))
    assert twin.num_steps == 5
    assert torch.equal(twin.sample(_linear_denoiser, obs, 3, noise=noise).action,
                       chain.sample(_linear_denoiser, obs, 3, noise=noise).action)


def test_chain_step_formula_by_hand():
    s = DiffusionSchedule.vp(5)
    chain = ReverseChain(s)
    x, eps, z, t = torch.tensor([[0.4]]), torch.tensor([[0.2]]), torch.tensor([[-0.5]]), 2
    x0 = (torch.sqrt(1 / s.alphas_cumprod[t]) * 0.4 - torch.sqrt(1 / s.alphas_cumprod[t] - 1) * 0.2).clamp(-1, 1)
    expected = s.posterior_mean_coef1[t] * x0 + s.posterior_mean_coef2[t] * 0.4 + torch.exp(0.5 * s.posterior_log_variance[t]) * -0.5
    assert chain.step(x, eps, t, z).item() == pytest.approx(expected.item(), rel=1e-6)
