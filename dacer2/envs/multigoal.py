"""Multi-goal 2-D point-mass environment (the multi-goal task used by DACER).

A point mass lives in the square ``[-7, 7]^2``. The agent commands a velocity
``a`` in ``[-1, 1]^2`` and moves to ``s' = clip(s + clip(a, -1, 1), -7, 7)``.
Four goals sit at ``(5, 0)``, ``(-5, 0)``, ``(0, 5)`` and ``(0, -5)``; the
task is multimodal because every goal is equally good from the origin.

Choices made by this implementation:

* **Observation**: the current position, ``float32``, shape ``(2,)``, inside
  ``Box(-7, 7)``. The internal state is stored as that same ``float32``
  position, so the observation is exactly the state.
* **Action**: velocity, ``Box(-1, 1, (2,), float32)``. Out-of-range actions
  are clipped into the box *before* they are applied and before the action
  cost is computed.
* **Reward** of a step from ``s`` with (clipped) action ``a`` to ``s'``::

      r = -(30 * ||a||^2 + min_g ||s' - g||^2)  (+ 10 if a goal is reached)

  The distance term uses the **new** position ``s'`` (after the move and the
  wall clip), so the reward reflects where the action took the agent.
* **Termination**: a goal ``g`` is reached when ``||s' - g|| <= 1``; the +10
  bonus is added and ``terminated=True``. Goals are at least ``5 * sqrt(2)``
  apart, so at most one goal can be reached in a step.
* **Truncation** is *not* done here: it comes from ``max_episode_steps=100``
  in the Gymnasium registration (``dacer2/MultiGoal-v0``), so ``step`` always
  returns ``truncated=False``.
* **Start state**: ``s_0 ~ N(0, 0.1^2 I)`` drawn from ``self.np_random``
  (seeded through ``reset(seed=...)``), clipped into the box.
  ``reset(options={"start": (x, y)})`` starts exactly at ``(x, y)`` (clipped
  into the box) without consuming randomness, e.g. for trajectory plots from
  ``(0, 0)`` and ``(+-0.5, +-0.5)``.
* **info**: ``"goal_index"`` (int index into :data:`GOALS` of the goal reached
  this step, ``-1`` if none; always ``-1`` after ``reset``) and
  ``"position"`` (a ``float32`` copy of the current position).
* **Rendering**: ``render_mode`` is ``None`` or ``"rgb_array"``. The latter
  draws goals (circles of radius 1), the path of the current episode and the
  current position with matplotlib's Agg canvas (no pyplot, works headless)
  and returns an ``(H, W, 3)`` ``uint8`` array.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

#: Goal positions, shape ``(4, 2)``: right, left, up, down.
GOALS: np.ndarray = np.array([[5.0, 0.0], [-5.0, 0.0], [0.0, 5.0], [0.0, -5.0]], dtype=np.float64)
GOALS.setflags(write=False)

BOUND = 7.0
MAX_SPEED = 1.0
GOAL_RADIUS = 1.0
GOAL_REWARD = 10.0
ACTION_COST_COEFF = 30.0
START_STD = 0.1


class MultiGoalEnv(gym.Env):
    """2-D point mass with four goals; see the module docstring for details."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, render_mode: str | None = None, render_size: int = 256):
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be None or one of {self.metadata['render_modes']}, got {render_mode!r}")
        self.render_mode = render_mode
        self.render_size = int(render_size)
        self.observation_space = spaces.Box(-BOUND, BOUND, shape=(2,), dtype=np.float32)
        self.action_space = spaces.Box(-MAX_SPEED, MAX_SPEED, shape=(2,), dtype=np.float32)
        self._pos = np.zeros(2, dtype=np.float32)
        self._path: list[np.ndarray] = [self._pos.copy()]
        self._fig = None
        self._canvas = None

    # ------------------------------------------------------------------ core
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        start = None if options is None else options.get("start")
        if start is None:
            pos = self.np_random.normal(0.0, START_STD, size=2)
        else:
            pos = np.asarray(start, dtype=np.float64)
            if pos.shape != (2,) or not np.all(np.isfinite(pos)):
                raise ValueError(f"options['start'] must be two finite numbers, got {start!r}")
        self._pos = np.clip(pos, -BOUND, BOUND).astype(np.float32)
        self._path = [self._pos.copy()]
        return self._pos.copy(), {"goal_index": -1, "position": self._pos.copy()}

    def step(self, action):
        a = np.asarray(action, dtype=np.float64).reshape(2)
        a = np.clip(a, -MAX_SPEED, MAX_SPEED)
        new_pos = np.clip(self._pos.astype(np.float64) + a, -BOUND, BOUND).astype(np.float32)
        self._pos = new_pos
        self._path.append(new_pos.copy())

        dists = np.linalg.norm(new_pos.astype(np.float64) - GOALS, axis=1)
        nearest = int(np.argmin(dists))
        reward = -(ACTION_COST_COEFF * float(a @ a) + float(dists[nearest]) ** 2)
        terminated = bool(dists[nearest] <= GOAL_RADIUS)
        goal_index = nearest if terminated else -1
        if terminated:
            reward += GOAL_REWARD
        info = {"goal_index": goal_index, "position": new_pos.copy()}
        return new_pos.copy(), float(reward), terminated, False, info

    # ------------------------------------------------------- checkpointing
    def snapshot(self) -> dict:
        """Mid-episode state for exact resume (see dacer2.envs.state)."""
        return {"pos": self._pos.copy(), "path": [p.copy() for p in self._path]}

    def restore(self, state: dict) -> None:
        self._pos = np.asarray(state["pos"], dtype=np.float32).copy()
        self._path = [np.asarray(p, dtype=np.float32).copy() for p in state["path"]]

    # ------------------------------------------------------------- rendering
    def render(self):
        if self.render_mode is None:
            gym.logger.warn("render() called with render_mode=None; nothing to render.")
            return None
        return self._render_rgb()

    def _render_rgb(self) -> np.ndarray:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.patches import Circle

        if self._fig is None:
            dpi = 64
            self._fig = Figure(figsize=(self.render_size / dpi, self.render_size / dpi), dpi=dpi)
            self._canvas = FigureCanvasAgg(self._fig)
        fig = self._fig
        fig.clear()
        ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
        ax.set_xlim(-BOUND, BOUND)
        ax.set_ylim(-BOUND, BOUND)
        ax.set_aspect("equal")
        ax.set_axis_off()
        ax.add_patch(_arena_outline(BOUND))
        for g in GOALS:
            ax.add_patch(Circle(tuple(g), GOAL_RADIUS, color="tab:green", alpha=0.6))
        path = np.asarray(self._path)
        ax.plot(path[:, 0], path[:, 1], color="tab:blue", linewidth=1.0)
        ax.plot([self._pos[0]], [self._pos[1]], "o", color="tab:red", markersize=6)
        self._canvas.draw()
        rgba = np.asarray(self._canvas.buffer_rgba())
        return np.ascontiguousarray(rgba[..., :3], dtype=np.uint8)

    def close(self):
        if self._fig is not None:
            self._fig.clear()
        self._fig = None
        self._canvas = None
        super().close()


def _arena_outline(bound: float):
    """Outline of the arena, as a matplotlib patch."""
    from matplotlib.patches import Rectangle

    return Rectangle((-bound, -bound), 2 * bound, 2 * bound, fill=False, edgecolor="black", linewidth=2.0)
