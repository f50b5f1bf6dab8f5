"""The deployment Policy: loads actor-only from a tiny trained checkpoint, acts in env bounds, and reproduces the
agent's actions given the same generator state and backend."""

import dataclasses
import subprocess
import sys

import numpy as np
import pytest
import torch

import dacer2
from dacer2.algo.agent import DACER2Agent
from dacer2.train.checkpoint import CheckpointError, load_checkpoint
from dacer2.config import TrainConfig
from dacer2.deploy.policy import PolicyInputError
from dacer2.train.trainer import train

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_config):
    tmp = tmp_path_factory.mktemp("policy")
    cfg = tiny_config(
        env_id="InvertedPendulum-v5", total_steps=200, learning_starts=100, eval_every=200, eval_episodes=1,
        alpha_every=50, run_dir=str(tmp / "run"), torch_threads=1,
    )
    return train(cfg).run_dir


def test_import_dacer2_is_light_and_exports_policy():
    code = "import sys, dacer2; assert 'torch' not in sys.modules; dacer2.Policy; assert 'torch' in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_act_shapes_and_bounds(run_dir):
    policy = dacer2.Policy.load(run_dir)
    assert policy.info.backend in ("fused", "reference")  # auto: the fastest available here
    np.testing.assert_allclose(policy.action_low, [-3.0])  # InvertedPendulum's own bounds, not [-1, 1]
    obs = np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32)
    single = policy.act(obs[0])
    assert single.shape == (1,) and single.dtype == np.float32
    for deterministic in (True, False):
        batch = policy.act(obs, deterministic=deterministic)
        assert batch.shape == (64, 1)
        assert np.all(batch >= -3.0) and np.all(batch <= 3.0)
    # alpha = 3 at init, k = 0.1: exploration noise of std 0.3 in [-1, 1], x3 in env units; actions must spread.
    assert policy.act(np.repeat(obs[:1], 64, 0), deterministic=False).std() > 0.1


def reference_rows(seed: int, T: int, B: int, A: int, explore: bool) -> torch.Tensor:
    """The reference backend's acting noise (dacer2/algo/acting.py): rows drawn one by one in the order of use, x_{T-1},
    the chain noise of steps T-1..1, then xi only when exploring (else that row stays zero)."""
    g = torch.Generator().manual_seed(seed)
    rows = [torch.randn(B, A, generator=g) for _ in range(T)]
    rows.append(torch.randn(B, A, generator=g) if explore else torch.zeros(B, A))
    return torch.stack(rows)


def test_policy_is_the_trained_actor_with_its_noise_rows(run_dir):
    """Policy.act = the trained agent's actor run through the chain by hand, on the noise rows the reference Policy
    draws, then rescaled to [-3, 3]."""
    payload = load_checkpoint(run_dir / "checkpoints" / "final.pt")
    config = dataclasses.replace(TrainConfig.from_dict(payload["config"]), backend="reference")
    agent = DACER2Agent(payload["obs_dim"], payload["action_dim"], config)
    agent.load_training_state(payload["agent"])
    T, alpha_k = agent.head.chain.num_steps, float(agent.log_alpha.exp()) * config.noise_scale
    policy = dacer2.Policy.load(run_dir / "checkpoints" / "final.pt", backend="reference")
    obs = np.random.default_rng(1).normal(size=(8, 4)).astype(np.float32)
    for deterministic in (True, False):
        policy.seed(123)
        got = policy.act(obs, deterministic=deterministic)
        noise = reference_rows(123, T, 8, 1, explore=not deterministic)
        with torch.no_grad():
            emb = agent.actor.step_embeddings(T)
            x = noise[0]
            for k, t in enumerate(reversed(range(T))):
                x = agent.head.chain.step(x, agent.actor(torch.from_numpy(obs), x, emb[t]), t, noise[k + 1])
            if not deterministic:
                x = (x + alpha_k * noise[T]).clamp(-1, 1)
        np.testing.assert_allclose(got, 3.0 * x.numpy(), rtol=1e-5, atol=1e-5)  # [-1, 1] -> [-3, 3]


@pytest.mark.parametrize("backend", ["reference", "fused"])
def test_agent_and_policy_act_alike_for_the_same_seed_and_backend(run_dir, backend):
    """Acting is written once per backend (dacer2/algo/acting.py): the training agent and the deployed Policy draw the
    same noise in the same order, so with the same seed they return the same actions."""
    payload = load_checkpoint(run_dir / "checkpoints" / "final.pt")
    config = dataclasses.replace(TrainConfig.from_dict(payload["config"]), backend=backend)
    agent = DACER2Agent(payload["obs_dim"], payload["action_dim"], config)
    agent.load_training_state(payload["agent"])
    assert agent.backend == backend
    policy = dacer2.Policy.load(run_dir, backend=backend)
    obs = torch.from_numpy(np.random.default_rng(3).normal(size=(6, 4)).astype(np.float32))
    for deterministic in (True, False, False):
        agent.generator.manual_seed(9)
        policy.seed(9)
        want = agent.act(obs, deterministic=deterministic)
        assert torch.equal(policy.act_normalized(obs, deterministic), want)
    # and the seed matters: another one gives other actions
    policy.seed(10)
    assert not torch.equal(policy.act_normalized(obs, False), want)


