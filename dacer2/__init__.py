"""dacer2: DACER2 diffusion-policy actor-critic for continuous control, in PyTorch."""

__version__ = "0.1.0"
