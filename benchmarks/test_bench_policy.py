"""The policy loss L_pi = L_q + eta L_g (docs/algorithm.md §3): the reparameterised chain, min-Q of the executed action, and
DACER2's Q-gradient field loss at every visited state. This is the unit the fused backend replaces as a whole
(its L_g reuses the chain's own eps_theta evaluations), so fused and reference are compared here rather than
on L_g alone. HalfCheetah and Humanoid presets both use eta = 0.01, so L_g is always on.

Modes: fwd = the loss with its graph; bwd = backward to the actor weights, forward untimed; fwd+bwd = both.
"""

import pytest
import torch


@pytest.mark.bench_grid(axes=("dims", "steps", "batch"), backends=("eager", "compile", "fused"))
@pytest.mark.parametrize("mode", ["fwd", "bwd", "fwd+bwd"])
def test_policy_loss(bench, case, mode):
    agent = bench.agent()
    assert agent.cfg.eta > 0  # the rows are meant to include L_g
    obs = torch.randn(case.batch, case.obs_dim, generator=torch.Generator().manual_seed(0)).to(case.device)
    headline = case.dims == "halfcheetah" and case.steps == 5 and case.batch == 256 and mode == "fwd+bwd"

    def forward():
        return agent.policy_loss(obs)[0]

    def backward(loss):
        loss.backward()

    fl = bench.flops("policy_loss", mode)
    if mode == "fwd":
        bench.run(forward, op="policy_loss", mode=mode, flops=fl)
    elif mode == "bwd":
        bench.run(backward, lambda: (forward(),), op="policy_loss", mode=mode, flops=fl)
    else:
        bench.run(lambda: backward(forward()), op="policy_loss", mode=mode, flops=fl, headline=headline)
