"""The fused backend of DACER2Agent: what `act`, `run_chain`, `critic_value` and `qgrad_field_loss` call when
the agent's backend resolves to "fused". Kept here so agent.py only gains a dispatch line per method.

Noise: acting (`act`) draws its noise inside the op from this object's rng tensor [seed, offset], which is
refilled from the agent's torch.Generator each call (so acting is reproducible from the generator state that
checkpoints save, though not the same numbers as the reference's torch.randn). Every other chain (critic targets, entropy estimate, policy loss)
draws its noise from the agent's torch.Generator in exactly the reference's order and injects it, so a fused
update equals a reference update with the same seed up to float rounding.
"""

from __future__ import annotations

import torch

from dacer2.diffusion import ChainOutput
from dacer2.ops import CRITIC_MODES, ops
from dacer2.ops.packing import PackCache, critic_dims, pack_critic, pack_denoiser, schedule_tensor


class _CriticValue(torch.autograd.Function):
    """q = min/mean/q1 of the twin means; d q / d action from the same fused call (no weight gradients)."""

    @staticmethod
    def forward(ctx, obs, action, packed, dims, mode):
        q, g = ops.critic_action_grad(obs, action.unsqueeze(0), packed, dims, mode)
        ctx.save_for_backward(g[0])
        return q[0]

    @staticmethod
    def backward(ctx, grad_q):
        (g,) = ctx.saved_tensors
        return None, grad_q[:, None] * g, None, None, None


