"""--algo gaussian, the SAC-style baseline: the trainer builds the agent with a Gaussian head, its run loads as a
Gaussian policy, and a resume rebuilds the same head from the saved config."""

import json

import pytest
import torch

from dacer2.algo.agent import DACER2Agent
from dacer2.baselines.gaussian_actor import GaussianActor
from dacer2.config import TrainConfig
from dacer2.algo.heads import GaussianHead, build_head
from dacer2.deploy.policy import Policy
from dacer2.train.trainer import train


def test_algo_gaussian_trains_and_resumes_the_gaussian_agent(tmp_path, tiny_config):
    run = tmp_path / "gauss"
    first = train(tiny_config(algo="gaussian", total_steps=200, learning_starts=100, eval_every=100, eval_episodes=1,
                              alpha_every=100, run_dir=str(run)))
    assert json.loads((run / "config.json").read_text())["algo"] == "gaussian"
    assert Policy.load(run).info.policy_family == "gaussian"
    # Resuming builds the agent from the saved config: a diffusion head could not load the Gaussian actor's weights.
    saved = TrainConfig.from_dict(json.loads((run / "config.json").read_text()))
    assert isinstance(DACER2Agent(4, 1, saved).head, GaussianHead)
    resumed = train(TrainConfig(resume=str(run), total_steps=300))
    assert resumed.env_steps == 300 > first.env_steps and Policy.load(run).info.policy_family == "gaussian"


def test_the_gaussian_head_builds_no_diffusion_network():
    """No agent builds what it then throws away: the Gaussian agent's only policy network is the Gaussian actor, and
    its optimiser steps exactly that network's parameters."""
    agent = DACER2Agent(4, 2, TrainConfig(algo="gaussian", actor_hidden=(16,), critic_hidden=(16,)))
    assert isinstance(agent.actor, GaussianActor) and agent.head.actor is agent.actor and agent.policy_family == "gaussian"
    assert not hasattr(agent.head, "chain") and agent.head.traces is False
    optimised = {id(p) for group in agent.actor_optimizer.param_groups for p in group["params"]}
    assert optimised == {id(p) for p in agent.actor.parameters()}
    assert (agent.cfg.eta, agent.backend) == (0.0, "reference")
    with pytest.raises(ValueError, match="no fused kernels"):
        build_head("gaussian", 4, 2, agent.cfg, "fused")
    obs = torch.randn(5, 4)
    # deterministic: the Gaussian mean, the same on every call
    assert torch.equal(agent.act(obs, deterministic=True), agent.act(obs, deterministic=True))
    assert agent.act(obs).shape == (5, 2)
