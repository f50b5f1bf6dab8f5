"""One full DACER2Agent.update at batch 256 on --bench-threads CPU threads (default 2): critic targets (no-grad chain on s'), the twin
critic step, the policy step L_q + eta L_g through all T chain steps, and the target Polyak step.

The row runs the update with delay = 1 so every timed call includes the policy step (with the default
delay = 2 every other update is critic-only and the average is roughly 40% cheaper). The entropy
re-estimate, which the agent runs once every alpha_every = 10,000 updates, is excluded here and timed in
test_bench_entropy.py.

GFLOP/s = update_flops(...) / median time, with FLOPs counted analytically (docs/performance.md derives the
formula); test_flop_formula_matches_counter checks the formula against torch's own per-op FLOP formulas.
"""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

UPDATE_OVERRIDES = dict(delay=1, alpha_every=10**9)


def _ready_agent(bench):
    agent = bench.agent(**UPDATE_OVERRIDES)
    agent.num_updates = 1  # update 0 re-estimates the entropy; start past it
    return agent


@pytest.mark.bench_grid(
    axes=("dims", "steps"), backends=("eager", "compile", "fused"), fixed=dict(batch=256), threads="option"
)
def test_update(bench, case):
    agent = _ready_agent(bench)
    batch = bench.batch()
    flops = bench.update_flops(case.obs_dim, case.action_dim, case.steps, case.batch, eta_on=agent.cfg.eta > 0)
    headline = case.dims == "halfcheetah" and case.steps == 5
    bench.run(lambda: agent.update(batch), op="update", mode="full", flops=flops, headline=headline)


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


@pytest.mark.parametrize("dims", [(17, 6, 5), (348, 17, 20)], ids=["halfcheetah-T5", "humanoid-T20"])
def test_flop_formula_matches_counter(dims, flop_model):
    """The analytic count must equal what torch counts for the same update (matmuls only), so GFLOP/s figures
    are exact for the reference algorithm. Small batch: the count is linear in B."""
    from dacer2.agent import Batch, DACER2Agent
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
    assert flop_model.update_flops(S, A, T, B, eta_on=cfg.eta > 0) == counted