class FusedAgentPaths:
    def __init__(self, agent):
        self.agent = agent
        cfg = agent.cfg
        self.T = agent.chain.num_steps
        self.actor_cache = PackCache(agent.actor, lambda: pack_denoiser(agent.actor, self.T))
        self.critic_cache = PackCache(agent.critic, lambda: pack_critic(agent.critic))
        self.critic_dims = critic_dims(agent.critic, agent.obs_dim, agent.action_dim)
        self.rng = torch.tensor([cfg.seed, 0], dtype=torch.int64, device=agent.device)
        self._sched: dict = {}
        self._alpha_key, self._alpha_scale = None, None
        self._act_state = None
        self._act_params = [*agent.actor.parameters(), agent.log_alpha]
        self._sample = ops.sample_chain.default

    def sched(self, dtype, device) -> torch.Tensor:
        key = (dtype, device)
        if key not in self._sched:
            self._sched[key] = schedule_tensor(self.agent.chain, dtype, device)
        return self._sched[key]

    def alpha_scale(self) -> torch.Tensor:
        log_alpha = self.agent.log_alpha
        key = (log_alpha._version, log_alpha.device, log_alpha.dtype)
        if key != self._alpha_key:
            with torch.no_grad():
                self._alpha_scale = log_alpha.exp() * self.agent.cfg.noise_scale
            self._alpha_key = key
        return self._alpha_scale

    # ---- acting --------------------------------------------------------------------------------------------
    def act(self, obs: torch.Tensor, deterministic: bool) -> torch.Tensor:
        # The batch-1 hot path: one version check covers the actor's weights and alpha; everything the op
        # needs besides obs is cached (packed weights, schedule, alpha * k, the rng tensor on the right device).
        agent, params = self.agent, self._act_params
        # versions change on every in-place update; the first data_ptr changes when the module moves or is cast
        key = (params[0].data_ptr(), *[p._version for p in params])
        state = self._act_state
        if state is None or key != state[0]:
            packed, dims = self.actor_cache.get()
            if self.rng.device != packed.device:
                self.rng = self.rng.to(packed.device)
            state = self._act_state = (key, packed, dims, self.sched(packed.dtype, packed.device), self.alpha_scale())
        _, packed, dims, sched, alpha_scale = state
        chain_noise = agent.cfg.deterministic_chain_noise if deterministic else True
        # A fresh random (seed, offset) from the agent's generator per call: acting stays reproducible from the
        # generator state (tests, checkpoint resume) at the cost of one tiny draw; the op reads it from memory.
        self.rng.random_(generator=agent.generator)
        return self._sample(obs.contiguous(), packed, dims, sched, alpha_scale, self.rng, None, chain_noise,
                            not deterministic)

    # ---- chains with generator noise ------------------------------------------------------------------------
    def _generator_noise(self, obs: torch.Tensor, chain_noise: bool, extra_row: bool) -> torch.Tensor:
        """The reference chain's draws, in its order: x_{T-1}, then z for t = T-1..1 (if chain noise)."""
        agent, T = self.agent, self.T
        B, A = obs.shape[0], agent.action_dim
        rows = [torch.randn(B, A, device=obs.device, dtype=obs.dtype, generator=agent.generator)]
        for t in reversed(range(1, T)):
            if chain_noise:
                rows.append(torch.randn(B, A, device=obs.device, dtype=obs.dtype, generator=agent.generator))
            else:
                rows.append(obs.new_zeros(B, A))
        if extra_row:
            rows.append(obs.new_zeros(B, A))
        return torch.stack(rows)

    def run_chain(self, obs: torch.Tensor, chain_noise: bool) -> ChainOutput:
        agent, T = self.agent, self.T
        obs = obs.contiguous()
        steps = list(reversed(range(T)))
        if not (torch.is_grad_enabled() and any(p.requires_grad for p in agent.actor.parameters())):
            # No graph wanted (critic targets, entropy estimate): the acting op, with injected noise. It keeps
            # no visited states (they would cost T B H memory for the 51,200-row entropy batch).
            packed, dims = self.actor_cache.get()
            noise = self._generator_noise(obs, chain_noise, extra_row=True)
            action = ops.sample_chain(obs, packed, dims, self.sched(obs.dtype, obs.device), self.alpha_scale(),
                                      self.rng, noise, chain_noise, False)
            return ChainOutput(action=action, visited=[], eps=[], steps=[])
        if not agent.cfg.qgrad_stop_gradient:
            # L_g through the chain's own x_t: keep every intermediate x_t a node of the autograd graph (callers
            # may differentiate w.r.t. them), so use the module chain; L_g's pieces stay fused.
            step_emb = agent.actor.step_embeddings(T)
            return agent.chain.sample(lambda s, x, t: agent.actor(s, x, step_emb[t]), obs, agent.action_dim,
                                      agent.generator, chain_noise=chain_noise)
        packed, dims = pack_denoiser(agent.actor, T)
        noise = self._generator_noise(obs, chain_noise, extra_row=False)
        action, visited, eps, _, _ = ops.chain_forward(obs, packed, dims, self.sched(obs.dtype, obs.device), noise,
                                                       True)
        # eps[k] = eps_theta(s, sg(x_t), t): its gradient reaches the weights and obs, not x_t.
        return ChainOutput(action=action, visited=list(visited.unbind(0)), eps=list(eps.unbind(0)), steps=steps)

    # ---- critic --------------------------------------------------------------------------------------------
    def critic_value(self, obs: torch.Tensor, action: torch.Tensor, which: str) -> torch.Tensor:
        packed = self.critic_cache.get()
        return _CriticValue.apply(obs.contiguous(), action.contiguous(), packed, self.critic_dims, CRITIC_MODES[which])

    def qgrad_field_loss(self, obs: torch.Tensor, chain: ChainOutput) -> torch.Tensor:
        agent = self.agent
        visited = torch.stack(chain.visited).detach()
        if "critic_value" in vars(agent):
            # A caller replaced the critic (e.g. a known Q in tests): differentiate that function instead.
            T, (B, S) = visited.shape[0], obs.shape
            probe = visited.reshape(T * B, -1).requires_grad_(True)
            q = agent.critic_value(obs.expand(T, B, S).reshape(T * B, S), probe, agent.cfg.qgrad_critic)
            (g,) = torch.autograd.grad(q.sum(), probe)
            g = g.view_as(visited).contiguous()
        else:
            _, g = ops.critic_action_grad(obs.contiguous(), visited, self.critic_cache.get(), self.critic_dims,
                                          CRITIC_MODES[agent.cfg.qgrad_critic])
        steps = torch.tensor(chain.steps, device=obs.device)
        weight = agent.step_weight[steps].to(visited.dtype).contiguous()
        return ops.qgrad_loss(torch.stack(chain.eps), g, weight)
