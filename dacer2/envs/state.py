"""Snapshots of a running environment's full state, so a resumed run continues mid-episode exactly where the
checkpoint left it instead of restarting every episode (which would change what the agent sees and break
bitwise resume).

What a snapshot holds: the env's RNG state, the TimeLimit step counter, and the simulator state. MuJoCo tasks
store the whole MjData (positions, velocities, solver warm-start, time); other envs opt in by defining
`snapshot()` / `restore(state)` on the unwrapped env (the multi-goal task does). Envs that do neither are
marked inexact: a resume resets them instead.
"""

from __future__ import annotations

import pickle

import gymnasium as gym


def _time_limit(env: gym.Env) -> gym.wrappers.TimeLimit | None:
    while isinstance(env, gym.Wrapper):
        if isinstance(env, gym.wrappers.TimeLimit):
            return env
        env = env.env
    return None


def _is_mujoco(env: gym.Env) -> bool:
    return hasattr(env, "data") and hasattr(env, "model") and type(env.data).__module__.startswith("mujoco")


def capture_env_state(env: gym.Env) -> dict:
    inner = env.unwrapped
    limit = _time_limit(env)
    state = {
        "np_random": inner.np_random.bit_generator.state,
        "elapsed_steps": limit._elapsed_steps if limit is not None else None,
        "exact": True,
    }
    if _is_mujoco(inner):
        state["mjdata"] = pickle.dumps(inner.data)
    elif hasattr(inner, "snapshot"):
        state["snapshot"] = inner.snapshot()
    else:
        state["exact"] = False
    return state


def restore_env_state(env: gym.Env, state: dict) -> bool:
    """Restore a snapshot into an env that has been reset once; returns False when it could not be exact."""
    if not state["exact"]:
        return False
    inner = env.unwrapped
    inner.np_random.bit_generator.state = state["np_random"]
    limit = _time_limit(env)
    if limit is not None:
        limit._elapsed_steps = state["elapsed_steps"]
    if "mjdata" in state:
        import mujoco

        mujoco.mj_copyData(inner.data, inner.model, pickle.loads(state["mjdata"]))
    else:
        inner.restore(state["snapshot"])
    return True
