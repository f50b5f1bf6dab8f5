"""dacer2::sample_chain (acting) against its reference twin and the plain modules.

float32 tolerance: atol = rtol = 1e-4 (the chain's first step multiplies x by sqrt(1/abar) ~ 12-60, so
last-bit differences of the fused summation order are amplified before the clip); float64: 1e-10.
"""

import pytest
import torch

from dacer2.ops import new_rng_state, ops, reference

F32 = dict(atol=1e-4, rtol=1e-4)

# (B, S, A, T): every batch 1/7/256, obs 4/17/348, action 1/6/17 and T 1/5/20 appears at least once.
SHAPES = [(1, 17, 6, 5), (1, 4, 1, 1), (7, 348, 17, 20), (7, 17, 6, 5), (256, 4, 17, 5), (256, 348, 1, 1),
          (1, 348, 6, 20), (256, 17, 6, 20), (7, 4, 1, 1)]


def run(d, obs, alpha=0.3, rng=None, noise=None, chain_noise=True, explore=True):
    rng = new_rng_state(11) if rng is None else rng
    alpha = torch.tensor(alpha, dtype=d.dtype)
    return ops.sample_chain(obs, d.packed, d.dims, d.sched, alpha, rng, noise, chain_noise, explore)


@pytest.mark.parametrize("B,S,A,T", SHAPES)
def test_injected_noise_matches_modules_and_twin(make_denoiser, B, S, A, T):
    d = make_denoiser(S, A, T)
    obs = torch.randn(B, S)
    noise = torch.randn(T + 1, B, A)
    out = run(d, obs, noise=noise)
    with torch.no_grad():
        expected = (d.module_chain(obs, noise) + 0.3 * noise[T]).clamp(-1, 1)
    torch.testing.assert_close(out, expected, **F32)
    twin = reference.sample_chain(obs, d.packed, d.dims, d.sched, torch.tensor(0.3), new_rng_state(11), noise, True, True)
    torch.testing.assert_close(out, twin, **F32)


@pytest.mark.parametrize("B,S,A,T", SHAPES[:5])
def test_in_op_noise_matches_twin_and_advances(make_denoiser, B, S, A, T):
    d = make_denoiser(S, A, T)
    obs = torch.randn(B, S)
    rng, rng_ref = new_rng_state(5), new_rng_state(5)
    for _ in range(2):
        out = run(d, obs, rng=rng)
        twin = reference.sample_chain(obs, d.packed, d.dims, d.sched, torch.tensor(0.3), rng_ref, None, True, True)
        torch.testing.assert_close(out, twin, **F32)
    assert rng.tolist() == rng_ref.tolist() == [5, 2 * (T + 1) * B * A]


@pytest.mark.parametrize("B", [1, 3])
@pytest.mark.parametrize("S,A,T", [(17, 6, 5), (348, 17, 20)])
def test_small_batch_path_at_production_width(make_denoiser, B, S, A, T):
    """Below 16 rows the C++ op runs a per-row loop whose register-blocked inner part starts only at widths >= 64,
    so the default 3x256 network is checked here against the modules and the twin (in-op and injected noise)."""
    d = make_denoiser(S, A, T, hidden=(256, 256, 256))
    obs = torch.randn(B, S)
    noise = torch.randn(T + 1, B, A)
    with torch.no_grad():
        expected = (d.module_chain(obs, noise) + 0.3 * noise[T]).clamp(-1, 1)
    torch.testing.assert_close(run(d, obs, noise=noise), expected, **F32)
    rng, rng_ref = new_rng_state(3), new_rng_state(3)
    twin = reference.sample_chain(obs, d.packed, d.dims, d.sched, torch.tensor(0.3), rng_ref, None, True, True)
    torch.testing.assert_close(run(d, obs, rng=rng), twin, **F32)


def test_deterministic_switches(make_denoiser):
    d = make_denoiser(17, 6, 5)
    obs = torch.randn(7, 17)
    noise = torch.randn(6, 7, 6)
    with torch.no_grad():
        no_chain_noise = d.module_chain(obs, noise, chain_noise=False)
    torch.testing.assert_close(run(d, obs, noise=noise, chain_noise=False, explore=False), no_chain_noise, **F32)
    # alpha 0 with exploration on equals exploration off
    torch.testing.assert_close(run(d, obs, alpha=0.0, noise=noise), run(d, obs, noise=noise, explore=False), **F32)
    out = run(d, obs, alpha=5.0)
    assert out.abs().max() <= 1.0


