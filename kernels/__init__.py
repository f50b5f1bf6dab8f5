"""Triton kernels for dacer2's hot paths, installed as `dacer2.kernels` (never as a top-level module).

sample_chain.py: the acting sampler (dacer2::sample_chain), one launch for all T steps.
qgrad_loss.py: L_g and its gradient (dacer2::qgrad_loss, qgrad_loss_backward).
critic_action_grad.py: min/mean/q1 of the twin means and d/da for a [T, B] stack (dacer2::critic_action_grad).
chain_forward.py: the training chain's forward, saving what the backward needs (dacer2::chain_forward).
chain_backward.py: its backward, L_q's and L_g's gradients as two streams sharing the weight-gradient products.
building_blocks.py: what they share (mish, layer 1's observation share, the posterior step, shape checks, AOT compile).
Shapes a kernel does not support (non-float32, unequal hidden widths) run dacer2/ops/composed.py (chain) or the
reference twin (the others).
"""

from __future__ import annotations

_REGISTERED = False


def register() -> bool:
    """Register the Triton kernels as the CUDA implementations of the dacer2:: ops; False if Triton is missing."""
    global _REGISTERED
    if _REGISTERED:
        return True
    try:
        import torch
        import triton  # noqa: F401

        from dacer2.kernels import chain_backward as _cb
        from dacer2.kernels import chain_forward as _cf
        from dacer2.kernels import critic_action_grad as _cg
        from dacer2.kernels import qgrad_loss as _ql
        from dacer2.kernels import sample_chain as _sc
    except ImportError:
        return False
    from dacer2.ops import composed, reference
    from dacer2.ops._registry import CUDA_OVERRIDES, check_devices

    def sample_chain_cuda(obs, packed, dims, sched, alpha_scale, rng, noise, chain_noise, explore):
        check_devices("sample_chain", obs, packed=packed, sched=sched, alpha_scale=alpha_scale, rng=rng, noise=noise)
        for name, t in dict(obs=obs, packed=packed, sched=sched, noise=noise).items():
            if t is not None and not t.is_contiguous():
                raise RuntimeError(f"dacer2::sample_chain: {name} must be contiguous")
        if rng.dtype != torch.int64 or rng.numel() != 2:
            raise RuntimeError("dacer2::sample_chain: rng must be a contiguous int64 tensor [seed, offset]")
        if not _sc.supported(dims, obs.dtype):
            return reference.sample_chain(obs, packed, dims, sched, alpha_scale, rng, noise, chain_noise, explore)
        return _sc.launch(obs, packed, dims, sched, alpha_scale, rng, noise, chain_noise, explore)

    def _qgrad_checks(name, eps, g, weight):
        check_devices(name, eps, g=g, weight=weight)
        if eps.dim() != 3 or g.shape != eps.shape or weight.shape != (eps.shape[0],):
            raise RuntimeError(f"dacer2::{name}: eps and g must be [T, B, A] and weight [T], got "
                               f"{tuple(eps.shape)}, {tuple(g.shape)}, {tuple(weight.shape)}")
        if not (eps.is_contiguous() and g.is_contiguous() and weight.is_contiguous()):
            raise RuntimeError(f"dacer2::{name}: eps, g and weight must be contiguous")
        return eps.dtype == g.dtype == weight.dtype == torch.float32

    def qgrad_loss_cuda(eps, g, weight):
        if not _qgrad_checks("qgrad_loss", eps, g, weight):
            return reference.qgrad_loss(eps, g, weight)
        return _ql.loss(eps, g, weight)

    def qgrad_loss_backward_cuda(grad, eps, g, weight):
        if not _qgrad_checks("qgrad_loss_backward", eps, g, weight) or grad.dtype != torch.float32:
            return reference.qgrad_loss_backward(grad, eps, g, weight)
        return _ql.loss_backward(grad.contiguous(), eps, g, weight)

    def critic_action_grad_cuda(obs, action, packed, dims, mode):
        check_devices("critic_action_grad", obs, action=action, packed=packed)
        if not (obs.is_contiguous() and action.is_contiguous() and packed.is_contiguous()):
            raise RuntimeError("dacer2::critic_action_grad: obs, action and packed must be contiguous")
        if mode not in (0, 1, 2):
            raise RuntimeError(f"dacer2::critic_action_grad: mode must be 0 (min), 1 (mean) or 2 (q1), got {mode}")
        if action.dim() != 3 or action.shape[1] != obs.shape[0] or action.shape[2] != dims[1]:
            raise RuntimeError(f"dacer2::critic_action_grad: action must be [N, B, A], got {tuple(action.shape)}")
        if not _cg.supported(dims, obs.dtype):
            return composed.critic_action_grad(obs, action, packed, dims, mode)  # explicit backward
        return _cg.launch(obs, action, packed, dims, mode)

    def chain_forward_triton(obs, packed, dims, sched, noise, eps_stop_grad):
        check_devices("chain_forward", obs, packed=packed, sched=sched, noise=noise)
        if not all(t.is_contiguous() for t in (obs, packed, sched, noise)):
            raise RuntimeError("dacer2::chain_forward: obs, packed, sched and noise must be contiguous")
        B = obs.shape[0]
        if noise.shape != (dims[2], B, dims[1]):
            raise RuntimeError(f"dacer2::chain_forward: noise must have shape {[dims[2], B, dims[1]]}, got "
                               f"{list(noise.shape)}")
        if not _cf.supported(dims, obs.dtype):
            return None  # the composed torch-op forward runs
        return _cf.launch(obs, packed, dims, sched, noise)

    def chain_backward_triton(grad_action, grad_visited, grad_eps, obs, packed, dims, sched, noise, visited, eps,
                              saved_h, saved_d, eps_stop_grad):
        tensors = dict(grad_action=grad_action, grad_visited=grad_visited, grad_eps=grad_eps, packed=packed,
                       sched=sched, visited=visited, eps=eps, saved_h=saved_h, saved_d=saved_d)
        check_devices("chain_backward", obs, **tensors)
        if not all(t is None or t.is_contiguous() for t in (obs, *tensors.values())):
            raise RuntimeError("dacer2::chain_backward: every tensor argument must be contiguous")
        if not _cb.supported(dims, obs.dtype) or any(t is not None and t.dtype != torch.float32 for t in tensors.values()):
            return None  # the composed torch-op backward runs
        return _cb.launch(grad_action, grad_visited, grad_eps, obs, packed, dims, sched, visited, eps, saved_h,
                          saved_d, eps_stop_grad)

    CUDA_OVERRIDES["chain_forward"] = chain_forward_triton
    CUDA_OVERRIDES["chain_backward"] = chain_backward_triton
    torch.library.impl("dacer2::sample_chain", "CUDA")(sample_chain_cuda)
    torch.library.impl("dacer2::critic_action_grad", "CUDA")(critic_action_grad_cuda)
    torch.library.impl("dacer2::qgrad_loss", "CUDA")(qgrad_loss_cuda)
    torch.library.impl("dacer2::qgrad_loss_backward", "CUDA")(qgrad_loss_backward_cuda)
    _REGISTERED = True
    return True
