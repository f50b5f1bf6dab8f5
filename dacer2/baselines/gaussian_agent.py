"""GaussianAgent: DACER2Agent with the diffusion chain replaced by a Gaussian head (see dacer2/baselines/gaussian_actor.py for why
and what stays the same)."""

from __future__ import annotations

import dataclasses

import torch

from dacer2.agent import DACER2Agent
from dacer2.config import GAUSSIAN_ALGO, TrainConfig
from dacer2.diffusion import ChainTrace
from dacer2.baselines.gaussian_actor import POLICY_FAMILY, GaussianActor


class GaussianAgent(DACER2Agent):
    """DACER2Agent whose policy is a Gaussian head instead of the diffusion chain (see the module docstring)."""

    policy_family = POLICY_FAMILY

    def __init__(self, obs_dim: int, action_dim: int, config: TrainConfig, device: torch.device | str = "cpu"):
        # Resolved as --algo gaussian whatever the config says: no chain steps, so no L_g (eta 0), and the
        # reference backend (the fused kernels are written for the diffusion actor); diffusion_steps only sizes the
        # unused chain.
        config = dataclasses.replace(config, algo=GAUSSIAN_ALGO).resolved()
        super().__init__(obs_dim, action_dim, config, device)
        self.actor = GaussianActor(obs_dim, action_dim, config.actor_hidden, config.activation).to(self.device)
        self.actor_optimizer = torch.optim.Adam(self.actor.parameters(), lr=config.actor_lr)

    def sample_chain(self, obs: torch.Tensor, chain_noise: bool = True) -> torch.Tensor:
        # The inherited critic targets, policy loss and entropy estimate sample the policy through here: the
        # Gaussian (chain_noise=False means "no sampling noise", i.e. the mean).
        return self.actor.sample(obs, self.generator, deterministic=not chain_noise)

    def trace_chain(self, obs: torch.Tensor, chain_noise: bool = True) -> ChainTrace:
        # No chain steps to visit (eta is 0, so L_g never reads them).
        action = self.sample_chain(obs, chain_noise)
        empty = action.new_empty(0, *action.shape)
        return ChainTrace(action=action, visited=empty, eps=empty)

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        if deterministic:  # the mean, whatever deterministic_chain_noise says: that switch is about the chain
            return self.actor.sample(obs, None, deterministic=True)
        return self.explore(self.sample_chain(obs))
