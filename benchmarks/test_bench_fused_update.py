"""One full agent update (critic + policy L_q + eta L_g + targets), batch 256, 2 threads, HalfCheetah dims
(obs 17, act 6, 3x256 mish, T=5, eta = 0.01 preset), delay 1 so every update includes the policy step.
Target (issue 3): fused >= 1.5x the eager reference, same run. Also times the policy loss + its backward
alone, the part the fused ops replace."""

import pytest
import torch

from dacer2.algo.agent import Batch, DACER2Agent
from dacer2.config import TrainConfig
from dacer2.ops import HAS_CPU_KERNELS

OBS, ACT, B = 17, 6, 256


@pytest.fixture(scope="module", autouse=True)
def two_threads():
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(old)


def make(backend):
    if backend == "fused" and not HAS_CPU_KERNELS:
        pytest.skip("dacer2._C is not built: pip install --no-build-isolation -e .")
    cfg = TrainConfig(env_id="HalfCheetah-v5", backend=backend, delay=1, alpha_every=10**9).resolved()
    torch.manual_seed(0)
    agent = DACER2Agent(OBS, ACT, cfg)
    agent.num_updates = 1  # past the entropy re-estimate of update 0
    g = torch.Generator().manual_seed(1)
    batch = Batch(torch.randn(B, OBS, generator=g), torch.rand(B, ACT, generator=g) * 2 - 1,
                  torch.randn(B, generator=g), torch.randn(B, OBS, generator=g), torch.zeros(B))
    return agent, batch


@pytest.mark.parametrize("backend", ["reference", "fused"])
def test_update_b256(benchmark, record, backend):
    agent, batch = make(backend)
    benchmark.pedantic(agent.update, args=(batch,), rounds=8, iterations=1, warmup_rounds=1)
    record("update B=256 2thr", backend, benchmark)


@pytest.mark.parametrize("backend", ["reference", "fused"])
def test_policy_loss_backward_b256(benchmark, record, backend):
    agent, batch = make(backend)

    def step():
        loss, _ = agent.policy_loss(batch.obs)
        loss.backward()

    benchmark.pedantic(step, rounds=8, iterations=1, warmup_rounds=1)
    record("policy loss+bwd B=256 2thr", backend, benchmark)
