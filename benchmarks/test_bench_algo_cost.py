"""What one training update costs per algorithm, at each results-page task's dims, relative to dacer2's cost
measured in the same run: the "cost" column of docs/results.md.

A row is one algorithm's agent exactly as `dacer2-train --env-id ENV --algo ALGO` builds it (the env preset's
network sizes, the algo preset's T and eta, backend auto: fused where the algorithm has kernels, the reference
for the Gaussian head), on 1 torch thread, as the results' runs trained. One timed call is two updates, one
with the policy step and one critic-only (the papers' delay of 2), so a call is the average training update
times two; the median is halved. The entropy re-estimate (one update in 10,000) is left out.

Ratios only compare rows of one run on one host (`ratio_base` dacer2 at the same task): wall-clock times of
runs made on different hosts are never compared (docs/results.md names the host of the committed file).

    pytest benchmarks/test_bench_algo_cost.py --bench-results results/algo-cost
"""

from __future__ import annotations

import statistics
import time

import pytest
import torch

from dacer2.algo.agent import Batch, DACER2Agent
from dacer2.config import TrainConfig

# Timed by its own interleaved loop and reported through bench.derived, so pytest-benchmark's fixture stays idle.
pytestmark = pytest.mark.filterwarnings("ignore:Benchmark fixture was not used:pytest_benchmark.logger.PytestBenchmarkWarning")

ALGOS = ("dacer2", "dacer2-no-qgrad", "dacer", "gaussian")
# The results page's tasks: (env id, obs dim, action dim).
TASKS = {"Hopper-v5": (11, 3), "Walker2d-v5": (17, 6), "dacer2/MultiGoal-v0": (2, 2)}
THREADS = 1  # the bench fixture's per-op thread count; the results' runs trained on 1 thread
ROUNDS, WARMUP_ROUNDS = 30, 2


def _training_agent(env_id: str, algo: str, obs_dim: int, action_dim: int):
    # alpha_every past the timed calls: update 0 would re-estimate the entropy (timed in test_bench_entropy.py).
    cfg = TrainConfig(env_id=env_id, algo=algo, seed=0, alpha_every=10**9).resolved()
    torch.manual_seed(0)
    agent = DACER2Agent(obs_dim, action_dim, cfg, "cpu")
    agent.num_updates = 1
    return agent


def _replay_like_batch(n: int, obs_dim: int, action_dim: int) -> Batch:
    g = torch.Generator().manual_seed(1)
    return Batch(obs=torch.randn(n, obs_dim, generator=g), action=torch.rand(n, action_dim, generator=g) * 2 - 1,
                 reward=torch.randn(n, generator=g), next_obs=torch.randn(n, obs_dim, generator=g),
                 terminated=(torch.rand(n, generator=g) < 0.02).float())


def _policy_text(agent) -> str:
    if agent.policy_family != "diffusion":
        return f"{agent.policy_family} head"
    return f"T={agent.cfg.diffusion_steps} eta={agent.cfg.eta:g}"


@pytest.mark.parametrize("env_id", TASKS)
def test_update_cost(bench, smoke, env_id):
    obs_dim, action_dim = TASKS[env_id]
    agents = {algo: _training_agent(env_id, algo, obs_dim, action_dim) for algo in ALGOS}
    batch = _replay_like_batch(agents["dacer2"].cfg.batch_size, obs_dim, action_dim)

    def two_updates(agent):
        agent.update(batch)
        agent.update(batch)

    # Interleaved rounds, the algorithms in a rotating order: on a shared VM the speed drifts by 20-30% over a
    # minute, which back-to-back blocks of one algorithm each turned into ratio errors of that size.
    times = {algo: [] for algo in ALGOS}
    rounds = 1 if smoke else ROUNDS
    for r in range(WARMUP_ROUNDS + rounds):
        for i in range(len(ALGOS)):
            algo = ALGOS[(r + i) % len(ALGOS)]
            t0 = time.perf_counter()
            two_updates(agents[algo])
            if r >= WARMUP_ROUNDS or smoke:
                times[algo].append(time.perf_counter() - t0)
    for algo, agent in agents.items():
        # Started at update 1, every call held one critic-only update and one with the policy step.
        assert agent.num_updates % 2 == 1 and agent.num_updates < agent.cfg.alpha_every
        cfg = agent.cfg
        bench.derived(
            op="training update", mode=env_id, backend=algo, seconds=statistics.median(times[algo]), work=2,
            work_unit="updates/s", S=obs_dim, A=action_dim, T="", B=cfg.batch_size, threads=THREADS,
            ratio_base="dacer2", headline=True,
            note=f"{_policy_text(agent)} backend={agent.backend} hidden={'x'.join(map(str, cfg.actor_hidden))} "
                 f"rounds={rounds} interleaved",
        )
