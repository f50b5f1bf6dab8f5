"""The twin distributional critic Q_i(s, a) -> (mu_i, sigma_i), i = 1, 2.

critic: the critic's own training pass on a replay batch: forward, backward to the weights (no gradient into
the replay inputs), both. It has no fused kernel (it is three batched GEMMs per critic), so it has eager and
compile rows only.
critic_action_grad: q = min(mu_1, mu_2) and dq/da through frozen weights, what L_q and the Q-gradient field
loss L_g need (agent.action_grad: the fused critic op's own gradient, or autograd.grad of critic_value on
the reference); fused under backend="fused".
"""

import pytest
import torch


@pytest.mark.bench_grid(axes=("dims", "batch"), backends=("eager", "compile"))
@pytest.mark.parametrize("mode", ["fwd", "bwd", "fwd+bwd"])
def test_critic(bench, case, mode):
    agent = bench.agent()
    batch = bench.batch()

    def forward():
        mu, sigma = agent.critic(batch.obs, batch.action)
        return mu.sum() + sigma.sum()

    def backward(loss):
        loss.backward()

    fl = bench.flops("critic", mode)
    if mode == "fwd":
        bench.run(forward, op="critic", mode=mode, flops=fl)
    elif mode == "bwd":
        bench.run(backward, lambda: (forward(),), op="critic", mode=mode, flops=fl)
    else:
        bench.run(lambda: backward(forward()), op="critic", mode=mode, flops=fl)


@pytest.mark.bench_grid(axes=("dims", "batch"), backends=("eager", "compile", "fused"))
def test_critic_action_grad(bench, case):
    agent = bench.agent()
    batch = bench.batch()

    def value_and_grad():
        return agent.action_grad(batch.obs, batch.action, "min")

    bench.run(
        value_and_grad, op="critic_action_grad", mode="fwd+bwd", flops=bench.flops("critic_action_grad", "fwd+bwd")
    )
