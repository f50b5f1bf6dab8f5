"""The CUDA kernel of every dacer2:: op, all registered the same way: here, at import, as the op's CUDA
implementation. Each runs its Triton kernel (dacer2.kernels) where Triton imports and the kernel supports the
shape and dtype, else the device-agnostic algorithm: composed.py for the training chain and the critic's
action-gradient (cuBLAS GEMMs and explicit backward passes, not the twins' recompute-by-autograd), the reference
twins for acting and L_g. Registering needs no GPU and no Triton.

The dependency runs one way: this module imports dacer2.kernels' launchers; they never import dacer2.ops.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch

from dacer2.ops import composed
from dacer2.ops import reference as ref
from dacer2.ops._registry import _lib, check_devices

_NOT_LOADED = object()
_triton = _NOT_LOADED


def triton_kernels() -> SimpleNamespace | None:
    """dacer2.kernels' modules, imported on the first call (Triton takes about a second to import, so a CPU-only
    machine never pays it); None where Triton is not installed."""
    global _triton
    if _triton is _NOT_LOADED:
        try:
            from dacer2.kernels import chain_backward, chain_forward, critic_action_grad, qgrad_loss, sample_chain
        except ImportError:
            _triton = None
        else:
            _triton = SimpleNamespace(sample_chain=sample_chain, chain_forward=chain_forward,
                                      chain_backward=chain_backward, qgrad_loss=qgrad_loss,
                                      critic_action_grad=critic_action_grad)
    return _triton


def _check(name: str, **tensors) -> None:
    """The C++ kernels' argument checks that the Triton launchers rely on: the first tensor's device for all,
    contiguous tensors."""
    first, *rest = tensors.items()
    check_devices(name, first[1], **dict(rest))
    bad = [key for key, t in tensors.items() if t is not None and not t.is_contiguous()]
    if bad:
        raise RuntimeError(f"dacer2::{name}: {', '.join(bad)} must be contiguous")


def sample_chain(obs, packed, dims, sched, alpha_scale, rng, noise, chain_noise, explore, gemm_dtype=None,
                 packed_gemm=None):  # packed_gemm serves the CPU kernel's bf16 loops only
    args = (obs, packed, dims, sched, alpha_scale, rng, noise, chain_noise, explore)
    K = triton_kernels()
    if K is None or gemm_dtype is not None:  # the Triton kernels multiply in fp32 only
        return ref.sample_chain(*args, gemm_dtype)
    _check("sample_chain", obs=obs, packed=packed, sched=sched, alpha_scale=alpha_scale, rng=rng, noise=noise)
    if rng.dtype != torch.int64 or rng.numel() != 2:
        raise RuntimeError("dacer2::sample_chain: rng must be a contiguous int64 tensor [seed, offset]")
    if not K.sample_chain.supported(dims, obs.dtype):
        return ref.sample_chain(*args)
    return K.sample_chain.launch(*args)


def _qgrad_supported(name, eps, g, weight) -> bool:
    """Rejects bad arguments as the C++ kernel does; True when the Triton kernel supports the dtypes."""
    _check(name, eps=eps, g=g, weight=weight)
    if eps.dim() != 3 or g.shape != eps.shape or weight.shape != (eps.shape[0],):
        raise RuntimeError(f"dacer2::{name}: eps and g must be [T, B, A] and weight [T], got "
                           f"{tuple(eps.shape)}, {tuple(g.shape)}, {tuple(weight.shape)}")
    return eps.dtype == g.dtype == weight.dtype == torch.float32


def qgrad_loss(eps, g, weight):
    K = triton_kernels()
    if K is None or not _qgrad_supported("qgrad_loss", eps, g, weight):
        return ref.qgrad_loss(eps, g, weight)
    return K.qgrad_loss.loss(eps, g, weight)


def qgrad_loss_backward(grad, eps, g, weight):
    K = triton_kernels()
    if K is None or not _qgrad_supported("qgrad_loss_backward", eps, g, weight) or grad.dtype != torch.float32:
        return ref.qgrad_loss_backward(grad, eps, g, weight)
    return K.qgrad_loss.loss_backward(grad.contiguous(), eps, g, weight)


def critic_action_grad(obs, action, packed, dims, mode, gemm_dtype=None):
    K = triton_kernels()
    if K is None or gemm_dtype is not None:
        return composed.critic_action_grad(obs, action, packed, dims, mode, gemm_dtype)
    _check("critic_action_grad", obs=obs, action=action, packed=packed)
    if mode not in (0, 1, 2):
        raise RuntimeError(f"dacer2::critic_action_grad: mode must be 0 (min), 1 (mean) or 2 (q1), got {mode}")
    if action.dim() != 3 or action.shape[1] != obs.shape[0] or action.shape[2] != dims[1]:
        raise RuntimeError(f"dacer2::critic_action_grad: action must be [N, B, A], got {tuple(action.shape)}")
    if not K.critic_action_grad.supported(dims, obs.dtype):
        return composed.critic_action_grad(obs, action, packed, dims, mode)
    return K.critic_action_grad.launch(obs, action, packed, dims, mode)


def chain_forward(obs, packed, dims, sched, noise, eps_stop_grad, gemm_dtype=None):
    K = triton_kernels()
    if K is None or gemm_dtype is not None:
        return composed.chain_forward(obs, packed, dims, sched, noise, eps_stop_grad, gemm_dtype)
    _check("chain_forward", obs=obs, packed=packed, sched=sched, noise=noise)
    if noise.shape != (dims[2], obs.shape[0], dims[1]):
        raise RuntimeError(f"dacer2::chain_forward: noise must have shape {[dims[2], obs.shape[0], dims[1]]}, got "
                           f"{list(noise.shape)}")
    if not K.chain_forward.supported(dims, obs.dtype):
        return composed.chain_forward(obs, packed, dims, sched, noise, eps_stop_grad)
    return K.chain_forward.launch(obs, packed, dims, sched, noise)


def chain_backward(grad_action, grad_visited, grad_eps, obs, packed, dims, sched, noise, visited, eps, saved_h,
                   saved_d, eps_stop_grad, gemm_dtype=None):
    args = (grad_action, grad_visited, grad_eps, obs, packed, dims, sched, noise, visited, eps, saved_h, saved_d,
            eps_stop_grad, gemm_dtype)
    K = triton_kernels()
    if K is None or gemm_dtype is not None:
        return composed.chain_backward(*args)
    tensors = dict(grad_action=grad_action, grad_visited=grad_visited, grad_eps=grad_eps, packed=packed,
                   sched=sched, visited=visited, eps=eps, saved_h=saved_h, saved_d=saved_d)
    _check("chain_backward", obs=obs, **tensors)
    if not K.chain_backward.supported(dims, obs.dtype) or any(
            t is not None and t.dtype != torch.float32 for t in tensors.values()):
        return composed.chain_backward(*args)
    return K.chain_backward.launch(grad_action, grad_visited, grad_eps, obs, packed, dims, sched, visited, eps,
                                   saved_h, saved_d, eps_stop_grad)


# mish serves the bf16 critic, and bf16 is CPU-only: on CUDA its twin (torch elementwise ops) is enough.
CUDA_KERNELS = dict(sample_chain=sample_chain, chain_forward=chain_forward, chain_backward=chain_backward,
                    qgrad_loss=qgrad_loss, qgrad_loss_backward=qgrad_loss_backward,
                    critic_action_grad=critic_action_grad, mish=ref.mish)
for _name, _kernel in CUDA_KERNELS.items():
    _lib.impl(_name, _kernel, "CUDA")
