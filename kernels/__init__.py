"""Triton kernels for dacer2's hot paths, installed as `dacer2.kernels` (never as a top-level module).

sample_chain.py: the acting sampler (dacer2::sample_chain), one launch for all T steps.
qgrad_loss.py: L_g and its gradient (dacer2::qgrad_loss, qgrad_loss_backward).
critic_action_grad.py: min/mean/q1 of the twin means and d/da for a [T, B] stack (dacer2::critic_action_grad).
chain_forward.py: the training chain's forward, saving what the backward needs (dacer2::chain_forward).
chain_backward.py: its backward, L_q's and L_g's gradients as two streams sharing the weight-gradient products.
building_blocks.py: what they share (mish, layer 1's observation share, the posterior step, shape checks, AOT compile).

Each module offers `supported(dims, dtype)` and a launcher; it knows nothing of the op library. dacer2/ops/cuda.py
registers them as the ops' CUDA kernels and sends shapes a kernel does not support (non-float32, unequal hidden
widths) to dacer2/ops/composed.py (chain, critic) or the reference twin (the others).
"""
