"""Fused DACER2 kernels as PyTorch custom ops in the `dacer2::` namespace.

Ops (schemas in _registry.py; plain-PyTorch twins in reference.py; C++ CPU kernels in csrc/; CUDA kernels
registered in cuda.py: the Triton kernels of kernels/ = dacer2.kernels, else composed.py, the C++ kernel's
algorithm in torch ops, or the twins):
  sample_chain        acting: the whole reverse chain + chain noise + alpha-noise + clip, noise made in-op
  chain_forward/_backward   training chain with autograd, L_g's gradient shares the weight-gradient GEMMs
  qgrad_loss(/_backward)    L_g: normalisation, w(t), squared error and its gradient
  critic_action_grad  min/mean/q1 of the twin means and d/da for a [T, B] stack, no weight gradients

Backend resolution (`resolve_backend`): an explicit "fused" or "reference" wins; "auto" reads the env var
DACER2_BACKEND (fused|reference), else picks "fused" when the device has fused kernels (CPU: dacer2._C is
built; CUDA: Triton is importable) and "reference" otherwise. A fused call on a device without its kernel
still runs, with correct gradients: the dispatcher falls back to FALLBACK_KERNELS in _registry.py (the
reference twins, and composed.py's explicit backward passes where a twin would need autograd).

DACER2Agent's fused backend (agent_backend.py) calls these ops. Imports run one way: dacer2.ops imports
dacer2._C and dacer2.kernels, never the reverse.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch

from dacer2.algo.networks import CRITIC_CHOICES
from dacer2.ops import composed, cuda, reference
from dacer2.ops._registry import ops
from dacer2.ops.packing import critic_dims, denoiser_dims, pack_critic, pack_denoiser, schedule_tensor, unpack_denoiser

BACKENDS = ("auto", "fused", "reference")
ENV_VAR = "DACER2_BACKEND"


def _load_cpu_extension() -> tuple[bool, str | None]:
    """(loaded, why not). A built extension that fails to import is a broken install: say so loudly."""
    try:
        import dacer2._C  # noqa: F401  (registers the CPU kernels on import)
    except ImportError as err:
        built = any(Path(__file__).resolve().parents[1].glob("_C.*"))
        if built or os.environ.get(ENV_VAR) == "fused":
            warnings.warn(f"dacer2._C does not import ({err}); on CPU the fused ops run their PyTorch fallbacks, "
                          "several times slower. Rebuild with: pip install --no-build-isolation -e .")
        return False, f"{type(err).__name__}: {err}"
    return True, None


HAS_CPU_KERNELS, CPU_EXTENSION_ERROR = _load_cpu_extension()
# Checked only where CUDA exists, so CPU-only machines never import Triton (about a second).
HAS_CUDA_KERNELS = torch.cuda.is_available() and cuda.triton_kernels() is not None


def has_fused_kernels(device: torch.device | str) -> bool:
    device = torch.device(device)
    if device.type == "cpu":
        return HAS_CPU_KERNELS
    if device.type == "cuda":
        return HAS_CUDA_KERNELS
    return False


def resolve_backend(requested: str = "auto", device: torch.device | str = "cpu", activation: str = "mish") -> str:
    """'fused' or 'reference' for a run on `device` (see the module docstring)."""
    if requested not in BACKENDS:
        raise ValueError(f"unknown backend {requested!r}; choose one of {BACKENDS}")
    if requested == "auto":
        env = os.environ.get(ENV_VAR, "").strip().lower()
        if env:
            if env not in BACKENDS:
                raise ValueError(f"{ENV_VAR}={env!r} is not one of {BACKENDS}")
            requested = env
    if requested == "auto":
        fused_ok = has_fused_kernels(device) and activation == "mish"
        requested = "fused" if fused_ok else "reference"
    if requested == "fused" and activation != "mish":
        raise ValueError(f"the fused kernels implement mish only; activation {activation!r} needs --backend reference")
    return requested


CRITIC_MODES = {name: mode for mode, name in enumerate(CRITIC_CHOICES)}  # the ops' `mode` argument


def new_rng_state(seed: int, device="cpu") -> torch.Tensor:
    return torch.tensor([seed, 0], dtype=torch.int64, device=device)


__all__ = [
    "BACKENDS", "CPU_EXTENSION_ERROR", "CRITIC_MODES", "ENV_VAR", "HAS_CPU_KERNELS", "HAS_CUDA_KERNELS", "composed",
    "critic_dims", "denoiser_dims", "has_fused_kernels", "new_rng_state", "ops", "pack_critic", "pack_denoiser",
    "reference", "resolve_backend", "schedule_tensor", "unpack_denoiser",
]
