"""What the training loop carries from one iteration to the next, besides the agent, the replay buffer and the
environments (which save their own state). A checkpoint stores the saved fields as its "loop" entry and a resume
reads them back whole, so adding a field here is the only change a new piece of loop state needs.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import torch

from dacer2.config import TrainConfig
from dacer2.train.phase_times import PhaseTimes

RECENT_EPISODES = 20  # the logged episodic return/length average over this many finished episodes
_TRANSIENT = {"saved": False}  # this process's bookkeeping: a resumed run starts it afresh


@dataclass
class LoopState:
    # Saved, in the order checkpoints have always stored them.
    env_steps: int
    next_log: int  # env-step counts at which the next log row, evaluation and checkpoint are due
    next_eval: int
    next_checkpoint: int
    eval_history: list[tuple[int, float, float]]  # (env_steps, mean, std), oldest first
    recent_returns: deque[float]  # of the last finished episodes
    recent_lengths: deque[int]
    episode_return: np.ndarray  # per env, of the episode in progress
    episode_length: np.ndarray
    obs: np.ndarray  # the observation each env acts on next
    # Seconds trained before this process's clock started; a checkpoint stores the total so far under this name.
    wall_time: float = 0.0

    clock_origin: float = field(default=0.0, metadata=_TRANSIENT)  # perf_counter() reading at training second 0
    last_log_time: float = field(default=0.0, metadata=_TRANSIENT)  # when and at which step the last row was logged
    last_log_steps: int = field(default=0, metadata=_TRANSIENT)
    metrics: dict[str, torch.Tensor] = field(default_factory=dict, metadata=_TRANSIENT)  # the last update's losses
    last_checkpoint: Path | None = field(default=None, metadata=_TRANSIENT)
    times: PhaseTimes = field(default_factory=PhaseTimes, metadata=_TRANSIENT)  # this process's time per phase

    def __post_init__(self):
        # One normal form whether built fresh or read from a checkpoint (which stores lists and shares no arrays).
        self.obs, self.episode_return, self.episode_length = (
            a.copy() for a in (self.obs, self.episode_return, self.episode_length)
        )
        self.eval_history = [tuple(e) for e in self.eval_history]
        self.recent_returns = deque(self.recent_returns, maxlen=RECENT_EPISODES)
        self.recent_lengths = deque(self.recent_lengths, maxlen=RECENT_EPISODES)

    @classmethod
    def fresh(cls, cfg: TrainConfig, obs: np.ndarray) -> LoopState:
        return cls(
            env_steps=0, next_log=cfg.log_every, next_eval=cfg.eval_every, next_checkpoint=cfg.checkpoint_every,
            eval_history=[], recent_returns=deque(), recent_lengths=deque(),
            episode_return=np.zeros(cfg.num_envs), episode_length=np.zeros(cfg.num_envs, dtype=np.int64), obs=obs,
        )

    @classmethod
    def from_checkpoint(cls, saved: dict) -> LoopState:
        return cls(**{f.name: saved[f.name] for f in fields(cls) if f.metadata.get("saved", True)})

    def to_checkpoint(self) -> dict:
        saved = {f.name: getattr(self, f.name) for f in fields(self) if f.metadata.get("saved", True)}
        for name in ("obs", "episode_return", "episode_length"):
            saved[name] = saved[name].copy()
        saved["eval_history"] = list(self.eval_history)
        saved["recent_returns"], saved["recent_lengths"] = list(self.recent_returns), list(self.recent_lengths)
        saved["wall_time"] = self.elapsed()
        return saved

    def start_clock(self) -> None:
        self.times = PhaseTimes()
        now = time.perf_counter()
        self.clock_origin = now - self.wall_time
        self.last_log_time, self.last_log_steps = now, self.env_steps

    def elapsed(self) -> float:
        """Training seconds so far, across resumes."""
        return time.perf_counter() - self.clock_origin

    def record_step(self, reward: np.ndarray, done: np.ndarray) -> None:
        """Add one vector step's rewards to the running episodes; finished ones join the recent averages."""
        self.episode_return += reward
        self.episode_length += 1
        for i in np.flatnonzero(done):
            self.recent_returns.append(float(self.episode_return[i]))
            self.recent_lengths.append(int(self.episode_length[i]))
        self.episode_return[done] = 0.0
        self.episode_length[done] = 0
