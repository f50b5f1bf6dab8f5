"""Triton kernels for dacer2's hot paths, installed as `dacer2.kernels` (never as a top-level module)."""
