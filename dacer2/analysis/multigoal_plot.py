"""The multi-goal trajectory figure in DACER's style: rollouts from five start points, (0, 0) and (+-0.5, +-0.5),
drawn over the task's reward landscape with the four goals marked. One panel per policy mode."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dacer2.envs.multigoal import BOUND, GOAL_RADIUS, GOALS

START_POINTS = ((0.0, 0.0), (0.5, 0.5), (-0.5, 0.5), (-0.5, -0.5), (0.5, -0.5))


def plot_trajectories(panels: dict[str, list[list[np.ndarray]]], path: str | Path, title: str | None = None,
                      view: float = BOUND) -> Path:
    """`panels`: panel title -> one list of trajectories ([steps, 2] arrays) per start point (START_POINTS order)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Circle

    # The position part of the reward, -min_g ||s - g||^2: the landscape the trajectories climb.
    grid = np.linspace(-view, view, 71)  # a smooth-looking background; finer only costs time
    xx, yy = np.meshgrid(grid, grid)
    points = np.stack([xx, yy], axis=-1)[..., None, :]
    landscape = -np.min(((points - GOALS) ** 2).sum(-1), axis=-1)

    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.4), squeeze=False)
    colors = plt.get_cmap("tab10")
    for ax, (name, per_start) in zip(axes[0], panels.items()):
        ax.contourf(xx, yy, landscape, levels=20, cmap="Greys_r", alpha=0.55)
        for g in GOALS:
            ax.add_patch(Circle(tuple(g), GOAL_RADIUS, facecolor="none", edgecolor="tab:green", linewidth=1.5))
            ax.plot(*g, marker="*", color="tab:green", markersize=10)
        for i, trajectories in enumerate(per_start):
            for traj in trajectories:
                ax.plot(traj[:, 0], traj[:, 1], color=colors(i), linewidth=0.8, alpha=0.75)
        starts = np.asarray(START_POINTS[: len(per_start)])
        ax.scatter(starts[:, 0], starts[:, 1], color="black", s=12, zorder=5)
        ax.set_xlim(-view, view)
        ax.set_ylim(-view, view)
        ax.set_aspect("equal")
        ax.set_title(name, fontsize=10)
        ax.set_xticks([-5, 0, 5])
        ax.set_yticks([-5, 0, 5])
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
