"""Acting, written once per backend: (obs, weights, noise) -> actions in [-1, 1]. The training agent, the
deployable Policy and the ONNX export all act through these functions.

Each backend has one noise layout, the training agent's, so that who acts never changes training numerics and
the same seed gives the same actions from `agent.act` and `Policy.act` on the same backend:

- reference: the rows of a [T + 1, B, A] block drawn from the generator one by one, in the order they are used:
  the initial sample x_{T-1}, the posterior noise z of steps T-1..1 (only with chain noise on), then the
  exploration noise xi (only when exploring). Rows that are not used are not drawn and stay zero. An exported
  file's `noise` input is this block.
- fused: the dacer2::sample_chain op draws inside the op from a counter-based generator keyed by an rng tensor
  [seed, offset], which one draw from the torch.Generator refills per call. Cheaper at batch 1 than T + 1 draws;
  the numbers differ from the reference's, so the two backends agree in distribution, not draw for draw.
"""

from __future__ import annotations

from typing import Callable

import torch

from dacer2.algo.diffusion import ReverseChain, add_exploration_noise, draw_chain_noise
from dacer2.algo.networks import NoisePredictor


def act_from_noise(actor: NoisePredictor, chain: ReverseChain, obs: torch.Tensor, noise: torch.Tensor,
                   alpha_scale: torch.Tensor | float, chain_noise: bool = True, explore: bool = True,
                   step_emb: torch.Tensor | None = None) -> torch.Tensor:
    """The reverse chain from explicit noise [T + 1, B, A], then clip(x + alpha k xi) when exploring;
    alpha_scale = alpha * k. `step_emb` [T, E] may be given as a constant (the export does)."""
    if step_emb is None:
        step_emb = actor.step_embeddings(chain.num_steps)  # once per call, not once per step
    action = chain.sample(lambda s, x, t: actor(s, x, step_emb[t]), obs, actor.action_dim, chain_noise=chain_noise,
                          noise=noise).action
    if explore:
        action = add_exploration_noise(action, alpha_scale, 1.0, xi=noise[chain.num_steps])
    return action


@torch.no_grad()
def act_reference(actor: NoisePredictor, chain: ReverseChain, obs: torch.Tensor, alpha_scale: torch.Tensor | float,
                  generator: torch.Generator | None, chain_noise: bool, explore: bool) -> torch.Tensor:
    """Acting on the reference backend: its noise layout (rows drawn one by one in the order of use), then
    act_from_noise."""
    noise = draw_chain_noise(chain.num_steps, obs, actor.action_dim, generator, chain_noise=chain_noise,
                             exploration_row=True, draw_exploration=explore)
    return act_from_noise(actor, chain, obs, noise, alpha_scale, chain_noise, explore)


def act_fused(sample_chain_op: Callable, obs: torch.Tensor, packed: torch.Tensor, dims, sched: torch.Tensor,
              alpha_scale: torch.Tensor, rng: torch.Tensor, generator: torch.Generator, chain_noise: bool,
              explore: bool, gemm_dtype: torch.dtype | None = None,
              packed_gemm: torch.Tensor | None = None) -> torch.Tensor:
    """Acting on the fused backend: refill the op's rng tensor from the generator, then one op call that draws its
    own noise. The op never records autograd, so no no_grad context is needed (or paid for) at batch 1.
    packed_gemm is packed cast to gemm_dtype, kept per weight version by the caller (bf16 acting's weights)."""
    rng.random_(generator=generator)
    return sample_chain_op(obs.contiguous(), packed, dims, sched, alpha_scale, rng, None, chain_noise, explore,
                           gemm_dtype, packed_gemm)
