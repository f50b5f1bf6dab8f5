"""The dacer2:: operator library: schemas, fake (meta) kernels, autograd formulas, and device-agnostic kernels
(FALLBACK_KERNELS) registered as CompositeExplicitAutograd so every device has one. The C++ extension (dacer2._C)
adds CPU kernels and dacer2/ops/cuda.py the CUDA ones; a backend-specific kernel wins over the composite.
"""

from __future__ import annotations

import torch

from dacer2.ops import composed
from dacer2.ops import reference as ref

NAMESPACE = "dacer2"

SCHEMAS = {
    # gemm_dtype (every op with matrix multiplies): None multiplies in the inputs' dtype, torch.bfloat16 rounds both
    # operands and the product to bf16 with fp32 accumulation (dacer2/algo/precision.py).
    # Acting: the whole chain, no grad. rng = int64 [seed, offset]; offset advances by (T+1) B A per call
    # unless `noise` [T+1, B, A] is injected (row 0 initial x, rows 1..T-1 chain noise, row T exploration).
    # packed_gemm: optionally `packed` already cast to gemm_dtype, kept by the caller per weight version; the CPU
    # kernel's small-batch loops read their weights from it (same values as casting per call, half the bytes).
    "sample_chain": "sample_chain(Tensor obs, Tensor packed, int[] dims, Tensor sched, Tensor alpha_scale, "
    "Tensor(a!) rng, Tensor? noise, bool chain_noise, bool explore, ScalarType? gemm_dtype=None, "
    "Tensor? packed_gemm=None) -> Tensor",
    # Training chain: noise [T, B, A] (row 0 initial x, rows 1.. chain noise). Returns action, visited x_t
    # [T, B, A], eps [T, B, A] and what the backward needs (post-activations and mish' of every layer).
    "chain_forward": "chain_forward(Tensor obs, Tensor packed, int[] dims, Tensor sched, Tensor noise, "
    "bool eps_stop_grad, ScalarType? gemm_dtype=None) -> (Tensor, Tensor, Tensor, Tensor, Tensor)",
    "chain_backward": "chain_backward(Tensor grad_action, Tensor? grad_visited, Tensor? grad_eps, Tensor obs, "
    "Tensor packed, int[] dims, Tensor sched, Tensor noise, Tensor visited, Tensor eps, Tensor saved_h, "
    "Tensor saved_d, bool eps_stop_grad, ScalarType? gemm_dtype=None) -> (Tensor, Tensor)",
    # L_g = mean((eps - u)^2), u = -w_k g / (||g|| + 1e-8); weight [T] in visit order.
    "qgrad_loss": "qgrad_loss(Tensor eps, Tensor g, Tensor weight) -> Tensor",
    "qgrad_loss_backward": "qgrad_loss_backward(Tensor grad, Tensor eps, Tensor g, Tensor weight) -> Tensor",
    # min/mean/q1 (mode 0/1/2) of the twin means and its action-gradient for action [N, B, A], obs [B, S].
    "critic_action_grad": "critic_action_grad(Tensor obs, Tensor action, Tensor packed, int[] dims, int mode, "
    "ScalarType? gemm_dtype=None) -> (Tensor, Tensor)",
    # mish(x) and mish'(x) (saved for the backward), elementwise on a contiguous tensor of any shape.
    "mish": "mish(Tensor x) -> (Tensor, Tensor)",
}

# The kernel of every device without a compiled one. The reference twins serve, except for the two whose twin
# differentiates by autograd: below autograd in the dispatcher that would record nothing and return zero
# gradients, so those two take composed.py's explicit backward passes.
FALLBACK_KERNELS = {name: getattr(ref, name) for name in SCHEMAS}
FALLBACK_KERNELS.update(chain_backward=composed.chain_backward, critic_action_grad=composed.critic_action_grad)

_lib = torch.library.Library(NAMESPACE, "DEF")
for _name, _schema in SCHEMAS.items():
    _lib.define(_schema)
    _lib.impl(_name, FALLBACK_KERNELS[_name], "CompositeExplicitAutograd")

ops = torch.ops.dacer2


# ---- fake kernels -----------------------------------------------------------------------------------------
def check_devices(name: str, obs: torch.Tensor, **tensors) -> None:
    """Every kernel (fake, reference, Triton) rejects mixed devices with the same message as the C++ one."""
    for key, t in tensors.items():
        if t is not None and t.device != obs.device:
            raise RuntimeError(f"dacer2::{name}: {key} is on {t.device} but obs is on {obs.device}")


def _sum_hidden(dims) -> int:
    return sum(dims[3:])


@torch.library.register_fake("dacer2::sample_chain")
def _(obs, packed, dims, sched, alpha_scale, rng, noise, chain_noise, explore, gemm_dtype=None, packed_gemm=None):
    check_devices("sample_chain", obs, packed=packed, sched=sched, alpha_scale=alpha_scale, rng=rng, noise=noise,
                  packed_gemm=packed_gemm)
    return obs.new_empty(obs.shape[0], dims[1])


