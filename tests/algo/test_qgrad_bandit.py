"""L_g on a problem whose Q is known exactly: a one-step continuous bandit with a quadratic peak.

With the critic replaced by Q(a) = -||a - a*||^2, the policy must (1) put its deterministic actions near a*, and
(2) with eta > 0 predict at every denoising step a noise that points along u_t = -w(t) grad Q / ||grad Q||, with a
magnitude pulled toward w(t): the Q-gradient field term is what sets that magnitude, so the test also checks that
it moves it compared with eta = 0.
"""

import torch
import torch.nn.functional as F

from dacer2.algo.agent import DACER2Agent
from dacer2.config import TrainConfig

PEAK = torch.tensor([0.5, -0.3])


def known_q(obs, action, which="min"):
    return -((action - PEAK) ** 2).sum(-1)


def known_q_grad(obs, action, which="min"):
    return -2.0 * (action - PEAK)


def train_on_bandit(eta: float, steps: int = 200) -> DACER2Agent:
    cfg = TrainConfig(actor_hidden=(64, 64), critic_hidden=(8,), eta=eta, actor_lr=1e-3, initial_alpha=0.1).resolved()
    torch.manual_seed(0)
    agent = DACER2Agent(1, 2, cfg)
    agent.critic_value = known_q  # L_q's value
    agent.action_grad = known_q_grad  # L_g's g_t
    obs = torch.zeros(256, 1)
    for _ in range(steps):
        loss, _ = agent.policy_loss(obs)
        agent.actor_optimizer.zero_grad()
        loss.backward()
        agent.actor_optimizer.step()
    return agent


def field_alignment(agent: DACER2Agent) -> tuple[list[float], list[float]]:
    """Per step: mean cosine between eps and u_t, and median ||eps|| / ||u_t||."""
    chain = agent.trace_chain(torch.zeros(256, 1))
    cosines, ratios = [], []
    for x, eps, t in zip(chain.visited, chain.eps, chain.steps):
        grad = PEAK - x  # grad_a Q at a = x
        u = -agent.step_weight[t] * grad / grad.norm(dim=-1, keepdim=True)
        cosines.append(F.cosine_similarity(eps, u, dim=-1).mean().item())
        ratios.append((eps.norm(dim=-1) / u.norm(dim=-1)).median().item())
    return cosines, ratios


def test_qgrad_field_policy_finds_peak_and_aligns_with_field():
    agent = train_on_bandit(eta=0.01)  # the paper's smaller eta
    actions = agent.act(torch.zeros(256, 1), deterministic=True)
    distance = (actions - PEAK).norm(dim=-1)
    assert distance.median() < 0.05, f"median distance to the peak {distance.median():.3f}"
    assert (distance < 0.1).float().mean() > 0.95
    cosines, ratios = field_alignment(agent)
    assert min(cosines) > 0.9, f"noise predictions not aligned with -w(t) grad Q: {cosines}"

    baseline = train_on_bandit(eta=0.0)
    _, baseline_ratios = field_alignment(baseline)
    # L_g pulls every step's noise magnitude toward w(t) (ratio 1) compared with training on L_q alone.
    assert all(abs(r - 1) < abs(b - 1) for r, b in zip(ratios, baseline_ratios)), (ratios, baseline_ratios)
