"""The results page's cost section: what one training update costs per algorithm relative to dacer2 (one
benchmark run on one host, results/algo-cost/<host>.csv from benchmarks/test_bench_algo_cost.py), and the return
each algorithm reached per unit of that cost.

Only the ratios of one run are used: wall-clock times of runs made on different hosts are never compared, and the
training runs themselves came from more than one host.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

COST_DIR = Path(__file__).resolve().parent / "algo-cost"
COMMAND = "pytest benchmarks/test_bench_algo_cost.py --bench-results results/algo-cost"
ITERATION_COMMAND = "pytest benchmarks/test_bench_iteration_cost.py --bench-results results/iteration-cost"


@dataclass(frozen=True)
class UpdateCost:
    env_id: str
    algo: str
    ms: float  # median training update (half a policy + critic-only pair), this run
    relative: float  # ms / dacer2's ms at the same task, same run
    note: str  # T, eta, backend and widths as the benchmark built the agent


@dataclass(frozen=True)
class CostRun:
    host: str
    date: str
    commit: str
    threads: str
    costs: dict[tuple[str, str], UpdateCost]  # (env_id, algo) -> cost


def load_cost_runs(folder: Path = COST_DIR, suite: str = "algo_cost") -> list[CostRun]:
    """One CostRun per committed CSV (one per host the benchmark ran on)."""
    runs = []
    for path in sorted(folder.glob("*.csv")) if folder.is_dir() else []:
        with open(path, newline="") as f:
            rows = [r for r in csv.DictReader(f) if r["suite"] == suite and r["median_ms"]]
        if not rows:
            continue
        base = {r["mode"]: float(r["median_ms"]) for r in rows if r["backend"] == "dacer2"}
        costs = {(r["mode"], r["backend"]): UpdateCost(r["mode"], r["backend"], float(r["median_ms"]),
                                                       float(r["median_ms"]) / base[r["mode"]], r["note"])
                 for r in rows if r["mode"] in base}
        first = rows[0]
        runs.append(CostRun(first["device_name"], first["date"], first["commit"], first["threads"], costs))
    return runs


def _timed_table(run: CostRun, how: str, columns: tuple[str, str], detail) -> list[str]:
    """One benchmark run's rows with its host, date and commit; `detail(note)` is the third column."""
    lines = [f"One benchmark run on **{run.host}**, {run.date}, commit {run.commit}, {run.threads} torch thread, "
             f"{how} Only the ratios are meant to travel: the milliseconds are this host's.", "",
             f"| task | algorithm | {columns[0]} | {columns[1]} (ms) | cost relative to dacer2 |", "|---|---|---|---:|---:|"]
    for (env_id, algo), cost in run.costs.items():
        lines.append(f"| {env_id} | {algo} | {detail(cost.note)} | {cost.ms:.1f} | {cost.relative:.2f} |")
    return lines


def cost_table(run: CostRun) -> list[str]:
    return _timed_table(
        run, f"the two training runs paused (`{COMMAND}`). A row is the agent `dacer2-train --env-id ENV --algo ALGO` "
        "builds, timed over an average update (one with the policy step, one critic-only), the four algorithms of a "
        "task in interleaved rounds.", ("what it runs", "update"), lambda note: note.split(" rounds=")[0])


def iteration_cost_table(run: CostRun) -> list[str]:
    return _timed_table(
        run, f"the training runs paused (`{ITERATION_COMMAND}`). A row is the compute of a `dacer2-train --protocol "
        "papers --env-id ENV --algo ALGO` run: its policy acting for 20 envs, 20 real envs stepping into the replay "
        "buffer, and one update, averaged over an iteration with the policy step and one without, the algorithms of "
        "a task in interleaved rounds.", ("where an iteration's time goes", "iteration"),
        lambda note: note.split("; ")[1] if "; " in note else "")


def return_for_cost_rows(env_id: str, finals: dict[str, float], areas: dict[str, float], base_algo: dict[str, str],
                         run: CostRun) -> list[str]:
    """Rows of the return-per-cost table for one task: the mean final return and mean over training divided by the
    relative update cost (dacer2 = 1). `base_algo` maps a row label (e.g. 'dacer2 (eta 1.0)') to its preset."""
    rows = []
    for label, final in finals.items():
        cost = run.costs.get((env_id, base_algo[label]))
        if cost is None:
            continue
        rows.append(f"| {env_id} | {label} | {cost.relative:.2f} | {final:.0f} | {final / cost.relative:.0f} | "
                    f"{areas[label]:.0f} | {areas[label] / cost.relative:.0f} |")
    return rows


RETURN_FOR_COST_HEADER = [
    "| task | algorithm | cost per update (dacer2 = 1) | final return (mean) | final return / cost | "
    "mean over training | mean over training / cost |",
    "|---|---|---:|---:|---:|---:|---:|",
]
