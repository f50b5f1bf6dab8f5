"""One full DACER2Agent.update at batch 256 (1 thread; HalfCheetah T = 5 also on --bench-threads threads,
default 2): critic targets (no-grad chain on s'), the twin critic step, the policy step L_q + eta L_g through
all T chain steps, and the target Polyak step.

The row runs the update with delay = 1 so every timed call includes the policy step (with the default
delay = 2 every other update is critic-only and the average is roughly 40% cheaper). The entropy
re-estimate, which the agent runs once every alpha_every = 10,000 updates, is excluded here and timed in
test_bench_entropy.py.

The graphed rows (CUDA only) time Learner.step with --cuda-graphs on: one replay of the captured update, which also
draws the replay batch on the device, plus the eager bookkeeping after it.

GFLOP/s = update_flops(...) / median time, with FLOPs counted analytically (docs/performance.md derives the
formula); test_flop_formula_matches_counter checks the formula against torch's own per-op FLOP formulas.
"""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from flops import update_flops
from grid import graphed_learner

UPDATE_OVERRIDES = dict(delay=1, alpha_every=10**9)


def _ready_agent(bench):
    agent = bench.agent(**UPDATE_OVERRIDES)
    agent.num_updates = 1  # update 0 re-estimates the entropy; start past it
    return agent


def _time_update(bench, case, headline):
    agent = _ready_agent(bench)
    flops = update_flops(case.obs_dim, case.action_dim, case.steps, case.batch, eta_on=agent.cfg.eta > 0)
    if case.backend == "graphed":  # one replay: the sample from the buffer is inside the graph
        step = graphed_learner(agent, case).step
    else:
        batch = bench.batch()
        step = lambda: agent.update(batch)  # noqa: E731
    bench.run(step, op="update", mode="full", flops=flops, headline=headline)


# The shape grid on 1 thread: on a shared machine a 2-thread OpenMP region waits for its slowest thread, so
# 2-thread rows swing with the other load (here up to 10x between runs) while 1-thread ratios stay put.
@pytest.mark.bench_grid(axes=("dims", "steps"), backends=("eager", "compile", "fused", "graphed"), fixed=dict(batch=256))
def test_update(bench, case):
    _time_update(bench, case, headline=case.dims == "halfcheetah" and case.steps == 5)


# The training configuration: HalfCheetah, T = 5, on --bench-threads threads (default 2).
@pytest.mark.bench_grid(
    axes=(), backends=("eager", "compile", "fused"), fixed=dict(steps=5, batch=256), threads="option"
)
def test_update_threads(bench, case):
    _time_update(bench, case, headline=True)


@pytest.mark.bench_grid(axes=(), backends=("eager",), devices=("cpu", "cuda"), threads="option")
def test_gemm_ceiling(bench, case):
    """A large float32 matmul on the update's thread count: the practical GFLOP/s ceiling of this machine, to
    read the update's GFLOP/s against (the update's GEMMs are 256-row, so they cannot reach it)."""
    _time_gemm(bench, case)


@pytest.mark.bench_grid(axes=(), backends=("eager",), devices=("cpu",), threads=1)
def test_gemm_ceiling_one_thread(bench, case):
    _time_gemm(bench, case)


def _time_gemm(bench, case):
    n = 1024
    g = torch.Generator().manual_seed(0)
    a, b = (torch.randn(n, n, generator=g).to(case.device) for _ in range(2))
    bench.run(lambda: a @ b, op="sgemm_ceiling", mode=f"{n}^3", flops=2.0 * n**3, S=None, A=None, T=None, B=n,
              measure_memory=False, headline=True)


class _MatmulFlops(TorchDispatchMode):
    """Counts FLOPs with torch's own per-op formulas (torch.utils.flop_counter). FlopCounterMode itself cannot
    be used: its module hooks break torch.autograd.grad, which the Q-gradient field loss calls."""

    def __init__(self):
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        count = flop_registry.get(func._overloadpacket)
        if count is not None:
            self.total += count(*args, **kwargs, out_val=out)
        return out


@pytest.mark.parametrize("dims", [(17, 6, 20), (348, 17, 5)], ids=["halfcheetah-T20", "humanoid-T5"])
def test_flop_formula_matches_counter(dims):
    """The analytic count must equal what torch counts for the same update (matmuls only), so GFLOP/s figures
    are exact for the reference algorithm. Small batch: the count is linear in B."""
    from dacer2.algo.agent import Batch, DACER2Agent
    from dacer2.config import TrainConfig

    S, A, T = dims
    B = 8
    env = "HalfCheetah-v5" if S == 17 else "Humanoid-v5"
    cfg = TrainConfig(env_id=env, diffusion_steps=T, backend="reference", **UPDATE_OVERRIDES).resolved()
    agent = DACER2Agent(S, A, cfg)
    agent.num_updates = 1
    g = torch.Generator().manual_seed(0)

    batch = Batch(torch.randn(B, S, generator=g), torch.rand(B, A, generator=g) * 2 - 1, torch.randn(B, generator=g),
                  torch.randn(B, S, generator=g), torch.zeros(B))
    counter = _MatmulFlops()
    with counter:
        agent.update(batch)
    counted = counter.total
    assert update_flops(S, A, T, B, eta_on=cfg.eta > 0) == counted
