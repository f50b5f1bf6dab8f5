"""Triton kernels for dacer2's hot paths, installed as `dacer2.kernels` (never as a top-level module)."""


def register() -> bool:
    """Register the Triton kernels as the CUDA implementations of the dacer2:: ops; False if unavailable."""
    return False