@torch.library.register_fake("dacer2::chain_forward")
def _(obs, packed, dims, sched, noise, eps_stop_grad, gemm_dtype=None):
    check_devices("chain_forward", obs, packed=packed, sched=sched, noise=noise)
    B, (S, A, T) = obs.shape[0], dims[:3]
    n = T * B * _sum_hidden(dims)
    return (obs.new_empty(B, A), obs.new_empty(T, B, A), obs.new_empty(T, B, A), obs.new_empty(n), obs.new_empty(n))


@torch.library.register_fake("dacer2::chain_backward")
def _(grad_action, grad_visited, grad_eps, obs, packed, dims, sched, noise, visited, eps, saved_h, saved_d, sg,
      gemm_dtype=None):
    return torch.empty_like(obs), torch.empty_like(packed)


@torch.library.register_fake("dacer2::qgrad_loss")
def _(eps, g, weight):
    check_devices("qgrad_loss", eps, g=g, weight=weight)
    return eps.new_empty(())


@torch.library.register_fake("dacer2::qgrad_loss_backward")
def _(grad, eps, g, weight):
    return torch.empty_like(eps)


@torch.library.register_fake("dacer2::critic_action_grad")
def _(obs, action, packed, dims, mode, gemm_dtype=None):
    check_devices("critic_action_grad", obs, action=action, packed=packed)
    return action.new_empty(action.shape[:2]), torch.empty_like(action)


@torch.library.register_fake("dacer2::mish")
def _(x):
    return torch.empty_like(x), torch.empty_like(x)


# ---- autograd ---------------------------------------------------------------------------------------------
def _chain_setup(ctx, inputs, output):
    obs, packed, dims, sched, noise, eps_stop_grad, gemm_dtype = inputs  # defaults arrive filled in
    action, visited, eps, saved_h, saved_d = output
    ctx.dims, ctx.eps_stop_grad, ctx.gemm_dtype = dims, eps_stop_grad, gemm_dtype
    ctx.save_for_backward(obs, packed, sched, noise, visited, eps, saved_h, saved_d)
    ctx.mark_non_differentiable(saved_h, saved_d)
    ctx.set_materialize_grads(False)


def _chain_backward(ctx, grad_action, grad_visited, grad_eps, _gh, _gd):
    obs, packed, sched, noise, visited, eps, saved_h, saved_d = ctx.saved_tensors
    if grad_action is None:
        grad_action = torch.zeros(obs.shape[0], ctx.dims[1], dtype=obs.dtype, device=obs.device)
    grad_obs, grad_packed = ops.chain_backward(
        grad_action.contiguous(),
        None if grad_visited is None else grad_visited.contiguous(),
        None if grad_eps is None else grad_eps.contiguous(),
        obs, packed, ctx.dims, sched, noise, visited, eps, saved_h, saved_d, ctx.eps_stop_grad, ctx.gemm_dtype,
    )
    return grad_obs, grad_packed, None, None, None, None, None


torch.library.register_autograd("dacer2::chain_forward", _chain_backward, setup_context=_chain_setup)


def _qgrad_setup(ctx, inputs, output):
    eps, g, weight = inputs
    ctx.save_for_backward(eps, g, weight)


def _qgrad_backward(ctx, grad):
    eps, g, weight = ctx.saved_tensors
    # The target u is a stop-gradient by definition (algorithm.md §3): no gradient for g or the weights.
    return ops.qgrad_loss_backward(grad.contiguous(), eps, g, weight), None, None


torch.library.register_autograd("dacer2::qgrad_loss", _qgrad_backward, setup_context=_qgrad_setup)


def _critic_setup(ctx, inputs, output):
    ctx.mark_non_differentiable(*output)


def _critic_backward(ctx, grad_q, grad_g):
    # The action-gradient is a constant target of L_g (algorithm.md §3: critic weights are not trained by it).
    return None, None, None, None, None, None


torch.library.register_autograd("dacer2::critic_action_grad", _critic_backward, setup_context=_critic_setup)


def _mish_setup(ctx, inputs, output):
    ctx.mark_non_differentiable(output[1])
    ctx.save_for_backward(output[1])


def _mish_backward(ctx, grad_h, _grad_d):
    (derivative,) = ctx.saved_tensors
    return grad_h * derivative


torch.library.register_autograd("dacer2::mish", _mish_backward, setup_context=_mish_setup)

_NO_GRAD_BACKWARD = ("dacer2::chain_backward", "dacer2::qgrad_loss_backward")


def _not_differentiable(name):
    def backward(ctx, *grads):
        raise RuntimeError(f"{name} is a backward kernel; double backward through it is not supported")

    return backward


for _qual in _NO_GRAD_BACKWARD:
    torch.library.register_autograd(_qual, _not_differentiable(_qual), setup_context=lambda ctx, inputs, output: None)


# Acting never differentiates: autograd is an explicit fallthrough (a dispatcher entry, no Python on the
# batch-1 hot path, which a Python autograd kernel would cost ~10 us); the action never requires grad.
_lib.impl("sample_chain", torch.library.fallthrough_kernel, "Autograd")
