"""The agent with --backend fused against --backend reference: backend resolution, several full updates with
the same seed and noise, acting, and a short learning run.

Tolerance: parameters after each update within atol 2e-5 / rtol 1e-4 (float32; the chains' first step
amplifies rounding by sqrt(1/abar), and Adam's first steps move every weight by ~lr regardless of the
gradient's size, so equal updates mean equal parameters to rounding).
"""

import pytest
import torch

from dacer2.algo.agent import Batch, DACER2Agent
from dacer2.config import TrainConfig
from dacer2.ops import CPU_EXTENSION_ERROR, HAS_CPU_KERNELS, resolve_backend
from dacer2.ops._registry import SCHEMAS


def test_cpu_kernels_are_built_and_registered():
    """The install builds dacer2._C; without it every fused test below would silently compare the fallbacks."""
    assert HAS_CPU_KERNELS, f"dacer2._C did not import: {CPU_EXTENSION_ERROR}"
    for name in SCHEMAS:
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"dacer2::{name}", "CPU"), name


@pytest.fixture(autouse=True)
def one_thread():
    """These small networks gain nothing from a second thread, and on the shared 2-core machine OpenMP's
    barrier waits made the many tiny reference ops 10x slower under load."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def agents(**overrides):
    out = []
    for backend in ("reference", "fused"):
        cfg = TrainConfig(actor_hidden=(32, 32), critic_hidden=(32, 32), batch_size=16, entropy_states=4,
                          entropy_samples=20, backend=backend, **overrides).resolved()
        torch.manual_seed(cfg.seed)
        out.append(DACER2Agent(5, 3, cfg))
    assert (out[0].backend, out[1].backend) == ("reference", "fused")
    return out


def batch(i, n=16):
    g = torch.Generator().manual_seed(100 + i)
    return Batch(torch.randn(n, 5, generator=g), torch.rand(n, 3, generator=g) * 2 - 1, torch.randn(n, generator=g),
                 torch.randn(n, 5, generator=g), (torch.rand(n, generator=g) < 0.2).float())


def assert_same_state(ref, fused):
    for (name, a), b in zip(ref.named_parameters(), fused.parameters()):
        torch.testing.assert_close(b, a, atol=2e-5, rtol=1e-4, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("overrides", [dict(eta=1.0), dict(eta=0.01, qgrad_critic="mean", temporal_weighting=False),
                                       dict(eta=1.0, qgrad_critic="q1", qgrad_stop_gradient=False), dict(eta=0.0)],
                         ids=["eta1-min", "mean-no-weight", "q1-no-sg", "no-qgrad"])
def test_updates_equal_reference(overrides):
    ref, fused = agents(alpha_every=3, **overrides)
    for i in range(6):
        b = batch(i)
        m_ref, m_fused = ref.update(b), fused.update(b)
        assert_same_state(ref, fused)
        for key in m_ref:
            torch.testing.assert_close(m_fused[key], m_ref[key], atol=1e-4, rtol=1e-3, msg=lambda m: f"{key}: {m}")
    assert fused.num_updates == 6


def test_sample_policy_without_grad_matches_reference():
    ref, fused = agents(eta=1.0)
    obs = torch.randn(40, 5)
    with torch.no_grad():
        a, b = ref.sample_policy(obs), fused.sample_policy(obs)
    torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)
    # same generator draws consumed: the next draw agrees
    assert torch.equal(torch.randn(3, generator=ref.generator), torch.randn(3, generator=fused.generator))


def test_policy_chain_records_visited_states():
    ref, fused = agents(eta=1.0)
    obs = torch.randn(8, 5)
    a, b = ref.trace_chain(obs), fused.trace_chain(obs)
    assert b.visited.shape == a.visited.shape == b.eps.shape == (ref.head.chain.num_steps, 8, 3)
    for x, y in ((a.visited, b.visited), (a.eps, b.eps), (a.action, b.action)):
        torch.testing.assert_close(y, x, atol=1e-5, rtol=1e-5)


def test_act():
    _, fused = agents(deterministic_chain_noise=False)
    obs = torch.randn(7, 5)
    a = fused.act(obs)
    assert a.shape == (7, 3) and a.abs().max() <= 1 and not a.requires_grad
    assert not torch.equal(a, fused.act(obs))  # fresh noise per call
    state = fused.generator.get_state()
    d1 = fused.act(obs[:1], deterministic=True)
    fused.generator.set_state(state)
    assert torch.equal(d1, fused.act(obs[:1], deterministic=True))  # reproducible from the generator state


def test_backend_resolution(monkeypatch):
    monkeypatch.delenv("DACER2_BACKEND", raising=False)
    assert resolve_backend("reference") == "reference"
    assert resolve_backend("fused") == "fused"
    assert resolve_backend("auto", "cpu") == "fused"
    assert resolve_backend("auto", "cpu", activation="relu") == "reference"
    with pytest.raises(ValueError, match="mish"):
        resolve_backend("fused", activation="relu")
    monkeypatch.setenv("DACER2_BACKEND", "reference")
    assert resolve_backend("auto") == "reference"
    assert resolve_backend("fused") == "fused"  # an explicit choice wins over the env var
    monkeypatch.setenv("DACER2_BACKEND", "fast")
    with pytest.raises(ValueError, match="DACER2_BACKEND"):
        resolve_backend("auto")
    with pytest.raises(ValueError, match="unknown backend"):
        resolve_backend("gpu")


def test_short_training_learns_like_reference():
    """A one-state bandit with reward -||a - a*||^2 through full updates (critic + policy + L_g) on uniformly
    random actions: both backends move their deterministic actions toward a*, by the same amount."""
    peak = torch.tensor([0.5, -0.3, 0.2])
    results = {}
    for agent in agents(eta=1.0, actor_lr=3e-3, critic_lr=1e-2, initial_alpha=0.1, alpha_every=1000, delay=1,
                        reward_scale=1.0, gamma=0.5):
        g = torch.Generator().manual_seed(0)
        obs = torch.zeros(64, 5)

        def distance():
            return (agent.act(torch.zeros(256, 5), deterministic=True) - peak).norm(dim=-1).median().item()

        start = distance()
        for i in range(100):
            action = torch.rand(64, 3, generator=g) * 2 - 1
            agent.update(Batch(obs, action, -((action - peak) ** 2).sum(-1), obs, torch.ones(64)))
        results[agent.backend] = (start, distance())
    for start, end in results.values():
        assert end < start - 0.2, results
    assert abs(results["fused"][1] - results["reference"][1]) < 0.15, results
