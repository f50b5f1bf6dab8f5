"""dacer2-plot: learning curves and a final-return summary for one or many run directories."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal, Optional

import tyro


@dataclass
class PlotConfig:
    """Learning curves (eval return vs env steps; seeds averaged with a 95% band, one line per algorithm, one panel
    per env) and a final-return summary table for run directories."""

    runs: Annotated[tuple[str, ...], tyro.conf.Positional, tyro.conf.arg(metavar="RUN_DIR...")] = ()
    """Run directories, or folders searched recursively for them (a run directory holds config.json and metrics.csv)."""
    out_dir: str = "plots"
    """Folder for the figure and the tables."""
    name: str = "learning_curves"
    """Base file name: <name>.png/.svg, <name>_runs.csv, <name>_summary.csv, <name>.md."""
    formats: tuple[Literal["png", "svg", "pdf"], ...] = ("png",)
    """Figure formats to write."""
    title: Optional[str] = None
    """Figure title."""
    ylim: Optional[tuple[float, float]] = None
    """Y-axis range LOW HIGH for every panel (None: fit the data), e.g. to zoom past a very negative start."""


def plot_main(argv: list[str] | None = None) -> int:
    cfg = tyro.cli(PlotConfig, args=argv)
    from dacer2.plotting import ALGO_COLUMNS, RUN_COLUMNS, algo_rows, markdown_summary, plot_learning_curves, run_rows, write_csv
    from dacer2.runs import RunError, find_run_dirs, load_run

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
    out = Path(cfg.out_dir)
    figures = [out / f"{cfg.name}.{fmt}" for fmt in cfg.formats]
    plot_learning_curves(runs, figures, cfg.title, cfg.ylim)
    write_csv(out / f"{cfg.name}_runs.csv", run_rows(runs), RUN_COLUMNS)
    write_csv(out / f"{cfg.name}_summary.csv", algo_rows(runs), ALGO_COLUMNS)
    summary = markdown_summary(runs)
    (out / f"{cfg.name}.md").write_text(summary)
    print(summary)
    print("wrote " + ", ".join(str(p) for p in [*figures, out / f"{cfg.name}_runs.csv",
                                                 out / f"{cfg.name}_summary.csv", out / f"{cfg.name}.md"]))
    return 0


if __name__ == "__main__":
    sys.exit(plot_main())