def test_same_seed_same_actions_and_loads_actor_only(run_dir):
    a = dacer2.Policy.load(run_dir, seed=7, backend="reference")
    b = dacer2.Policy.load(run_dir, seed=7, backend="reference")
    obs = np.zeros((4, 4), dtype=np.float32)
    np.testing.assert_array_equal(a.act(obs, deterministic=False), b.act(obs, deterministic=False))
    # Only the head is built: its actor, frozen; no critic, target critic or optimiser anywhere.
    from dacer2.algo.heads import DiffusionHead
    from dacer2.algo.networks import NoisePredictor

    assert isinstance(a.head, DiffusionHead) and isinstance(a.head.actor, NoisePredictor)
    assert not any(p.requires_grad for p in a.head.actor.parameters())
    assert not any(hasattr(a, name) for name in ("critic", "critic_target", "actor_optimizer"))
    fused = dacer2.Policy.load(run_dir, backend="fused")
    assert fused.head.backend == fused.info.backend == "fused" and a.head.backend == "reference"


def test_fused_and_reference_policies_agree_in_distribution(run_dir):
    """The backends draw their noise differently (dacer2/algo/acting.py), so they agree in distribution, not draw for
    draw: over many draws from one state the action means and spreads match."""
    reference = dacer2.Policy.load(run_dir, backend="reference", seed=5)
    fused = dacer2.Policy.load(run_dir, backend="fused", seed=5)
    assert (reference.info.backend, fused.info.backend) == ("reference", "fused")
    obs = np.repeat(np.random.default_rng(2).normal(size=(1, 4)).astype(np.float32), 4000, axis=0)
    for deterministic in (True, False):
        a, b = reference.act(obs, deterministic), fused.act(obs, deterministic)
        assert not np.array_equal(a, b)
        # standard errors of the mean ~0.3 / sqrt(4000) ~ 0.005 in env units
        assert abs(a.mean() - b.mean()) < 0.05 and abs(a.std() - b.std()) < 0.05 * max(a.std(), 0.1)
    with pytest.raises(ValueError, match="unknown backend"):
        dacer2.Policy.load(run_dir, backend="cuda-graphs")


def test_bad_observations_fail_clearly(run_dir):
    policy = dacer2.Policy.load(run_dir)
    with pytest.raises(PolicyInputError, match=r"shape \[4\] or \[N, 4\].*got \[3\]"):
        policy.act(np.zeros(3))
    with pytest.raises(PolicyInputError, match="shape"):
        policy.act(np.zeros((2, 2, 4)))
    with pytest.raises(PolicyInputError, match="NaN.*row 1, index 2"):
        policy.act(np.array([[0, 0, 0, 0], [0, 0, np.nan, 0]], dtype=np.float32))
    with pytest.raises(PolicyInputError, match="inf.*row 0, index 3"):
        policy.act(np.array([0, 0, 0, -np.inf], dtype=np.float32))
    # Huge but finite entries overflow the quick sum check; they are still accepted.
    assert np.all(np.abs(policy.act(np.full(4, 3e38, dtype=np.float32))) <= 3.0)


def test_missing_checkpoint_is_a_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoints"):
        dacer2.Policy.load(tmp_path)
    with pytest.raises(CheckpointError, match="no run directory"):
        dacer2.Policy.load(tmp_path / "missing.pt")


@pytest.mark.parametrize("backend", ["reference", "fused"])
def test_bf16_policy_acts_close_to_fp32_and_says_so(run_dir, backend):
    """Policy.load(precision="bf16") multiplies in bf16 (the run trained in fp32): same seed, same draws, actions
    within bf16's rounding of the fp32 policy's but not equal to them."""
    fp32 = dacer2.Policy.load(run_dir, backend=backend, seed=3)
    bf16 = dacer2.Policy.load(run_dir, backend=backend, seed=3, precision="bf16")
    assert (fp32.info.precision, bf16.info.precision) == ("fp32", "bf16") and "precision=bf16" in repr(bf16)
    assert bf16.head.actor.gemm_dtype == torch.bfloat16 and fp32.head.actor.gemm_dtype is None
    obs = np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32) * 0.1
    a32, a16 = fp32.act(obs, deterministic=True), bf16.act(obs, deterministic=True)
    err = np.linalg.norm(a16 - a32) / np.linalg.norm(a32)
    assert 1e-5 < err < 4 * float(torch.finfo(torch.bfloat16).eps), err


def test_loading_a_policy_does_not_read_the_saved_replay_buffer(run_dir, tmp_path):
    """A checkpoint with a 3M-row buffer (~130 MB): a policy maps the file and reads the actor's weights only."""
    payload = load_checkpoint(run_dir / "checkpoints" / "final.pt")
    rows, obs_dim = 3_000_000, payload["obs_dim"]
    payload["buffer"] = {"obs": torch.ones(rows, obs_dim), "next_obs": torch.ones(rows, obs_dim),
                         "action": torch.ones(rows, payload["action_dim"]), "reward": torch.ones(rows),
                         "terminated": torch.zeros(rows), "position": 0, "generator": torch.Generator().get_state()}
    from dacer2.train.checkpoint import save_checkpoint

    big = save_checkpoint(tmp_path / "big.pt", {k: v for k, v in payload.items() if k != "format_version"})
    assert big.stat().st_size > 120e6
    # The same policy loaded first from the small checkpoint brings in every library; then the peak memory grows
    # by what the big file's load reads (VmHWM, the process's own peak: ru_maxrss would carry pytest's over exec).
    probe = ("import re, sys, dacer2; small = dacer2.Policy.load(sys.argv[1]); "
             "peak = lambda: int(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1)) // 1024; "
             "before = peak(); p = dacer2.Policy.load(sys.argv[2]); p.act([0.0] * p.info.obs_dim); print(peak() - before)")
    out = subprocess.run([sys.executable, "-c", probe, str(run_dir / "checkpoints" / "final.pt"), str(big)],
                         capture_output=True, text=True, check=True).stdout
    grown_mb = int(out.strip().splitlines()[-1])
    assert grown_mb < 40, f"loading the policy grew the process by {grown_mb} MB: it read the buffer"
