"""The algorithm (docs/algorithm.md): the agent and its policy heads, the diffusion chain, the networks, the
Q-gradient field loss, the entropy estimate, acting, and the seam to the compute backends (dacer2/ops)."""
