"""Learning-curve figures and final-return tables over many runs (used by dacer2-plot).

Seeds of the same (env, algo) are one line: the mean over seeds with a shaded band, by default the 95% Student-t
confidence band of that mean (t, not 1.96, because papers run 3-5 seeds and a normal band would be too narrow).
With 2-3 seeds that band is 2.5-9 standard deviations wide and swamps the curves, so band="range" shades the seeds'
minimum to maximum instead: where every seed lies, claiming nothing about the mean.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import textwrap
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from dacer2.analysis.runs import Run

# Two-sided 95% Student-t quantiles t_{0.975, df}, df = 1..30; beyond that the normal 1.96 is within 2%.
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


Band = Literal["ci95", "range"]
XAxis = Literal["env_steps", "iterations"]
X_LABELS = {"env_steps": "environment steps", "iterations": "iterations (one step of every training env + its updates)"}
BAND_LABELS = {"ci95": "band: 95% t-interval of the mean", "range": "band: min to max over seeds"}


def t975(df: float) -> float:
    """The two-sided 95% Student-t quantile t_{0.975, df}. An integer df reads the table above (1.96 beyond 30);
    a fractional df (a Welch-Satterthwaite df) is solved to float precision: the t where the two-sided tail
    I_{df/(df+t^2)}(df/2, 1/2), the regularized incomplete beta function, equals 0.05, found by bisection."""
    if float(df).is_integer():
        df = int(df)
        return _T975[df - 1] if 1 <= df <= len(_T975) else 1.96
    if not df > 0:
        raise ValueError(f"t975 needs df > 0, got {df}")

    def incomplete_beta(x: float, a: float, b: float) -> float:
        # I_x(a, b) by its continued fraction (modified Lentz), on the side of x where it converges fast.
        if x <= 0.0 or x >= 1.0:
            return 0.0 if x <= 0.0 else 1.0
        if x > (a + 1.0) / (a + b + 2.0):
            return 1.0 - incomplete_beta(1.0 - x, b, a)
        front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)) / a
        tiny = 1e-300
        c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
        d = 1.0 / (d if abs(d) > tiny else tiny)
        f = d
        for m in range(1, 500):
            for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                              -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
                d = 1.0 + numerator * d
                d = 1.0 / (d if abs(d) > tiny else tiny)
                c = 1.0 + numerator / c
                c = c if abs(c) > tiny else tiny
                f *= c * d
            if abs(c * d - 1.0) < 1e-15:
                break
        return front * f

    def two_sided_tail(t: float) -> float:
        return incomplete_beta(df / (df + t * t), df / 2.0, 0.5)

    low, high = 0.0, 2.0
    while two_sided_tail(high) > 0.05:
        high *= 2.0
    for _ in range(200):
        mid = 0.5 * (low + high)
        if mid in (low, high):
            break
        low, high = (mid, high) if two_sided_tail(mid) > 0.05 else (low, mid)
    return 0.5 * (low + high)


@dataclass
class Curve:
    steps: np.ndarray
    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray
    num_runs: int


def aggregate(runs: list[Run], band: Band = "ci95") -> Curve:
    """Mean and band (95% CI of the mean, or the seeds' range) over runs, on the union of their evaluation steps up to where every run has data
    (runs are linearly interpolated onto that grid, so seeds evaluated at slightly different steps still align)."""
    runs = [r for r in runs if r.eval_steps.size]
    if not runs:
        raise ValueError("no evaluations to aggregate")
    end = min(r.eval_steps.max() for r in runs)
    grid = np.unique(np.concatenate([r.eval_steps[r.eval_steps <= end] for r in runs]))
    values = np.stack([np.interp(grid, r.eval_steps, r.eval_mean) for r in runs])
    mean = values.mean(axis=0)
    if band == "range":
        return Curve(grid, mean, values.min(axis=0), values.max(axis=0), len(runs))
    if len(runs) > 1:
        half = t975(len(runs) - 1) * values.std(axis=0, ddof=1) / math.sqrt(len(runs))
    else:
        half = np.zeros_like(mean)
    return Curve(grid, mean, mean - half, mean + half, len(runs))


def group_runs(runs: list[Run]) -> dict[str, dict[str, list[Run]]]:
    """env -> algo -> runs, in first-seen order."""
    groups: dict[str, dict[str, list[Run]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        groups[run.env_id][run.algo].append(run)
    return groups


def legend_title(seed_counts: list[int], band: Band, tails: bool = False) -> str:
    """What a panel's legend says about its curves: the band only where one is drawn (two or more seeds); a curve
    of one seed is that seed's evaluations, with no band and no interval claimed; dashed lines, where drawn, are
    single seeds past the others."""
    if max(seed_counts) < 2:
        return "one seed per curve: no band"
    title = f"mean over seeds; {BAND_LABELS[band]}"
    title += "; n=1: no band" if min(seed_counts) < 2 else ""
    return title + ("\ndashed: a seed run past the others" if tails else "")


def tails_past(curve: Curve, runs: list[Run]) -> list[tuple[np.ndarray, np.ndarray]]:
    """The evaluations of runs that go on past the curve's end (the mean stops where the shortest seed stops):
    a run landed at half its budget beside runs already extended must not hide the longer ones."""
    end = curve.steps.max()
    return [(r.eval_steps[r.eval_steps >= end], r.eval_mean[r.eval_steps >= end]) for r in runs
            if r.eval_steps.size and r.eval_steps.max() > end]


MAX_CURVES_UNDER_LEGEND = 4


def legend_beside_axes(by_algo: dict[str, list[Run]]) -> bool:
    """A legend box of more curves than this, or one that also explains dashed tails, hides curves wherever it
    sits inside the axes: put it beside them."""
    lengths = ({r.eval_steps.max() for r in runs if r.eval_steps.size} for runs in by_algo.values())
    return len(by_algo) > MAX_CURVES_UNDER_LEGEND or any(len(ends) > 1 for ends in lengths)


def plot_learning_curves(runs: list[Run], outputs: list[Path], title: str | None = None,
                         ylim: tuple[float, float] | None = None, band: Band = "ci95", x: XAxis = "env_steps"):
    """Draw and save the figure; returns it (closed: for reading its axes, not for showing). `x` is the
    horizontal axis: env steps, or iterations (steps of all of a run's training envs, the papers' axis)."""
    if x == "iterations":
        runs = [dataclasses.replace(r, eval_steps=r.eval_iterations, num_envs=1) for r in runs]
    import matplotlib

    matplotlib.use("Agg")  # headless: files only, never a window
    import matplotlib.pyplot as plt

    groups = group_runs(runs)
    algos = list(dict.fromkeys(r.algo for r in runs))
    colors = {a: plt.get_cmap("tab10")(i % 10) for i, a in enumerate(algos)}  # one color per algo in every panel
    n = len(groups)
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    legend_width = 3.2 if any(legend_beside_axes(by_algo) for by_algo in groups.values()) else 0.0
    fig, axes = plt.subplots(rows, cols, figsize=((5.0 + legend_width) * cols, 3.6 * rows), squeeze=False)
    for ax, (env_id, by_algo) in zip(axes.flat, groups.items()):
        seed_counts, any_tails = [], False
        for algo, algo_runs in by_algo.items():
            curve = aggregate(algo_runs, band)
            seed_counts.append(curve.num_runs)
            label = f"{algo} (n={curve.num_runs})"
            ax.plot(curve.steps, curve.mean, color=colors[algo], label=label, linewidth=1.8)
            if curve.num_runs > 1:
                ax.fill_between(curve.steps, curve.low, curve.high, color=colors[algo], alpha=0.2, linewidth=0)
            for steps, returns in tails_past(curve, algo_runs):
                ax.plot(steps, returns, color=colors[algo], linewidth=1.0, linestyle="--")
                any_tails = True
        ax.set_title(env_id)
        ax.set_xlabel(X_LABELS[x])
        ax.set_ylabel("evaluation return")
        ax.grid(alpha=0.3)
        if ylim is not None:
            ax.set_ylim(*ylim)
        legend = dict(fontsize=8, title=legend_title(seed_counts, band, any_tails), title_fontsize=8)
        if legend_beside_axes(by_algo):
            ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, **legend)
        else:
            ax.legend(loc="best", **legend)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    if title:  # wrapped to the figure's width: a one-panel figure is narrower than a long title
        fig.suptitle("\n".join(textwrap.wrap(title, 45 * cols)))
    fig.tight_layout()
    for path in outputs:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
    plt.close(fig)
    return fig


# ------------------------------------------------------------------------------------------------------------
# Tables
# ------------------------------------------------------------------------------------------------------------
RUN_COLUMNS = ("env_id", "algo", "seed", "env_steps", "final_return", "last_return", "run_dir")
ALGO_COLUMNS = ("env_id", "algo", "seeds", "final_return_mean", "final_return_std")


def run_rows(runs: list[Run]) -> list[dict]:
    return [
        dict(env_id=r.env_id, algo=r.algo, seed=r.seed,
             env_steps=int(r.eval_steps.max()) if r.eval_steps.size else 0,
             final_return=r.final_return, last_return=r.last_return, run_dir=r.path.name)
        for r in runs
    ]


def algo_rows(runs: list[Run]) -> list[dict]:
    rows = []
    for env_id, by_algo in group_runs(runs).items():
        for algo, algo_runs in by_algo.items():
            finals = np.array([r.final_return for r in algo_runs])
            std = float(finals.std(ddof=1)) if finals.size > 1 else math.nan  # one seed has no sample std
            rows.append(dict(env_id=env_id, algo=algo, seeds=len(algo_runs),
                             final_return_mean=float(finals.mean()), final_return_std=std))
    return rows


def write_csv(path: Path, rows: list[dict], columns: tuple[str, ...]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def mean_std_text(mean: float, std: float, seeds: int, digits: int = 1) -> str:
    """"mean +- std" over seeds; one seed has no spread to report ("+- 0" would read as one measured to be zero)."""
    return f"{mean:.{digits}f} +- {std:.{digits}f}" if seeds > 1 else f"{mean:.{digits}f} (one seed)"


def markdown_summary(runs: list[Run]) -> str:
    lines = ["## Final return per algorithm (best evaluation in the last 10% of training, mean +- std over seeds)", "",
             "| env | algo | seeds | final return |", "|---|---|---:|---:|"]
    for row in algo_rows(runs):
        final = mean_std_text(row["final_return_mean"], row["final_return_std"], row["seeds"])
        lines.append(f"| {row['env_id']} | {row['algo']} | {row['seeds']} | {final} |")
    lines += ["", "## Final return per run", "", "| env | algo | seed | env steps | final return | last eval | run |",
              "|---|---|---:|---:|---:|---:|---|"]
    for row in run_rows(runs):
        lines.append(f"| {row['env_id']} | {row['algo']} | {row['seed']} | {row['env_steps']} | "
                     f"{row['final_return']:.1f} | {row['last_return']:.1f} | {row['run_dir']} |")
    return "\n".join(lines) + "\n"


def write_report(runs: list[Run], out_dir: Path, name: str, formats: tuple[str, ...] = ("png",),
                 title: str | None = None, ylim: tuple[float, float] | None = None,
                 band: Band = "ci95", x: XAxis = "env_steps") -> tuple[str, list[Path]]:
    """The learning-curve figure(s), per-run and per-algorithm CSVs and the markdown summary under out_dir.
    Returns the summary and the files written."""
    figures = [out_dir / f"{name}.{fmt}" for fmt in formats]
    plot_learning_curves(runs, figures, title, ylim, band, x)
    write_csv(out_dir / f"{name}_runs.csv", run_rows(runs), RUN_COLUMNS)
    write_csv(out_dir / f"{name}_summary.csv", algo_rows(runs), ALGO_COLUMNS)
    summary = markdown_summary(runs)
    (out_dir / f"{name}.md").write_text(summary)
    return summary, [*figures, out_dir / f"{name}_runs.csv", out_dir / f"{name}_summary.csv", out_dir / f"{name}.md"]
