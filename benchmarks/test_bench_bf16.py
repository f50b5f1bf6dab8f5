"""--precision bf16 against fp32 on the fused CPU path, each pair timed in one run on one host, 1 torch thread:

- the full training update (HalfCheetah dims 17/6, 3x256 mish, T = 5, eta 0.01, batch 256; a timed call is two
  updates, one with the policy step and one critic-only, the papers' delay of 2); target bf16 >= 2.5x fp32;
- the acting chain at batch 256 (agent.act, the dacer2::sample_chain op); target >= 3x;
- Policy.act at batch 1 (numpy in and out), measured both ways.

Rows are timed in interleaved rounds (fp32, bf16, fp32, ...), so a drifting VM moves both alike; `ratio_base`
fp32 makes the results show bf16's speed-up. On a CPU without bf16 matrix hardware (no amx_bf16/avx512_bf16) bf16
is emulated and far slower: the rows are not run there, and the results say why (not_run). CI's smoke run
(--benchmark-disable) calls every row once anyway, so the code path is exercised everywhere.

    pytest benchmarks/test_bench_bf16.py --bench-results benchmarks/results
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import pytest
import torch

from dacer2.algo.agent import Batch, DACER2Agent
from dacer2.algo.precision import host_bf16_report
from dacer2.config import TrainConfig
from dacer2.ops import HAS_CPU_KERNELS

pytestmark = pytest.mark.filterwarnings("ignore:Benchmark fixture was not used:pytest_benchmark.logger.PytestBenchmarkWarning")

OBS, ACT, B = 17, 6, 256
PRECISIONS = ("fp32", "bf16")
THREADS = 1


def _agent(precision: str) -> DACER2Agent:
    cfg = TrainConfig(env_id="HalfCheetah-v5", backend="fused", precision=precision, device="cpu", seed=0,
                      alpha_every=10**9).resolved()
    torch.manual_seed(0)
    agent = DACER2Agent(OBS, ACT, cfg)
    agent.num_updates = 1  # past the entropy re-estimate of update 0 (timed in test_bench_entropy.py)
    return agent


def _check_host(bench, op: str, smoke: bool) -> None:
    if not HAS_CPU_KERNELS:
        pytest.skip("dacer2._C is not built: pip install --no-build-isolation -e .")
    fast, why = host_bf16_report()
    if not fast and not smoke:
        bench.not_run(f"bf16 rows not run: {why}", op=op, mode="bf16", backend="bf16", S=OBS, A=ACT,
                      threads=THREADS)


def _interleaved(calls: dict, rounds: int, warmup: int = 2) -> dict:
    times = {name: [] for name in calls}
    for r in range(warmup + rounds):
        for name in (PRECISIONS if r % 2 == 0 else PRECISIONS[::-1]):
            t0 = time.perf_counter()
            calls[name]()
            if r >= warmup:
                times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}


def _report(bench, op, mode, seconds, work, work_unit, batch, note):
    for precision in PRECISIONS:
        bench.derived(op=op, mode=mode, backend=precision, seconds=seconds[precision], work=work,
                      work_unit=work_unit, S=OBS, A=ACT, T=5, B=batch, threads=THREADS, ratio_base="fp32",
                      headline=True, note=note)


def test_update(bench, smoke):
    _check_host(bench, "training update", smoke)
    agents = {p: _agent(p) for p in PRECISIONS}
    g = torch.Generator().manual_seed(1)
    batch = Batch(torch.randn(B, OBS, generator=g), torch.rand(B, ACT, generator=g) * 2 - 1,
                  torch.randn(B, generator=g), torch.randn(B, OBS, generator=g), torch.zeros(B))

    def two_updates(agent):
        return lambda: (agent.update(batch), agent.update(batch))

    rounds = 1 if smoke else 20
    seconds = _interleaved({p: two_updates(a) for p, a in agents.items()}, rounds, warmup=0 if smoke else 2)
    assert all(a.num_updates < a.cfg.alpha_every for a in agents.values())
    _report(bench, "training update", "fused", seconds, 2, "updates/s", B, f"rounds={rounds} interleaved")


def test_acting_chain_b256(bench, smoke):
    _check_host(bench, "acting chain", smoke)
    agents = {p: _agent(p) for p in PRECISIONS}
    obs = torch.randn(B, OBS)
    rounds = 1 if smoke else 30
    seconds = _interleaved({p: (lambda a=a: a.act(obs)) for p, a in agents.items()}, rounds,
                           warmup=0 if smoke else 2)
    _report(bench, "acting chain", "agent.act", seconds, 1, "calls/s", B, f"rounds={rounds} interleaved")


def test_policy_act_b1(bench, smoke):
    _check_host(bench, "Policy.act", smoke)
    from dacer2.algo.heads import build_head
    from dacer2.deploy.policy import Policy, PolicyInfo

    policies = {}
    for precision in PRECISIONS:
        agent = _agent(precision)
        head = build_head("diffusion", OBS, ACT, agent.cfg, "fused")
        head.actor.load_state_dict(agent.actor.state_dict())
        head.actor.eval().requires_grad_(False)
        generator = torch.Generator()
        head.attach(agent.log_alpha.detach().clone(), generator)
        info = PolicyInfo(agent.cfg.env_id, "diffusion", OBS, ACT, 0, None, "fused", precision)
        policies[precision] = Policy(head, info, -np.ones(ACT), np.ones(ACT), agent.cfg, torch.device("cpu"),
                                     generator)
    obs = np.random.default_rng(0).normal(size=OBS).astype(np.float32)
    calls_per_round = 1 if smoke else 200

    def acting(policy):
        def run():
            for _ in range(calls_per_round):
                policy.act(obs, deterministic=False)
        return run

    rounds = 1 if smoke else 15
    seconds = _interleaved({p: acting(pol) for p, pol in policies.items()}, rounds, warmup=0 if smoke else 2)
    _report(bench, "Policy.act", "numpy", seconds, calls_per_round, "actions/s", 1,
            f"rounds={rounds}x{calls_per_round} interleaved")
