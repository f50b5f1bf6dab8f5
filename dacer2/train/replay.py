"""Uniform replay of transitions, stored as preallocated torch tensors on the training device so sampling a
batch allocates nothing and never leaves the device."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch


class Batch(NamedTuple):
    """A sampled replay batch: what an agent's update consumes."""

    obs: torch.Tensor  # [B, S]
    action: torch.Tensor  # [B, A], in [-1, 1]
    reward: torch.Tensor  # [B]
    next_obs: torch.Tensor  # [B, S]
    terminated: torch.Tensor  # [B], 1.0 where the episode truly ended (not truncated)


class ReplayBuffer:
    def __init__(self, capacity: int, obs_dim: int, action_dim: int, batch_size: int, device: torch.device, seed: int = 0):
        self.capacity, self.batch_size, self.device = capacity, batch_size, device
        f32 = dict(dtype=torch.float32, device=device)
        self.obs = torch.zeros(capacity, obs_dim, **f32)
        self.action = torch.zeros(capacity, action_dim, **f32)
        self.reward = torch.zeros(capacity, **f32)
        self.next_obs = torch.zeros(capacity, obs_dim, **f32)
        self.terminated = torch.zeros(capacity, **f32)
        self.size = 0
        self.position = 0
        self.generator = torch.Generator(device)
        self.generator.manual_seed(seed)
        # Reused every sample: the index vector and the batch tensors.
        self._index = torch.zeros(batch_size, dtype=torch.long, device=device)
        self._batch = Batch(
            obs=torch.zeros(batch_size, obs_dim, **f32),
            action=torch.zeros(batch_size, action_dim, **f32),
            reward=torch.zeros(batch_size, **f32),
            next_obs=torch.zeros(batch_size, obs_dim, **f32),
            terminated=torch.zeros(batch_size, **f32),
        )
        self._size_on_device: torch.Tensor | None = None  # created by the first sample_in_graph

    def __len__(self) -> int:
        return self.size

    def add(self, obs: np.ndarray, action: np.ndarray, reward: np.ndarray, next_obs: np.ndarray, terminated: np.ndarray) -> None:
        """Append a batch of transitions (one per parallel env), overwriting the oldest when full."""
        n = len(obs)
        rows = (self.position + np.arange(n)) % self.capacity
        rows_t = torch.as_tensor(rows, device=self.device)
        for store, values in (
            (self.obs, obs),
            (self.action, action),
            (self.reward, reward),
            (self.next_obs, next_obs),
            (self.terminated, terminated),
        ):
            store[rows_t] = torch.as_tensor(np.asarray(values, dtype=np.float32), device=self.device)
        self.position = int((self.position + n) % self.capacity)
        self.size = min(self.size + n, self.capacity)
        if self._size_on_device is not None:
            self._size_on_device.fill_(self.size)

    def sample(self) -> Batch:
        """A uniform batch. The returned tensors are overwritten by the next call: use them before sampling again."""
        if self.size == 0:
            raise RuntimeError("cannot sample from an empty replay buffer")
        torch.randint(0, self.size, (self.batch_size,), generator=self.generator, device=self.device, out=self._index)
        return self._gather()

    def _gather(self) -> Batch:
        for store, out in zip((self.obs, self.action, self.reward, self.next_obs, self.terminated), self._batch):
            torch.index_select(store, 0, self._index, out=out)
        return self._batch

    def sample_in_graph(self) -> Batch:
        """A uniform batch drawn without the host: the buffer's size is read from a device tensor that add()
        keeps current, so a CUDA graph that captured this call samples from the whole buffer on every replay.
        (Not the same draws as sample(): a row is a 62-bit random integer modulo the size, which favours some
        rows over others by at most size / 2^62.)"""
        if self.size == 0:
            raise RuntimeError("cannot sample from an empty replay buffer")
        if self._size_on_device is None:
            self._size_on_device = torch.full((1,), self.size, dtype=torch.long, device=self.device)
            self._draw = torch.empty_like(self._index)
        torch.randint(0, 2**62, (self.batch_size,), generator=self.generator, device=self.device, out=self._draw)
        torch.remainder(self._draw, self._size_on_device, out=self._index)
        return self._gather()

    def state_dict(self) -> dict:
        # Copies of the filled rows: torch.save writes a view's whole storage, so a bare [:n] of a 1M-row buffer
        # would store all of it, filled or not.
        n = self.size
        filled = {name: getattr(self, name)[:n].to("cpu", copy=True)
                  for name in ("obs", "action", "reward", "next_obs", "terminated")}
        return {
            **filled,
            "position": self.position, "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        n = state["obs"].shape[0]
        for name in ("obs", "action", "reward", "next_obs", "terminated"):
            getattr(self, name)[:n].copy_(state[name])
        self.size, self.position = n, int(state["position"])
        if self._size_on_device is not None:
            self._size_on_device.fill_(self.size)
        self.generator.set_state(state["generator"])
