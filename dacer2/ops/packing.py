"""Flat parameter buffers the fused ops read: one contiguous tensor per network instead of a dozen tensor
arguments (each costs dispatcher time at batch 1), in the layout csrc/kernels.h documents.

Denoiser, dims = [S, A, T, H1, ..., HL]:
    w1o_t [S,H1] | w1x_t [A,H1] | step_bias [T,H1] | (W_l_t [H_{l-1},H_l] | b_l [H_l]) for l = 2..L | wo_t [HL,A] | bo [A]
  every weight transposed to [in, out]; step_bias[t] = W1_emb @ emb(t) + b1 folds the time embedding's share of
  layer 1 and its bias into one row per step (the observation's share is computed once per call by the ops).
Critic, dims = [S, A, H1, ..., HL]: per layer weight [2, in, out] then bias [2, out] (the module's own order;
critic_layers reads it back).
Schedule, [5, T]: coef_x, coef_eps, c1, c2, std of each step t.

`pack_denoiser` is differentiable (cat/transpose/matmul), so the training op's gradient w.r.t. the packed
buffer flows back into the module's parameters by ordinary autograd.
"""

from __future__ import annotations

import torch

from dacer2.algo.diffusion import ReverseChain
from dacer2.algo.networks import NoisePredictor, TwinDistributionalCritic


def denoiser_dims(actor: NoisePredictor, num_steps: int) -> list[int]:
    return [actor.obs_dim, actor.action_dim, num_steps, *(layer.out_features for layer in actor.hidden)]


def pack_denoiser(actor: NoisePredictor, num_steps: int) -> tuple[torch.Tensor, list[int]]:
    S, A = actor.obs_dim, actor.action_dim
    first = actor.hidden[0]
    w1, b1 = first.weight, first.bias  # [H1, S + A + E]
    emb = actor.step_embeddings(num_steps)  # [T, E]
    parts = [w1[:, :S].t(), w1[:, S : S + A].t(), torch.addmm(b1, emb, w1[:, S + A :].t())]
    for layer in actor.hidden[1:]:
        parts += [layer.weight.t(), layer.bias]
    parts += [actor.out.weight.t(), actor.out.bias]
    return torch.cat([p.reshape(-1) for p in parts]), denoiser_dims(actor, num_steps)


def unpack_denoiser(packed: torch.Tensor, dims: list[int]):
    """Views (w1o_t, w1x_t, step_bias, [(W_t, b), ...], wo_t, bo) of a packed denoiser buffer."""
    S, A, T, *H = dims
    sizes = [(S, H[0]), (A, H[0]), (T, H[0])]
    for i in range(1, len(H)):
        sizes += [(H[i - 1], H[i]), (H[i],)]
    sizes += [(H[-1], A), (A,)]
    out, off = [], 0
    for shape in sizes:
        n = 1
        for s in shape:
            n *= s
        out.append(packed[off : off + n].view(shape))
        off += n
    if off != packed.numel():
        raise ValueError(f"dacer2: packed denoiser has {packed.numel()} values, dims {dims} need {off}")
    w1o, w1x, sb, *rest = out
    hidden = [(rest[2 * i], rest[2 * i + 1]) for i in range(len(H) - 1)]
    return w1o, w1x, sb, hidden, rest[-2], rest[-1]


def critic_dims(critic: TwinDistributionalCritic, obs_dim: int, action_dim: int) -> list[int]:
    return [obs_dim, action_dim, *(layer.weight.shape[2] for layer in critic.layers[:-1])]


def pack_critic(critic: TwinDistributionalCritic) -> torch.Tensor:
    return torch.cat([p.reshape(-1) for p in critic.parameters()])


def critic_layers(packed: torch.Tensor, dims: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(weight [2, in, out], bias [2, 1, out]) views of every layer of a packed twin critic."""
    S, A, *H = dims
    sizes = [S + A, *H, 2]
    layers, off = [], 0
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        w = packed[off : off + 2 * n_in * n_out].view(2, n_in, n_out)
        off += 2 * n_in * n_out
        layers.append((w, packed[off : off + 2 * n_out].view(2, 1, n_out)))
        off += 2 * n_out
    return layers


def schedule_tensor(chain: ReverseChain, dtype=torch.float32, device="cpu") -> torch.Tensor:
    """The chain's constants as one [5, T] tensor; ReverseChain.from_coefficients(tensor) runs the same chain."""
    return torch.tensor([list(row) for row in chain.coefficients], dtype=dtype, device=device)


class PackCache:
    """Caches a no-grad pack of a module, keyed on its parameters' version counters (bumped by every in-place
    optimizer step or load_state_dict), so acting repacks only after the weights changed."""

    def __init__(self, module: torch.nn.Module, pack_fn):
        self.module, self.pack_fn = module, pack_fn
        self._params = list(module.parameters())
        self._key, self._value = None, None

    def forget(self) -> None:
        """Repack at the next get(): a replayed CUDA graph changes the weights without bumping their versions."""
        self._key = None

    def get(self):
        p0 = self._params[0]  # moving or casting the module changes its device/dtype but not the versions
        key = (p0.device, p0.dtype, *[p._version for p in self._params])
        if key != self._key:
            with torch.no_grad():
                self._value = self.pack_fn()
            self._key = key
        return self._value
