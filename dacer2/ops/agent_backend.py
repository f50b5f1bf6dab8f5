"""The fused backends: the diffusion head (dacer2.algo.heads.DiffusionHead) and the critic computations
(dacer2.algo.agent_backend.ReferenceCritic) through the dacer2:: ops.

Noise: acting (`act`) draws its noise inside the op from this head's rng tensor [seed, offset], which is refilled
from the agent's torch.Generator each call (so acting is reproducible from the generator state that checkpoints
save, though not the same numbers as the reference's torch.randn). Every other chain (critic targets, entropy
estimate, policy loss) draws its noise with draw_chain_noise, as the reference chain does, and injects it, so a
fused update equals a reference update with the same seed up to float rounding. The op's stacked [T, B, A]
outputs go to the agent as they are.

Where an op cannot serve, the reference computation does: the chain whose eps must keep their gradient into x_t
(qgrad_stop_gradient off), and a critic value whose obs requires grad (the op gives obs no gradient).
"""

from __future__ import annotations

import torch

from dacer2.algo.acting import act_fused
from dacer2.algo.agent_backend import ReferenceCritic
from dacer2.algo.diffusion import ChainTrace, draw_chain_noise
from dacer2.algo.heads import DiffusionHead
from dacer2.ops import CRITIC_MODES, new_rng_state, ops
from dacer2.ops.packing import PackCache, critic_dims, pack_critic, pack_denoiser, schedule_tensor


class _CriticValue(torch.autograd.Function):
    """q = min/mean/q1 of the twin means for action [B, A] or [T, B, A]; d q / d action comes from the same fused
    call (no weight gradients), so differentiating q costs no second pass."""

    @staticmethod
    def forward(ctx, obs, action, packed, dims, mode, gemm_dtype):
        single = action.dim() == 2
        q, g = ops.critic_action_grad(obs, action.unsqueeze(0) if single else action, packed, dims, mode, gemm_dtype)
        ctx.save_for_backward(g[0] if single else g)
        return q[0] if single else q

    @staticmethod
    def backward(ctx, grad_q):
        (g,) = ctx.saved_tensors
        return None, grad_q[..., None] * g, None, None, None, None


