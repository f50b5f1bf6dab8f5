"""DACER2, top to bottom: acting with the reverse diffusion chain, the distributional critic update, the policy
update L_q + eta L_g, target and alpha updates. Section numbers refer to docs/algorithm.md.

The policy is a head chosen by --algo (dacer2/algo/heads.py): for DACER2 the reverse diffusion chain, which samples,
acts and computes L_g's pieces; the critic's value and action-gradient come from a critic backend
(dacer2/algo/agent_backend.py). Each is plain PyTorch, the definition, or the fused dacer2:: ops, which must
reproduce it (dacer2/ops/agent_backend.py).

Actions live in [-1, 1]^A; the environment wrapper rescales them to the env's bounds.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from dacer2.algo.agent_backend import CriticBackend, ReferenceCritic
from dacer2.algo.diffusion import ChainTrace, add_exploration_noise, temporal_weight
from dacer2.algo.entropy import estimate_entropy
from dacer2.algo.heads import PolicyHead, head_for
from dacer2.algo.networks import TwinDistributionalCritic
from dacer2.algo.precision import gemm_dtype
from dacer2.config import TrainConfig
from dacer2.train.replay import Batch  # the replay batch the update consumes

# Constants the algorithm fixes that are not flags (docs/algorithm.md).
CRITIC_LOSS_EPS = 0.1  # the eps of the DSAC-T loss (section 2)
TARGET_NOISE_CLIP = 3.0  # clip(z, -3, 3) of the sampled target, and the +-3 b_i clip of y_b


def distributional_critic_loss(
    mu: torch.Tensor,
    sigma: torch.Tensor,
    y: torch.Tensor,
    y_sample: torch.Tensor,
    sigma_running: torch.Tensor,
    eps: float = CRITIC_LOSS_EPS,
) -> torch.Tensor:
    """DSAC-T's loss for one critic (algorithm.md §2), summed here over the twin axis.

    mu, sigma: [2, B]; y, y_sample: [B]; sigma_running: [2] running mean b_i of mean(sigma_i).
    The mean term pulls mu toward the min-target y; the sigma term matches sigma to the error against the
    sampled target y_s, with that error clipped to +-3 b_i so single outliers cannot blow sigma up.
    """
    b = sigma_running[:, None]
    sd = sigma.detach().clamp(min=0.0)
    y_bound = (mu + (y_sample - mu).clamp(-TARGET_NOISE_CLIP * b, TARGET_NOISE_CLIP * b)).detach()
    mean_term = mu * (y - mu).detach() / (sd.pow(2) + eps)
    sigma_term = sigma * ((mu.detach() - y_bound).pow(2) - sd.pow(2)) / (sd.pow(3) + eps)
    per_critic = -(b[:, 0].pow(2) + eps) * (mean_term + sigma_term).mean(dim=1)
    return per_critic.sum()


class DACER2Agent(nn.Module):
    def __init__(self, obs_dim: int, action_dim: int, config: TrainConfig, device: torch.device | str = "cpu"):
        super().__init__()
        cfg = config.resolved()  # idempotent: fills only what presets control
        self.cfg = cfg
        self.obs_dim, self.action_dim = obs_dim, action_dim
        self.device = torch.device(device)

        # Compute backend: "fused" dacer2:: ops or the plain-PyTorch "reference" (resolution: dacer2/ops/__init__.py).
        from dacer2.ops import resolve_backend

        self.backend = resolve_backend(cfg.backend, self.device, cfg.activation)
        # Section 1: the policy, a head chosen by --algo; for DACER2 the reverse chain of a small diffusion model.
        # Built first, so its initial weights are the first drawn from the seed.
        self.head: PolicyHead = head_for(cfg, obs_dim, action_dim, self.backend)
        self.actor = self.head.actor
        # Section 2: twin distributional critics (stacked weights) and their target copies.
        activation = cfg.activation
        if self.backend == "fused":
            from dacer2.ops.agent_backend import critic_activation

            activation = critic_activation(cfg)
        self.critic = TwinDistributionalCritic(obs_dim, action_dim, cfg.critic_hidden, activation,
                                               gemm_dtype(cfg.precision))
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        # Section 4: alpha scales the exploration noise of the executed action.
        self.log_alpha = nn.Parameter(torch.tensor(math.log(cfg.initial_alpha)))
        self.target_entropy = cfg.target_entropy_scale * action_dim
        self.register_buffer("sigma_running", torch.zeros(2))  # b_i of the critic loss
        self.register_buffer("entropy", torch.tensor(float("nan")))  # last H_hat
        # Section 3: w(t), indexed by step t, and the same weights in the chain's visit order (t = T-1 first).
        w = temporal_weight(cfg.diffusion_steps, cfg.weight_c, cfg.weight_d, enabled=bool(cfg.temporal_weighting))
        self.register_buffer("step_weight", w.float())
        self.register_buffer("visit_weight", w.float().flip(0), persistent=False)  # derived: not in checkpoints
        self.to(self.device)

        # A CUDA graph replays Adam only if its step count lives on the device (capturable).
        capturable = self.device.type == "cuda" and cfg.cuda_graphs == "on"
        self.actor_optimizer = torch.optim.Adam(self.actor.parameters(), lr=cfg.actor_lr, capturable=capturable)
        self.critic_optimizer = torch.optim.Adam(self.critic.parameters(), lr=cfg.critic_lr, capturable=capturable)
        self.alpha_optimizer = torch.optim.Adam([self.log_alpha], lr=cfg.alpha_lr)
        self.generator = torch.Generator(self.device)
        self.generator.manual_seed(cfg.seed)
        self.num_updates = 0
        self._sigma_running_initialised = False
        self._last_policy_metrics: dict[str, torch.Tensor] = {}
        self.head.attach(self.log_alpha, self.generator)
        self.critic_compute: CriticBackend = ReferenceCritic(self.critic)
        if self.backend == "fused":
            from dacer2.ops.agent_backend import FusedCritic

            self.critic_compute = FusedCritic(self.critic_compute, obs_dim, action_dim)

    @property
    def policy_family(self) -> str:
        """The head's family ("diffusion" or "gaussian"), stored in checkpoints for Policy.load."""
        return self.head.family

    @property
    def alpha(self) -> torch.Tensor:
        return self.log_alpha.exp()

    # ----------------------------------------------------------------------------------------------------
    # Section 1: acting.
    # ----------------------------------------------------------------------------------------------------
    def sample_policy(self, obs: torch.Tensor, chain_noise: bool = True) -> torch.Tensor:
        """The policy's action before the exploration noise (the chain's x_0), differentiable w.r.t. the actor's
        weights when grad mode is on."""
        return self.head.sample(obs, chain_noise)

    def trace_chain(self, obs: torch.Tensor, chain_noise: bool = True) -> ChainTrace:
        """The reverse chain with every state it visited and the prediction there, stacked [T, B, A] in visit
        order, differentiable w.r.t. the actor's weights (diffusion heads only)."""
        return self.head.trace(obs, chain_noise)

    def explore(self, chain_action: torch.Tensor) -> torch.Tensor:
        """The executed action: chain output plus alpha-scaled noise (alpha is not trained by the actor)."""
        return add_exploration_noise(chain_action, self.alpha.detach(), self.cfg.noise_scale, self.generator)

    def act(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        """Actions in [-1, 1] for a batch of states. Deterministic = no alpha-noise (and no chain noise if the
        deterministic_chain_noise switch is off). Never builds a graph."""
        return self.head.act(obs, deterministic)

    # ----------------------------------------------------------------------------------------------------
    # Section 2: critic.
    # ----------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def critic_targets(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """y (min of the target means) and the sampled target y_s of the critic with the lower mean."""
        next_action = self.explore(self.sample_policy(batch.next_obs))
        mu_next, sigma_next = self.critic_target(batch.next_obs, next_action)
        lower = mu_next.argmin(dim=0, keepdim=True)
        mu_low = mu_next.gather(0, lower)[0]
        sigma_low = sigma_next.gather(0, lower)[0]
        z = torch.randn(mu_low.shape, device=mu_low.device, generator=self.generator)
        sampled = mu_low + sigma_low * z.clamp(-TARGET_NOISE_CLIP, TARGET_NOISE_CLIP)
        reward = self.cfg.reward_scale * batch.reward
        discount = self.cfg.gamma * (1.0 - batch.terminated)
        return reward + discount * mu_low, reward + discount * sampled

    def critic_loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        y, y_sample = self.critic_targets(batch)
        mu, sigma = self.critic(batch.obs, batch.action)
        mean_sigma = sigma.detach().mean(dim=1)
        if self._sigma_running_initialised:
            self.sigma_running.lerp_(mean_sigma, self.cfg.tau)
        else:
            self.sigma_running.copy_(mean_sigma)
            self._sigma_running_initialised = True
        loss = distributional_critic_loss(mu, sigma, y, y_sample, self.sigma_running)
        return loss, {"critic_loss": loss.detach(), "q_mean": mu.detach().mean(), "q_sigma": mean_sigma.mean()}

    # ----------------------------------------------------------------------------------------------------
    # Section 3: policy loss L_q + eta L_g.
    # ----------------------------------------------------------------------------------------------------
    def critic_value(self, obs: torch.Tensor, action: torch.Tensor, which: str = "min") -> torch.Tensor:
        """A scalar Q per sample from the twin means (min, mean or q1), through frozen critic weights (gradients
        reach the action). obs [B, S]; action [B, A], or a stack [T, B, A] of actions for the same states.
        Tests replace this method with a known Q; L_g then differentiates theirs."""
        return self.critic_compute.critic_value(obs, action, which)

    def action_grad(self, obs: torch.Tensor, action: torch.Tensor, which: str = "min") -> torch.Tensor:
        """g = d Q(s, a) / d a of critic_value at the stacked actions [T, B, A], as a plain tensor (the fused
        critic op computes it in its forward pass; the reference differentiates critic_value)."""
        return self.critic_compute.action_grad(obs, action, which)

    def qgrad_field_loss(self, obs: torch.Tensor, trace: ChainTrace) -> torch.Tensor:
        """L_g: at every visited (x_t, t), supervise eps_theta with u_t = -w(t) g_hat_t, g_t = grad_a Q(s, sg(x_t))."""
        grad_q = self.action_grad(obs, trace.visited.detach(), self.cfg.qgrad_critic)
        # eps_theta(s, sg(x_t), t) under qgrad_stop_gradient: the chain's eps values, no gradient into x_t.
        eps = self.head.qgrad_eps(obs, trace)
        return self.head.qgrad_loss(eps, grad_q, self.visit_weight)

    def policy_loss(self, obs: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        # L_g needs every state the chain visited; without it a sample is the same computation.
        trace = self.trace_chain(obs) if self.cfg.eta > 0 else None
        action = self.explore(trace.action if trace is not None else self.sample_policy(obs))
        loss_q = -self.critic_value(obs, action, "min").mean()
        metrics = {"policy_loss_q": loss_q.detach()}
        loss = loss_q
        if self.cfg.eta > 0:
            loss_g = self.qgrad_field_loss(obs, trace)
            loss = loss + self.cfg.eta * loss_g
            metrics["policy_loss_g"] = loss_g.detach()
        return loss, metrics

    # ----------------------------------------------------------------------------------------------------
    # Section 4: entropy regulator.
    # ----------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def estimate_entropy(self, obs: torch.Tensor) -> torch.Tensor:
        """H_hat: mean over states of the GMM upper-bound entropy of K executed actions per state."""
        n, k = obs.shape[0], self.cfg.entropy_samples
        obs_rep = obs.repeat_interleave(k, dim=0)
        actions = self.explore(self.sample_policy(obs_rep)).view(n, k, self.action_dim)
        return estimate_entropy(actions, n_components=self.cfg.gmm_components).mean()

    def refits_entropy_next(self) -> bool:
        """Whether the next update re-estimates the entropy and steps alpha (one update in alpha_every)."""
        return self.num_updates % self.cfg.alpha_every == 0

    def update_alpha(self, obs: torch.Tensor) -> None:
        self.entropy.copy_(self.estimate_entropy(obs[: self.cfg.entropy_states]))
        alpha_loss = -self.log_alpha * (self.target_entropy - self.entropy)
        self.alpha_optimizer.zero_grad()
        alpha_loss.backward()
        self.alpha_optimizer.step()

    # ----------------------------------------------------------------------------------------------------
    # Section 5: one gradient update. Both losses use the networks as they were before this update's step.
    # ----------------------------------------------------------------------------------------------------
    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        """One update; returns detached metric tensors (no host sync here: callers read them when logging)."""
        metrics = self.gradient_step(batch, self.updates_policy_next(), self.updates_targets_next())
        return self.finish_update(batch, metrics)

    def updates_policy_next(self) -> bool:
        return self.num_updates % self.cfg.delay == 0

    def updates_targets_next(self) -> bool:
        return self.num_updates % self.cfg.target_every == 0

    def gradient_step(self, batch: Batch, update_policy: bool, update_targets: bool) -> dict[str, torch.Tensor]:
        """The critic step, the policy step (when update_policy) and Polyak (when update_targets). Nothing in it
        synchronises with the host or branches on a tensor's value, so a CUDA graph can capture it once per
        (update_policy, update_targets) and replay it (dacer2/train/update_graphs.py)."""
        loss, metrics = self.critic_loss(batch)
        if update_policy:
            policy_loss, policy_metrics = self.policy_loss(batch.obs)
            loss = loss + policy_loss
            metrics["policy"] = policy_metrics

        self.critic_optimizer.zero_grad()
        self.actor_optimizer.zero_grad()
        # One backward: the critic loss never reaches the actor (targets are no-grad, actions come from replay)
        # and the policy loss never reaches the critic weights (detach_params), so the sum separates exactly.
        loss.backward()
        self.critic_optimizer.step()
        if update_policy:
            self.actor_optimizer.step()
        if update_targets:
            with torch.no_grad():
                torch._foreach_lerp_(list(self.critic_target.parameters()), list(self.critic.parameters()), self.cfg.tau)
        return metrics

    def finish_update(self, batch: Batch, metrics: dict) -> dict[str, torch.Tensor]:
        """The rest of an update, outside any graph: the entropy fit and alpha step (one update in alpha_every),
        the update count and the metrics."""
        metrics = dict(metrics)
        if "policy" in metrics:
            self._last_policy_metrics = metrics.pop("policy")
        if self.refits_entropy_next():
            self.update_alpha(batch.obs)

        self.num_updates += 1
        metrics.update(self._last_policy_metrics)
        metrics["alpha"] = self.alpha.detach()
        metrics["entropy"] = self.entropy.clone()
        return metrics

    def forget_cached_weights(self) -> None:
        """After a CUDA graph replay changed the weights in place (no version bump): repack before the next use."""
        self.head.forget_cached_weights()
        self.critic_compute.forget_cached_weights()

    # ----------------------------------------------------------------------------------------------------
    # Persistence.
    # ----------------------------------------------------------------------------------------------------
    def training_state(self) -> dict:
        return {
            "modules": self.state_dict(),
            "actor_optimizer": self.actor_optimizer.state_dict(),
            "critic_optimizer": self.critic_optimizer.state_dict(),
            "alpha_optimizer": self.alpha_optimizer.state_dict(),
            "num_updates": self.num_updates,
            "sigma_running_initialised": self._sigma_running_initialised,
            "generator": self.generator.get_state(),
            "last_policy_metrics": self._last_policy_metrics,
        }

    def load_training_state(self, state: dict) -> None:
        self.load_state_dict(state["modules"])
        self.actor_optimizer.load_state_dict(state["actor_optimizer"])
        self.critic_optimizer.load_state_dict(state["critic_optimizer"])
        self.alpha_optimizer.load_state_dict(state["alpha_optimizer"])
        self.num_updates = int(state["num_updates"])
        self._sigma_running_initialised = bool(state["sigma_running_initialised"])
        self.generator.set_state(state["generator"])
        self._last_policy_metrics = {k: v.to(self.device) for k, v in state["last_policy_metrics"].items()}
