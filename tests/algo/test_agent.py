import math

import pytest
import torch

from dacer2.algo.agent import Batch, DACER2Agent, distributional_critic_loss
from dacer2.config import TrainConfig


def small_agent(obs_dim=3, action_dim=2, **overrides) -> DACER2Agent:
    cfg = TrainConfig(actor_hidden=(32, 32), critic_hidden=(32, 32), batch_size=16, entropy_states=8,
                      entropy_samples=50, **overrides).resolved()
    torch.manual_seed(cfg.seed)
    return DACER2Agent(obs_dim, action_dim, cfg)


def random_batch(n=16, obs_dim=3, action_dim=2) -> Batch:
    g = torch.Generator().manual_seed(5)
    return Batch(torch.randn(n, obs_dim, generator=g), torch.rand(n, action_dim, generator=g) * 2 - 1,
                 torch.randn(n, generator=g), torch.randn(n, obs_dim, generator=g), (torch.rand(n, generator=g) < 0.2).float())


def test_critic_loss_on_hand_computed_batch():
    mu = torch.tensor([[1.0], [2.0]], requires_grad=True)
    sigma = torch.tensor([[0.5], [1.0]], requires_grad=True)
    y, y_sample, b = torch.tensor([1.5]), torch.tensor([3.0]), torch.tensor([0.5, 1.0])
    loss = distributional_critic_loss(mu, sigma, y, y_sample, b)
    # Critic 1: y_b = 1 + clip(2, -1.5, 1.5) = 2.5;  -(0.25 + 0.1) * [1 * 0.5 / 0.35 + 0.5 * (2.25 - 0.25) / 0.225]
    # Critic 2: y_b = 2 + 1 = 3;                      -(1 + 0.1) * [2 * (-0.5) / 1.1 + 1 * (1 - 1) / 1.1]
    expected = -(0.35) * (0.5 / 0.35 + 0.5 * 2.0 / 0.225) + 1.1 * (1.0 / 1.1)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()
    assert mu.grad[0, 0].item() == pytest.approx(-0.5)  # descent raises mu_1 toward y = 1.5
    assert mu.grad[1, 0].item() == pytest.approx(0.5)  # and lowers mu_2 toward it
    assert sigma.grad[0, 0].item() == pytest.approx(-0.35 * 2.0 / 0.225)  # error 1.5 > sd 0.5: sigma grows
    assert sigma.grad[1, 0].item() == pytest.approx(0.0)  # error equals sd: sigma stays


class FixedOutputs(torch.nn.Module):
    def __init__(self, *outputs):
        super().__init__()
        self.outputs = outputs

    def forward(self, *inputs):
        return self.outputs


def test_critic_targets_on_hand_computed_batch():
    agent = small_agent()
    batch = Batch(torch.zeros(3, 3), torch.zeros(3, 2), torch.tensor([1.0, 2.0, 3.0]), torch.zeros(3, 3),
                  torch.tensor([0.0, 1.0, 0.0]))
    # Target critics stubbed with known outputs: twin means and standard deviations per sample.
    mu = torch.tensor([[1.0, 5.0, -2.0], [3.0, 4.0, -1.0]])
    sigma = torch.tensor([[0.5, 1.0, 2.0], [1.0, 2.0, 3.0]])
    agent.critic_target = FixedOutputs(mu, sigma)
    agent.generator.manual_seed(123)
    y, y_sample = agent.critic_targets(batch)
    # y = 0.2 r + 0.99 (1 - done) min(mu): [0.2 + 0.99, 0.4 + 0, 0.6 - 1.98]
    torch.testing.assert_close(y, torch.tensor([1.19, 0.4, -1.38]))
    # The sampled target uses the critic with the lower mean (critic 1, 2, 1 here): mu_low + sigma_low z, z
    # clipped to [-3, 3], drawn after the next action's chain and exploration noise.
    agent.generator.manual_seed(123)
    agent.explore(agent.sample_policy(batch.next_obs))
    z = torch.randn(3, generator=agent.generator).clamp(-3, 3)
    expected = torch.tensor([0.2, 0.4, 0.6]) + torch.tensor([0.99, 0.0, 0.99]) * (
        torch.tensor([1.0, 4.0, -2.0]) + torch.tensor([0.5, 2.0, 2.0]) * z)
    torch.testing.assert_close(y_sample, expected)
    assert not torch.allclose(y_sample, y)


def test_policy_loss_gradient_reaches_every_denoising_step():
    agent = small_agent(eta=0.0)
    T = agent.head.chain.num_steps
    emb = agent.actor.step_embeddings(T).detach().requires_grad_(True)
    agent.actor.step_embeddings = lambda num_steps: emb  # each row is used by exactly one step
    # At the noisiest step x0_hat = clip(12.6 x - 12.5 eps) is mostly outside the box, so only the few samples
    # inside it pass a gradient to that step's eps: a batch of 256 makes "none inside" practically impossible.
    loss, _ = agent.policy_loss(random_batch(256).obs)
    loss.backward()
    assert emb.grad.shape == (T, 16)
    assert torch.all(emb.grad.abs().sum(dim=1) > 0), "some denoising step received no gradient"
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in agent.actor.hidden.parameters())
    assert all(p.grad is None for p in agent.critic.parameters())


