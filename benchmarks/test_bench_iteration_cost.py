"""What one iteration of the papers' protocol costs per algorithm (`dacer2-train --protocol papers`: the policy acts
for 20 envs, the 20 envs step, their transitions enter the replay buffer, one update), relative to dacer2 in the
same run: the cost column of docs/results.md's papers-protocol section.

A row is the run's own compute, as the training loop drives it: the agent `--algo ALGO --env-id ENV` builds (presets
as they are, backend auto, 1 torch thread as the runs trained), its Learner's act and step, and real sync vector envs
of the task. One timed call is two iterations, one whose update has the policy step and one critic-only (the delay of
2). The algorithms run in interleaved rounds, each on its own envs and a replay buffer pre-filled with random
transitions; the entropy re-estimate (one update in 10,000) is left out. The note splits an iteration into acting,
env stepping (with the buffer write) and the update.

Ratios only compare rows of one run on one host: wall-clock times of runs made on different hosts are never
compared (docs/results.md names the host of the committed file).

    pytest benchmarks/test_bench_iteration_cost.py --bench-results results/iteration-cost
"""

from __future__ import annotations

import statistics
import time

import pytest
import torch

from dacer2.algo.agent import DACER2Agent
from dacer2.config import TrainConfig
from dacer2.envs import make_vector_env
from dacer2.train.learner import Learner
from dacer2.train.replay import ReplayBuffer
from dacer2.train.trainer import step_vector_env

pytestmark = pytest.mark.filterwarnings("ignore:Benchmark fixture was not used:pytest_benchmark.logger.PytestBenchmarkWarning")

ALGOS = ("dacer2", "dacer2-no-qgrad", "dacer", "gaussian")
TASKS = ("HalfCheetah-v5", "Walker2d-v5", "Humanoid-v5")
NUM_ENVS = 20
THREADS = 1
ROUNDS, WARMUP_ROUNDS = 20, 2
PREFILL = 2_000  # random transitions in each buffer before timing (any size >= a batch samples the same way)


class Iterating:
    """One algorithm's training compute: agent, learner, buffer and envs, stepped as the training loop steps them."""

    def __init__(self, env_id: str, algo: str):
        self.cfg = TrainConfig(env_id=env_id, algo=algo, protocol="papers", seed=0, alpha_every=10**9).resolved()
        self.envs = make_vector_env(env_id, NUM_ENVS, seed=0)
        obs_dim = self.envs.single_observation_space.shape[0]
        action_dim = self.envs.single_action_space.shape[0]
        torch.manual_seed(0)
        self.agent = DACER2Agent(obs_dim, action_dim, self.cfg, torch.device("cpu"))
        self.agent.num_updates = 1  # past update 0, which re-estimates the entropy (timed in test_bench_entropy.py)
        self.buffer = ReplayBuffer(PREFILL + 10 * NUM_ENVS * (WARMUP_ROUNDS + ROUNDS), obs_dim, action_dim,
                                   self.cfg.batch_size, torch.device("cpu"))
        self.learner = Learner(self.agent, self.buffer, graphs=False)
        self.obs, _ = self.envs.reset(seed=0)
        while len(self.buffer) < PREFILL:
            self._step(self.envs.action_space.sample())
        self.seconds = {"act": 0.0, "env": 0.0, "update": 0.0}

    def _step(self, action) -> None:
        next_obs, reward, terminated, truncated, real_next_obs = step_vector_env(self.envs, action)
        self.buffer.add(self.obs, action, reward, real_next_obs, terminated)
        self.obs = next_obs

    def iteration(self) -> None:
        t0 = time.perf_counter()
        action = self.learner.act(self.obs)
        t1 = time.perf_counter()
        self._step(action)
        t2 = time.perf_counter()
        self.learner.step()
        t3 = time.perf_counter()
        for phase, seconds in zip(self.seconds, (t1 - t0, t2 - t1, t3 - t2)):
            self.seconds[phase] += seconds


@pytest.mark.parametrize("env_id", TASKS)
def test_iteration_cost(bench, smoke, env_id):
    torch.set_num_threads(THREADS)
    runs = {algo: Iterating(env_id, algo) for algo in ALGOS}
    times = {algo: [] for algo in ALGOS}
    rounds = 1 if smoke else ROUNDS
    # Interleaved, in a rotating order: a shared VM's speed drifts over a minute.
    for r in range(WARMUP_ROUNDS + rounds):
        if r == WARMUP_ROUNDS:
            for run in runs.values():
                run.seconds = dict.fromkeys(run.seconds, 0.0)
        for i in range(len(ALGOS)):
            algo = ALGOS[(r + i) % len(ALGOS)]
            t0 = time.perf_counter()
            runs[algo].iteration()
            runs[algo].iteration()
            if r >= WARMUP_ROUNDS or smoke:
                times[algo].append(time.perf_counter() - t0)
    for algo, run in runs.items():
        # Every timed call held one update with the policy step and one without, and no entropy re-estimate.
        assert run.agent.num_updates % 2 == 1 and run.agent.num_updates < run.cfg.alpha_every
        assert len(run.buffer) == PREFILL + 2 * NUM_ENVS * (WARMUP_ROUNDS + rounds)
        run.envs.close()
        total = sum(run.seconds.values())
        split = " ".join(f"{phase}={100 * s / total:.0f}%" for phase, s in run.seconds.items())
        bench.derived(
            op="papers iteration", mode=env_id, backend=algo, seconds=statistics.median(times[algo]), work=2,
            work_unit="iterations/s", T=run.cfg.diffusion_steps if run.agent.policy_family == "diffusion" else "",
            B=run.cfg.batch_size, threads=THREADS, ratio_base="dacer2", headline=True,
            note=f"{NUM_ENVS} envs + 1 update; {split}; backend={run.agent.backend} rounds={rounds} interleaved",
        )
