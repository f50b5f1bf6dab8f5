"""dacer2: DACER2 diffusion-policy actor-critic for continuous control, in PyTorch."""

import gymnasium as _gym

__version__ = "0.1.0"

# Registered on `import dacer2` so that gym.make("dacer2/MultiGoal-v0") works in user code (Gymnasium has no
# plugin discovery); importing Gymnasium does not import torch.
MULTIGOAL_ID = "dacer2/MultiGoal-v0"
if MULTIGOAL_ID not in _gym.registry:
    _gym.register(MULTIGOAL_ID, entry_point="dacer2.envs.multigoal:MultiGoalEnv", max_episode_steps=100)


def __getattr__(name: str):
    # Lazy: `import dacer2` imports no torch until the deployment API is actually used.
    if name == "Policy":
        from dacer2.deploy.policy import Policy

        return Policy
    raise AttributeError(f"module 'dacer2' has no attribute {name!r}")