def test_float64_matches_twin(make_denoiser):
    d = make_denoiser(17, 6, 5, dtype=torch.float64)
    for B in (1, 40):
        obs = torch.randn(B, 17, dtype=torch.float64)
        out = run(d, obs)
        twin = reference.sample_chain(obs, d.packed, d.dims, d.sched, torch.tensor(0.3, dtype=torch.float64),
                                      new_rng_state(11), None, True, True)
        torch.testing.assert_close(out, twin, atol=1e-10, rtol=1e-10)


def test_noise_statistics():
    z = reference.normal_noise(7, 123, (200_000,))
    assert abs(z.mean().item()) < 0.01
    assert abs(z.std().item() - 1.0) < 0.01
    assert abs(((z**4).mean() - 3.0).item()) < 0.1  # normal kurtosis
    assert abs(torch.corrcoef(torch.stack([z[:-1], z[1:]]))[0, 1].item()) < 0.01  # neighbours independent
    other_seed = reference.normal_noise(8, 123, (200_000,))
    assert abs(torch.corrcoef(torch.stack([z, other_seed]))[0, 1].item()) < 0.01
    shifted = reference.normal_noise(7, 124, (200_000,))  # offsets index one stream
    assert torch.equal(shifted[:-1], z[1:])
    # Tail mass: P(|z| > 3) = 0.0027
    assert abs((z.abs() > 3).float().mean().item() - 0.0027) < 0.0008
    big = reference.normal_noise(7, (1 << 32) - 5, (10,))  # the 64-bit counter crosses 2^32 without a repeat
    assert not torch.equal(big[5:], reference.normal_noise(7, 0, (5,)))


def test_in_op_noise_distribution_matches_randn(make_denoiser):
    """Actions with in-op noise are distributed like actions with torch.randn noise (same chain)."""
    d = make_denoiser(4, 2, 5)
    obs = torch.randn(1, 4).expand(4000, 4).contiguous()
    a = run(d, obs, alpha=0.5)
    b = run(d, obs, alpha=0.5, noise=torch.randn(6, 4000, 2))
    torch.testing.assert_close(a.mean(0), b.mean(0), atol=0.05, rtol=0)
    torch.testing.assert_close(a.std(0), b.std(0), atol=0.05, rtol=0)
    rows = run(d, torch.randn(1, 4).expand(2, 4).contiguous())
    assert not torch.equal(rows[0], rows[1])  # each row draws its own noise


def test_opcheck(make_denoiser):
    d = make_denoiser(5, 3, 4)
    for B in (1, 20):
        args = (torch.randn(B, 5), d.packed, d.dims, d.sched, torch.tensor(0.2), new_rng_state(1), None, True, True)
        torch.library.opcheck(ops.sample_chain.default, args)
        args = (torch.randn(B, 5), d.packed, d.dims, d.sched, torch.tensor(0.2), new_rng_state(1),
                torch.randn(5, B, 3), False, True)
        torch.library.opcheck(ops.sample_chain.default, args)


def test_bad_inputs_raise_clear_errors(make_denoiser):
    d = make_denoiser(5, 3, 4)
    obs = torch.randn(2, 5)
    alpha, rng = torch.tensor(0.2), new_rng_state(1)

    def call(obs=obs, packed=d.packed, dims=d.dims, sched=d.sched, alpha=alpha, rng=rng, noise=None):
        return ops.sample_chain(obs, packed, dims, sched, alpha, rng, noise, True, True)

    with pytest.raises(RuntimeError, match="float32 or float64"):
        call(obs=obs.half())
    with pytest.raises(RuntimeError, match="dtype"):
        call(obs=obs.double())
    with pytest.raises(RuntimeError, match="contiguous"):
        call(obs=torch.randn(5, 2).t())
    with pytest.raises(RuntimeError, match="obs must be"):
        call(obs=torch.randn(2, 6))
    with pytest.raises(RuntimeError, match="packed must have shape"):
        call(packed=d.packed[:-1].contiguous())
    with pytest.raises(RuntimeError, match="sched must have shape"):
        call(sched=d.sched[:, :2].contiguous())
    with pytest.raises(RuntimeError, match="rng must be"):
        call(rng=torch.tensor([1, 2], dtype=torch.int32))
    with pytest.raises(RuntimeError, match="noise must have shape"):
        call(noise=torch.randn(4, 2, 3))
    with pytest.raises(RuntimeError, match="packed is on meta but obs is on cpu"):
        call(packed=d.packed.to("meta"))
    with pytest.raises(RuntimeError, match="dims"):
        call(dims=[5, 3, 4])
