"""dacer2: DACER2 diffusion-policy actor-critic for continuous control, in PyTorch."""

import importlib.util as _importlib_util
import sys as _sys

__version__ = "0.1.0"

# Registered on `import dacer2` so that gym.make("dacer2/MultiGoal-v0") works in user code (Gymnasium has no
# plugin discovery). Gymnasium itself is not imported here (every command's --help would wait for it): the id is
# registered now if Gymnasium is already imported, else as soon as it is.
MULTIGOAL_ID = "dacer2/MultiGoal-v0"


def _register_envs() -> None:
    import gymnasium as gym

    if MULTIGOAL_ID not in gym.registry:
        gym.register(MULTIGOAL_ID, entry_point="dacer2.envs.multigoal:MultiGoalEnv", max_episode_steps=100)


class _RegisterWhenGymnasiumIsImported:
    """A sys.meta_path finder that finds nothing itself: on the first `import gymnasium` it leaves sys.meta_path and
    hands back Gymnasium's own module spec, whose loader also registers our env ids once the module has run."""

    def find_spec(self, name, path=None, target=None):
        if name != "gymnasium":
            return None
        if self in _sys.meta_path:
            _sys.meta_path.remove(self)
        spec = _importlib_util.find_spec(name)
        if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
            exec_module = spec.loader.exec_module

            def exec_module_then_register(module) -> None:
                exec_module(module)
                _register_envs()

            spec.loader.exec_module = exec_module_then_register  # this spec's own loader instance
        return spec


if "gymnasium" in _sys.modules:
    _register_envs()
elif not any(isinstance(finder, _RegisterWhenGymnasiumIsImported) for finder in _sys.meta_path):
    _sys.meta_path.insert(0, _RegisterWhenGymnasiumIsImported())


def __getattr__(name: str):
    # Lazy: `import dacer2` imports no torch until the deployment API is actually used.
    if name == "Policy":
        from dacer2.deploy.policy import Policy

        return Policy
    raise AttributeError(f"module 'dacer2' has no attribute {name!r}")
