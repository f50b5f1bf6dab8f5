"""Policy evaluation on separate environments: one episode per parallel eval env, all stepped as one batch so
the diffusion chain runs once per step for every episode."""

from __future__ import annotations

from typing import Callable

import gymnasium as gym
import numpy as np
import torch

ActFn = Callable[[torch.Tensor], torch.Tensor]


def evaluate(act: ActFn, envs: gym.vector.VectorEnv, device: torch.device, seed: int | None = None) -> np.ndarray:
    """Returns the undiscounted return of the first episode of each env (len = envs.num_envs)."""
    obs, _ = envs.reset(seed=seed)
    n = envs.num_envs
    returns = np.zeros(n)
    running = np.ones(n, dtype=bool)
    while running.any():
        action = act(torch.as_tensor(obs, dtype=torch.float32, device=device)).cpu().numpy()
        obs, reward, terminated, truncated, _ = envs.step(action)
        returns += np.where(running, reward, 0.0)
        running &= ~(terminated | truncated)
    return returns