def test_qgrad_loss_value_matches_definition():
    agent = small_agent(eta=1.0)
    obs = random_batch().obs
    chain = agent.trace_chain(obs)
    loss = agent.qgrad_field_loss(obs, chain)
    terms = []
    for x, eps, t in zip(chain.visited, chain.eps, chain.steps):
        a = x.detach().requires_grad_(True)
        mu, _ = agent.critic(obs, a)
        (g,) = torch.autograd.grad(mu.min(0).values.sum(), a)
        target = -math.exp(0.4 * (t + 1) - 1.8) * g / (g.norm(dim=-1, keepdim=True) + 1e-8)
        terms.append(((eps - target) ** 2).mean())
    assert loss.item() == pytest.approx(torch.stack(terms).mean().item(), rel=1e-5)


def qgrad_loss_with_stopped_inputs(agent, obs, chain):
    """L_g by its definition, step by step through the plain modules, with eps_theta(s, sg(x_t), t): the oracle
    for the stop-gradient switch (no fused op, no batching over steps)."""
    emb = agent.actor.step_embeddings(agent.head.chain.num_steps)
    terms = []
    for x, t in zip(chain.visited, chain.steps):
        x = x.detach()
        probe = x.clone().requires_grad_(True)
        mu, _ = agent.critic(obs, probe, detach_params=True)
        (g,) = torch.autograd.grad(mu.min(0).values.sum(), probe)
        target = -math.exp(0.4 * (t + 1) - 1.8) * g / (g.norm(dim=-1, keepdim=True) + 1e-8)
        terms.append(((agent.actor(obs, x, emb[t]) - target) ** 2).mean())
    return torch.stack(terms).mean()


@pytest.mark.parametrize("backend", ["reference", "fused"])
def test_qgrad_stop_gradient_switch(backend):
    """With the switch on, L_g's actor gradient is that of eps_theta(s, sg(x_t), t); with it off, the gradient
    also flows back through x_t into the earlier steps, so it differs. Checked on both backends (the fused op
    returns the visited states as sibling outputs, so only the parameter gradients can tell)."""
    obs = random_batch().obs
    grads = {}
    for stop in (True, False):
        agent = small_agent(eta=1.0, qgrad_stop_gradient=stop, backend=backend)
        chain = agent.trace_chain(obs)
        params = list(agent.actor.parameters())
        grads[stop] = torch.autograd.grad(agent.qgrad_field_loss(obs, chain), params)
        oracle = torch.autograd.grad(qgrad_loss_with_stopped_inputs(agent, obs, chain), params)
    for got, want in zip(grads[True], oracle):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    differs = [not torch.allclose(a, b, atol=1e-5, rtol=1e-4) for a, b in zip(grads[False], oracle)]
    assert any(differs), "turning the stop-gradient off changed no actor gradient"


def test_update_changes_networks_and_targets_on_delay():
    agent = small_agent(delay=2, target_every=2)  # the papers' schedule: targets move with the policy
    batch = random_batch()
    actor0 = [p.detach().clone() for p in agent.actor.parameters()]
    target0 = [p.detach().clone() for p in agent.critic_target.parameters()]
    metrics = agent.update(batch)  # update 0: policy, targets and alpha all step
    assert all(torch.isfinite(v).all() for v in metrics.values())
    assert any(not torch.equal(a, b) for a, b in zip(actor0, agent.actor.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(target0, agent.critic_target.parameters()))
    assert torch.isfinite(agent.entropy)
    actor1 = [p.detach().clone() for p in agent.actor.parameters()]
    target1 = [p.detach().clone() for p in agent.critic_target.parameters()]
    agent.update(batch)  # update 1: delayed, only the critic moves
    assert all(torch.equal(a, b) for a, b in zip(actor1, agent.actor.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(target1, agent.critic_target.parameters()))
    assert agent.num_updates == 2


def test_target_every_one_moves_the_targets_between_policy_updates():
    agent = small_agent(delay=2, target_every=1)  # the quick-start preset's schedule
    batch = random_batch()
    agent.update(batch)
    actor1 = [p.detach().clone() for p in agent.actor.parameters()]
    target1 = [p.detach().clone() for p in agent.critic_target.parameters()]
    agent.update(batch)  # update 1: no policy step, but a target step
    assert all(torch.equal(a, b) for a, b in zip(actor1, agent.actor.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(target1, agent.critic_target.parameters()))


@pytest.mark.parametrize("target_scale, direction", [(5.0, +1), (-5.0, -1)])
def test_alpha_moves_toward_target_entropy(target_scale, direction):
    agent = small_agent(target_entropy_scale=target_scale)
    obs = random_batch().obs
    alpha0 = agent.alpha.item()
    for _ in range(3):
        agent.update_alpha(obs)
    entropy = agent.entropy.item()
    assert math.isfinite(entropy)
    # target above the estimate -> more noise; below -> less.
    assert (agent.target_entropy - entropy) * direction > 0
    assert (agent.alpha.item() - alpha0) * direction > 0


def test_deterministic_act_has_no_alpha_noise():
    agent = small_agent(deterministic_chain_noise=False)
    obs = random_batch().obs
    first, second = agent.act(obs, deterministic=True), agent.act(obs, deterministic=False)
    assert first.shape == (16, 2) and first.abs().max() <= 1.0 and second.abs().max() <= 1.0
    # Without chain noise only the initial noise differs between calls; fix it via the generator state.
    state = agent.generator.get_state()
    a = agent.act(obs, deterministic=True)
    agent.generator.set_state(state)
    assert torch.equal(a, agent.act(obs, deterministic=True))
