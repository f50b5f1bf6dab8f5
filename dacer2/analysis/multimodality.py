"""The multimodality metric of the multi-goal task (docs/algorithm.md §6): from one start state, roll out many episodes
and count which goal each one reaches.

Two parts with one job each:

* :func:`goal_statistics` is a pure function of the goal counts (testable on synthetic counts);
* :func:`rollout_goals` steps N multi-goal envs in lockstep with one batched policy call per step, so the
  diffusion chain runs once per step for all N episodes instead of N times.

Definitions (also in docs/evaluation.md):

* ``counts[g]``: rollouts that ended in goal g; ``none``: rollouts that reached no goal within the time limit.
* ``coverage``: number of goals reached by at least ``threshold`` (default 5%) of *all* rollouts, so a goal hit
  once by chance does not count as a mode.
* ``entropy_bits``: Shannon entropy (base 2) of the goal distribution among the rollouts that reached a goal.
  2 bits = all four goals equally often, 0 = a single goal; ``2 ** entropy_bits`` is the effective number of goals.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import gymnasium as gym
import numpy as np

from dacer2.envs import MULTIGOAL_ID
from dacer2.envs.multigoal import GOALS

COVERAGE_THRESHOLD = 0.05
GOAL_NAMES = ("right", "left", "up", "down")  # the order of GOALS

# obs [N, 2] (positions) -> actions [N, 2] in the env's own bounds
BatchPolicy = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class GoalStats:
    counts: tuple[int, ...]
    none: int
    total: int
    fractions: tuple[float, ...]
    none_fraction: float
    coverage: int
    entropy_bits: float

    def as_dict(self) -> dict:
        return {
            "counts": {name: c for name, c in zip(GOAL_NAMES, self.counts)},
            "none": self.none,
            "total": self.total,
            "coverage": self.coverage,
            "entropy_bits": self.entropy_bits,
        }

    def summary(self) -> str:
        per_goal = " ".join(f"{name}={c}" for name, c in zip(GOAL_NAMES, self.counts))
        return (
            f"{per_goal} none={self.none} (of {self.total}); coverage {self.coverage}/{len(self.counts)} goals, "
            f"entropy {self.entropy_bits:.2f} bits"
        )


def goal_statistics(counts: Sequence[int], none: int = 0, threshold: float = COVERAGE_THRESHOLD) -> GoalStats:
    """Coverage and entropy from per-goal counts and the number of rollouts that reached no goal."""
    counts = tuple(int(c) for c in counts)
    if any(c < 0 for c in counts) or none < 0:
        raise ValueError(f"goal counts must be non-negative, got {counts} and none={none}")
    total = sum(counts) + int(none)
    if total == 0:
        raise ValueError("no rollouts to compute goal statistics from")
    fractions = tuple(c / total for c in counts)
    # A tiny tolerance so exactly 5 of 100 counts as 5% despite float rounding.
    coverage = sum(1 for f in fractions if f >= threshold - 1e-12)
    reached = sum(counts)
    entropy = 0.0
    if reached:
        entropy = -sum((c / reached) * math.log2(c / reached) for c in counts if c > 0)
    return GoalStats(
        counts=counts, none=int(none), total=total, fractions=fractions, none_fraction=none / total,
        coverage=coverage, entropy_bits=entropy + 0.0,  # + 0.0 turns -0.0 into 0.0 for printing
    )


def goal_stats_from_indices(goal_index: np.ndarray, num_goals: int = len(GOALS)) -> GoalStats:
    """Statistics from one goal index per rollout (-1 = no goal reached)."""
    goal_index = np.asarray(goal_index)
    counts = np.bincount(goal_index[goal_index >= 0], minlength=num_goals)
    return goal_statistics(counts.tolist(), int((goal_index < 0).sum()))


@dataclass
class Rollouts:
    goal_index: np.ndarray  # [N], -1 where no goal was reached
    returns: np.ndarray  # [N], undiscounted
    trajectories: list[np.ndarray] = field(default_factory=list)  # N arrays [steps + 1, 2], start included

    @property
    def stats(self) -> GoalStats:
        return goal_stats_from_indices(self.goal_index)


def rollout_goals(
    policy: BatchPolicy,
    num_episodes: int,
    start: Sequence[float] | np.ndarray = (0.0, 0.0),
    env_id: str = MULTIGOAL_ID,
) -> Rollouts:
    """Run `num_episodes` episodes from exact start positions, all stepped together.

    `start` is one (x, y) for every episode or an [num_episodes, 2] array of per-episode starts (so rollouts
    from several start points still share one policy call per step). Episodes that end early drop out of the
    batch, so the policy is only called on live ones. Randomness comes from the policy alone (the env is
    deterministic given its start), so seed the policy to reproduce a result.
    """
    if num_episodes < 1:
        raise ValueError(f"need at least one rollout, got {num_episodes}")
    starts = np.asarray(start, dtype=np.float64)
    starts = np.broadcast_to(starts, (num_episodes, 2)) if starts.shape == (2,) else starts
    if starts.shape != (num_episodes, 2):
        raise ValueError(f"start must be (x, y) or shape ({num_episodes}, 2), got {starts.shape}")
    envs = [gym.make(env_id) for _ in range(num_episodes)]
    try:
        obs = np.stack([env.reset(options={"start": tuple(s)})[0] for env, s in zip(envs, starts)])
        goal_index = np.full(num_episodes, -1, dtype=np.int64)
        returns = np.zeros(num_episodes)
        paths: list[list[np.ndarray]] = [[o.copy()] for o in obs]
        live = np.arange(num_episodes)
        while live.size:
            actions = np.asarray(policy(obs[live]))
            still_live = []
            for row, i in enumerate(live):
                next_obs, reward, terminated, truncated, info = envs[i].step(actions[row])
                obs[i] = next_obs
                returns[i] += reward
                paths[i].append(next_obs.copy())
                if terminated:
                    goal_index[i] = info["goal_index"]
                if not (terminated or truncated):
                    still_live.append(i)
            live = np.asarray(still_live, dtype=np.int64)
    finally:
        for env in envs:
            env.close()
    return Rollouts(goal_index=goal_index, returns=returns, trajectories=[np.asarray(p) for p in paths])