class FusedDiffusionHead(DiffusionHead):
    backend = "fused"

    def attach(self, log_alpha: torch.Tensor, generator: torch.Generator) -> None:
        super().attach(log_alpha, generator)
        actor, self.T = self.actor, self.chain.num_steps
        self.actor_cache = PackCache(actor, lambda: pack_denoiser(actor, self.T))
        self.rng = new_rng_state(self.cfg.seed, log_alpha.device)
        self._sched: dict = {}
        self._alpha_key, self._alpha_scale = None, None
        self._act_state = None
        self._act_params = [*actor.parameters(), log_alpha]
        self._sample = ops.sample_chain.default

    def forget_cached_weights(self) -> None:
        self.actor_cache.forget()
        self._act_state, self._alpha_key = None, None

    def sched(self, dtype, device) -> torch.Tensor:
        key = (dtype, device)
        if key not in self._sched:
            self._sched[key] = schedule_tensor(self.chain, dtype, device)
        return self._sched[key]

    def alpha_scale(self) -> torch.Tensor:
        log_alpha = self.log_alpha
        key = (log_alpha._version, log_alpha.device, log_alpha.dtype)
        if key != self._alpha_key:
            with torch.no_grad():
                self._alpha_scale = log_alpha.exp() * self.cfg.noise_scale
            self._alpha_key = key
        return self._alpha_scale

    # ---- acting --------------------------------------------------------------------------------------------
    def act(self, obs: torch.Tensor, deterministic: bool) -> torch.Tensor:
        # The batch-1 hot path: one version check covers the actor's weights and alpha; everything the op
        # needs besides obs is cached (packed weights, schedule, alpha * k, the rng tensor on the right device).
        params = self._act_params
        # versions change on every in-place update; the first data_ptr changes when the module moves or is cast
        key = (params[0].data_ptr(), *[p._version for p in params])
        state = self._act_state
        if state is None or key != state[0]:
            packed, dims = self.actor_cache.get()
            if self.rng.device != packed.device:
                self.rng = self.rng.to(packed.device)
            gemm_dtype = self.actor.gemm_dtype
            # bf16: the weights cast once per version, not per action (the op's small-batch loops read them)
            packed_gemm = packed.to(gemm_dtype) if gemm_dtype is not None else None
            state = self._act_state = (key, packed, dims, self.sched(packed.dtype, packed.device), self.alpha_scale(),
                                       packed_gemm)
        _, packed, dims, sched, alpha_scale, packed_gemm = state
        chain_noise = self.cfg.deterministic_chain_noise if deterministic else True
        # A fresh random (seed, offset) from the agent's generator per call: acting stays reproducible from the
        # generator state (tests, checkpoint resume, a Policy with the same seed) at the cost of one tiny draw.
        return act_fused(self._sample, obs, packed, dims, sched, alpha_scale, self.rng, self.generator, chain_noise,
                         not deterministic, self.actor.gemm_dtype, packed_gemm)

    # ---- chains with generator noise ------------------------------------------------------------------------
    def sample(self, obs: torch.Tensor, chain_noise: bool = True) -> torch.Tensor:
        if torch.is_grad_enabled() and any(p.requires_grad for p in self.actor.parameters()):
            return self.trace(obs, chain_noise).action
        # No graph wanted (critic targets, entropy estimate): the acting op, with injected noise. It keeps no
        # visited states (they would cost T B H memory for the 51,200-row entropy batch).
        obs = obs.contiguous()
        packed, dims = self.actor_cache.get()
        noise = draw_chain_noise(self.T, obs, self.actor.action_dim, self.generator, chain_noise=chain_noise,
                                 exploration_row=True)
        return ops.sample_chain(obs, packed, dims, self.sched(obs.dtype, obs.device), self.alpha_scale(), self.rng,
                                noise, chain_noise, False, self.actor.gemm_dtype)

    def trace(self, obs: torch.Tensor, chain_noise: bool = True) -> ChainTrace:
        if not self.cfg.qgrad_stop_gradient:
            # L_g through the chain's own x_t: keep every intermediate x_t a node of the autograd graph (callers
            # may differentiate w.r.t. them), so use the module chain; L_g's pieces stay fused.
            return super().trace(obs, chain_noise)
        obs = obs.contiguous()
        packed, dims = pack_denoiser(self.actor, self.T)
        noise = draw_chain_noise(self.T, obs, self.actor.action_dim, self.generator, chain_noise=chain_noise)
        action, visited, eps, _, _ = ops.chain_forward(obs, packed, dims, self.sched(obs.dtype, obs.device), noise,
                                                       True, self.actor.gemm_dtype)
        # eps[k] = eps_theta(s, sg(x_t), t): its gradient reaches the weights and obs, not x_t.
        return ChainTrace(action=action, visited=visited, eps=eps)

    # ---- L_g ------------------------------------------------------------------------------------------------
    def qgrad_eps(self, obs: torch.Tensor, trace: ChainTrace) -> torch.Tensor:
        # trace's eps already are what L_g supervises: chain_forward made them at sg(x_t) under
        # qgrad_stop_gradient, and the module chain's own are wanted otherwise.
        return trace.eps

    def qgrad_loss(self, eps: torch.Tensor, grad_q: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return ops.qgrad_loss(eps, grad_q.contiguous(), weight.to(eps.dtype).contiguous())


def critic_activation(cfg) -> object:
    """The eager critic's activation on the fused backend. In bf16 its GEMMs shrink ~4x and aten's mish and
    mish_backward become the largest cost of the critic update, so mish runs through dacer2::mish (one exp, the
    derivative saved for the backward). fp32 keeps aten's, so its numerics stay those of every earlier run."""
    if cfg.precision == "bf16" and cfg.activation == "mish":
        return lambda x: ops.mish(x.contiguous())[0]
    return cfg.activation


class FusedCritic:
    def __init__(self, reference: ReferenceCritic, obs_dim: int, action_dim: int):
        self.reference = reference
        critic = reference.critic
        self.critic_cache = PackCache(critic, lambda: pack_critic(critic))
        self.critic_dims = critic_dims(critic, obs_dim, action_dim)
        self.gemm_dtype = critic.layers[0].gemm_dtype

    def forget_cached_weights(self) -> None:
        self.critic_cache.forget()

    def critic_value(self, obs: torch.Tensor, action: torch.Tensor, which: str) -> torch.Tensor:
        if obs.requires_grad:
            return self.reference.critic_value(obs, action, which)
        packed = self.critic_cache.get()
        return _CriticValue.apply(obs.contiguous(), action.contiguous(), packed, self.critic_dims, CRITIC_MODES[which],
                                  self.gemm_dtype)

    def action_grad(self, obs: torch.Tensor, action: torch.Tensor, which: str) -> torch.Tensor:
        # The op computes q and d q / d action in one pass; the gradient is all L_g needs.
        single = action.dim() == 2
        stacked = action.detach().unsqueeze(0) if single else action.detach()
        _, grad = ops.critic_action_grad(obs.contiguous(), stacked.contiguous(), self.critic_cache.get(),
                                         self.critic_dims, CRITIC_MODES[which], self.gemm_dtype)
        return grad[0] if single else grad
