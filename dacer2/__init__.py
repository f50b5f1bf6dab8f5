"""dacer2: DACER2 diffusion-policy actor-critic for continuous control, in PyTorch."""

__version__ = "0.1.0"


def __getattr__(name: str):
    # Lazy: `import dacer2` stays light (no torch import) until the deployment API is actually used.
    if name == "Policy":
        from dacer2.policy import Policy

        return Policy
    raise AttributeError(f"module 'dacer2' has no attribute {name!r}")
