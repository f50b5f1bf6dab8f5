"""dacer2-plot: learning curves and a final-return summary for one or many run directories."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import tyro

from dacer2.config import Unset


@dataclass
class PlotConfig:
    """Learning curves (eval return vs env steps; seeds averaged with a shaded band, one line per algorithm, one panel
    per env; the mean stops where the shortest seed stops, and a seed run further goes on as a dashed line) and a
    final-return summary table for run directories."""

    # Required (plot_main says so when none is given), but defaulted so that the error is that one clear line.
    runs: Annotated[tuple[str, ...], tyro.conf.Positional,
                    tyro.conf.arg(metavar="RUN_DIR...", help_behavior_hint="(required)")] = ()
    """Run directories, or folders searched recursively for them (a run directory holds config.json and metrics.csv)."""
    out_dir: str = "plots"
    """Folder for the figure and the tables."""
    name: str = "learning_curves"
    """Base file name: <name>.png/.svg, <name>_runs.csv, <name>_summary.csv, <name>.md."""
    formats: tuple[Literal["png", "svg", "pdf"], ...] = ("png",)
    """Figure formats to write."""
    title: Unset[str] = None
    """Figure title (default: none)."""
    ylim: Annotated[Unset[tuple[float, float]], tyro.conf.arg(metavar="LOW HIGH")] = None
    """Y-axis range LOW HIGH for every panel (default: fit the data), e.g. to zoom past a very negative start."""
    x: Literal["env-steps", "iterations"] = "env-steps"
    """Horizontal axis: env steps (summed over a run's training envs), or iterations, each a step of every training env
plus its updates (the papers' axis: runs of --protocol papers step 20 envs per iteration)."""
    band: Literal["ci95", "range"] = "ci95"
    """Shaded band around each mean curve: ci95, the 95% Student-t confidence interval of the mean over seeds; or range,
every seed's minimum to maximum (clearer with 2-3 seeds, where the t-interval is very wide)."""


def plot_main(argv: list[str] | None = None) -> int:
    cfg = tyro.cli(PlotConfig, args=argv, prog="dacer2-plot")
    from dacer2.analysis.plotting import write_report
    from dacer2.analysis.runs import RunError, find_run_dirs, load_run

    try:
        if not cfg.runs:
            raise RunError("give at least one run directory: dacer2-plot RUN_DIR [RUN_DIR ...]")
        runs = [load_run(d) for d in find_run_dirs(list(cfg.runs))]
        empty = [r.path.name for r in runs if not r.eval_steps.size]
        runs = [r for r in runs if r.eval_steps.size]
        if not runs:
            raise RunError("none of the runs has an evaluation in metrics.csv yet")
    except RunError as exc:
        print(f"dacer2-plot: error: {exc}", file=sys.stderr)
        return 2
    if empty:
        print(f"dacer2-plot: skipping runs without evaluations: {', '.join(empty)}", file=sys.stderr)
    summary, written = write_report(runs, Path(cfg.out_dir), cfg.name, cfg.formats, cfg.title, cfg.ylim,
                                    cfg.band, cfg.x.replace("-", "_"))
    print(summary)
    print("wrote " + ", ".join(map(str, written)))
    return 0


if __name__ == "__main__":
    sys.exit(plot_main())
