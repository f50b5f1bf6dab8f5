"""Acting: one action for one state, 1 thread, HalfCheetah dims (obs 17, act 6, 3x256 mish, T=5).
Target (issue 3): fused <= 40 us per action and >= 12x the eager reference, same run."""

import pytest
import torch

from dacer2.algo.agent import DACER2Agent
from dacer2.config import TrainConfig
from dacer2.ops import HAS_CPU_KERNELS

OBS, ACT = 17, 6


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def make_agent(backend):
    cfg = TrainConfig(env_id="HalfCheetah-v5", backend=backend).resolved()
    torch.manual_seed(0)
    return DACER2Agent(OBS, ACT, cfg)


@pytest.mark.parametrize("backend", ["reference", "fused"])
@pytest.mark.parametrize("deterministic", [False, True], ids=["explore", "deterministic"])
def test_act_batch1(benchmark, record, backend, deterministic):
    if backend == "fused" and not HAS_CPU_KERNELS:
        pytest.skip("dacer2._C is not built: pip install --no-build-isolation -e .")
    agent = make_agent(backend)
    obs = torch.randn(1, OBS)
    agent.act(obs, deterministic)
    benchmark.pedantic(agent.act, args=(obs, deterministic), rounds=300 if backend == "fused" else 60,
                       iterations=5, warmup_rounds=5)
    record(f"act B=1 {'det' if deterministic else 'explore'}", backend, benchmark)


@pytest.mark.parametrize("backend", ["reference", "fused"])
def test_act_batch20(benchmark, record, backend):
    """20 parallel envs (the papers' protocol)."""
    if backend == "fused" and not HAS_CPU_KERNELS:
        pytest.skip("dacer2._C is not built: pip install --no-build-isolation -e .")
    agent = make_agent(backend)
    obs = torch.randn(20, OBS)
    benchmark.pedantic(agent.act, args=(obs,), rounds=40, iterations=2, warmup_rounds=2)
    record("act B=20 explore", backend, benchmark)


def make_policy(backend):
    """The deployment Policy around the same actor as make_agent's, built without a checkpoint file."""
    import numpy as np

    from dacer2.algo.heads import build_head
    from dacer2.deploy.policy import Policy, PolicyInfo

    agent = make_agent("reference")
    cfg = agent.cfg
    head = build_head("diffusion", OBS, ACT, cfg, backend)
    head.actor.load_state_dict(agent.actor.state_dict())
    head.actor.eval().requires_grad_(False)
    generator = torch.Generator()
    head.attach(agent.log_alpha.detach().clone(), generator)
    info = PolicyInfo(cfg.env_id, "diffusion", OBS, ACT, 0, None, backend)
    return Policy(head, info, -np.ones(ACT), np.ones(ACT), cfg, torch.device("cpu"), generator)


@pytest.mark.parametrize("backend", ["reference", "fused"])
@pytest.mark.parametrize("deterministic", [False, True], ids=["explore", "deterministic"])
def test_policy_act_batch1(benchmark, record, backend, deterministic):
    """dacer2.Policy.act, numpy in and out with its input checks and rescaling: what a deployed policy costs,
    beside agent.act above (issue 13's target: <= 50 us fused at 1 thread on a quiet machine)."""
    if backend == "fused" and not HAS_CPU_KERNELS:
        pytest.skip("dacer2._C is not built: pip install --no-build-isolation -e .")
    import numpy as np

    policy = make_policy(backend)
    obs = np.random.default_rng(0).normal(size=OBS).astype(np.float32)
    policy.act(obs, deterministic)
    benchmark.pedantic(policy.act, args=(obs, deterministic), rounds=300 if backend == "fused" else 60,
                       iterations=5, warmup_rounds=5)
    record(f"Policy.act B=1 {'det' if deterministic else 'explore'}", backend, benchmark)
