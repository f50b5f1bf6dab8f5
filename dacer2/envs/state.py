"""Snapshots of a running environment's full state, so a resumed run continues mid-episode exactly where the
checkpoint left it instead of restarting every episode (which would change what the agent sees and break
bitwise resume).

What a snapshot holds: the env's RNG state, the TimeLimit step counter, and the simulator state. MuJoCo tasks
store MuJoCo's full integration state (time, positions, velocities, actuator state, controls, applied forces and
the solver's warm start: everything the next step depends on) as one float64 tensor; other envs opt in by defining
`snapshot()` / `restore(state)` on the unwrapped env (the multi-goal task does). Envs that do neither are
marked inexact: a resume resets them instead. Nothing here is a pickle, so checkpoints load with torch's
weights-only unpickler.
"""

from __future__ import annotations

import sys

import gymnasium as gym
import numpy as np
import torch


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
        import mujoco

        spec = mujoco.mjtState.mjSTATE_INTEGRATION
        buffer = np.empty(mujoco.mj_stateSize(inner.model, spec))
        mujoco.mj_getState(inner.model, inner.data, buffer, spec)
        state["mjstate"] = torch.from_numpy(buffer)
    elif hasattr(inner, "snapshot"):
        state["snapshot"] = inner.snapshot()
    else:
        state["exact"] = False
    return state


def restore_env_state(env: gym.Env, state: dict) -> bool:
    """Restore a snapshot into an env that has been reset once; returns False when it could not be exact."""
    if not state["exact"]:
        return False
    if "mjdata" in state:  # dacer2 before 2026-11-30 pickled MjData; unpickling a checkpoint is no longer done
        print("dacer2: this checkpoint stores the simulator as a pickle (an older dacer2), which is not loaded; "
              "its episodes restart", file=sys.stderr)
        return False
    inner = env.unwrapped
    inner.np_random.bit_generator.state = state["np_random"]
    limit = _time_limit(env)
    if limit is not None:
        limit._elapsed_steps = state["elapsed_steps"]
    if "mjstate" in state:
        import mujoco

        mujoco.mj_setState(inner.model, inner.data, state["mjstate"].numpy().astype(np.float64),
                           mujoco.mjtState.mjSTATE_INTEGRATION)
    else:
        inner.restore(state["snapshot"])
    return True


class Snapshots(gym.Wrapper):
    """Gives a vector env's sub-envs the snapshot methods, so `envs.call("capture_state")` and
    `envs.set_attr("pending_state", states)` + `envs.call("restore_pending_state")` reach them where they live:
    in this process (sync) or in worker processes (async)."""

    pending_state: dict | None = None

    def capture_state(self) -> dict:
        return capture_env_state(self)

    def restore_pending_state(self) -> bool:
        state, self.pending_state = self.pending_state, None
        return restore_env_state(self, state)
