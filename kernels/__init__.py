"""Triton kernels for dacer2's hot paths, installed as `dacer2.kernels` (never as a top-level module).

sample_chain.py: the acting sampler (dacer2::sample_chain), one launch for all T steps. The other dacer2::
ops have no Triton kernel yet: on CUDA they run their plain-PyTorch reference twins (CompositeExplicitAutograd).
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

        from dacer2.kernels import sample_chain as _sc
    except ImportError:
        return False
    from dacer2.ops import reference
    from dacer2.ops._registry import check_devices

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

    torch.library.impl("dacer2::sample_chain", "CUDA")(sample_chain_cuda)
    _REGISTERED = True
    return True
