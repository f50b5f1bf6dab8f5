"""Environment construction: Gymnasium envs whose actions are rescaled to [-1, 1], checked up front so a bad
env id or an unsupported space fails with one clear line instead of a traceback from deep inside training."""

from __future__ import annotations

import contextlib
import difflib
import signal
import threading
import warnings

import gymnasium as gym
import numpy as np

from dacer2 import MULTIGOAL_ID  # noqa: F401  (registered with Gymnasium when the package is imported)


class EnvError(ValueError):
    """The requested environment cannot be trained on by this package."""


def check_env_id(env_id: str) -> None:
    if env_id in gym.registry:
        return
    close = difflib.get_close_matches(env_id, list(gym.registry), n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise EnvError(f"unknown environment id {env_id!r}{hint}")


def check_spaces(observation_space: gym.Space, action_space: gym.Space, env_id: str) -> None:
    if not isinstance(action_space, gym.spaces.Box):
        raise EnvError(f"{env_id}: DACER2 needs a continuous Box action space, got {type(action_space).__name__}")
    if not (np.all(np.isfinite(action_space.low)) and np.all(np.isfinite(action_space.high))):
        raise EnvError(f"{env_id}: the action space must be bounded, got low={action_space.low} high={action_space.high}")
    if not isinstance(observation_space, gym.spaces.Box) or len(observation_space.shape) != 1:
        raise EnvError(
            f"{env_id}: DACER2 needs a flat Box observation space, got {observation_space} "
            "(wrap dict or image observations with a flattening/feature wrapper first)"
        )


def _rescaled(env: gym.Env) -> gym.Env:
    check_spaces(env.observation_space, env.action_space, env.spec.id if env.spec else type(env).__name__)
    with warnings.catch_warnings():
        # MuJoCo tasks declare float64 bounds on a float32 space; the cast Gymnasium warns about is harmless.
        warnings.filterwarnings("ignore", message=".*precision lowered by casting to float32.*")
        return gym.wrappers.RescaleAction(env, -1.0, 1.0)


@contextlib.contextmanager
def _workers_ignore_ctrl_c(forking: bool):
    """Worker processes forked in here ignore SIGINT. Ctrl-C reaches a terminal's whole process group; the trainer
    turns it into a checkpoint taken through the workers, which must still be alive to hand over their envs."""
    if not forking or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _snapshots(env: gym.Env) -> gym.Env:
    from dacer2.envs.state import Snapshots

    return Snapshots(env)


def make_vector_env(env_id: str, num_envs: int, seed: int, mode: str = "sync", **make_kwargs) -> gym.vector.VectorEnv:
    """Vector env with same-step autoreset: a finished env's last observation is in info["final_obs"], so the
    trainer can store the true next state of every transition. mode "sync" steps the envs one after another in
    this process, "async" each in its own worker process (Gymnasium's AsyncVectorEnv)."""
    check_env_id(env_id)
    if mode not in ("sync", "async"):
        raise ValueError(f"unknown vector env mode {mode!r}; use sync or async")
    with _workers_ignore_ctrl_c(mode == "async"):
        envs = gym.make_vec(
            env_id,
            num_envs=num_envs,
            vectorization_mode=mode,
            vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP},
            wrappers=[_rescaled, _snapshots],
            **make_kwargs,
        )
    envs.action_space.seed(seed)
    return envs


def action_bounds(env_id: str) -> tuple[np.ndarray, np.ndarray]:
    """The env's own action bounds (before rescaling), for mapping [-1, 1] actions back at deployment."""
    check_env_id(env_id)
    env = gym.make(env_id)
    try:
        check_spaces(env.observation_space, env.action_space, env_id)
        return env.action_space.low.astype(np.float64), env.action_space.high.astype(np.float64)
    finally:
        env.close()
