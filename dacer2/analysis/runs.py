"""Run directories: their names, and reading finished (or running) ones: config.json + metrics.csv -> the
evaluation history and the papers' final-return metric. Pure file reading, no torch, so plotting many runs stays
fast."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FINAL_FRACTION = 0.1  # "best evaluation in the last 10% of training" (docs/algorithm.md §5)


def run_name(env_id: str, algo: str, seed: int) -> str:
    """A run directory's name, <env>__<algo>__<seed>: a sweep's trial folder, and the stem of a default run_dir
    (which appends the start time)."""
    return f"{env_id.replace('/', '-')}__{algo}__{seed}"


class RunError(ValueError):
    """A path is not a readable run directory."""


@dataclass
class Run:
    path: Path
    env_id: str
    algo: str  # the label runs are grouped by: config's algo, or the policy family of a comparison run
    seed: int
    eval_steps: np.ndarray  # env steps of each evaluation
    eval_mean: np.ndarray
    eval_std: np.ndarray
    num_envs: int = 1  # training envs stepped per iteration (20 in the papers' protocol)

    @property
    def eval_iterations(self) -> np.ndarray:
        """Iterations (steps of all training envs) of each evaluation: the papers' x-axis."""
        return np.ceil(self.eval_steps / self.num_envs)

    @property
    def final_return(self) -> float:
        return final_return(self.eval_steps, self.eval_mean)

    @property
    def last_return(self) -> float:
        return float(self.eval_mean[-1]) if self.eval_mean.size else math.nan

    def until(self, iterations: float) -> Run:
        """The run as it stood after `iterations` iterations: its evaluations up to there. Runs of different
        lengths then compare at one budget, the final return's last 10% being of that budget."""
        keep = self.eval_iterations <= iterations
        return dataclasses.replace(self, eval_steps=self.eval_steps[keep], eval_mean=self.eval_mean[keep],
                                   eval_std=self.eval_std[keep])


def final_return(steps: np.ndarray, returns: np.ndarray, fraction: float = FINAL_FRACTION) -> float:
    """Best evaluation whose env-step count lies in the last `fraction` of training.

    "Training" ends at the last evaluation's step (so an interrupted run is judged on what it reached). If the
    evaluations are too sparse to have one in that window, the last evaluation is used.
    """
    steps, returns = np.asarray(steps, dtype=np.float64), np.asarray(returns, dtype=np.float64)
    if steps.size == 0:
        return math.nan
    window = steps >= (1.0 - fraction) * steps.max()
    return float(returns[window].max())


def read_eval_history(metrics_csv: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(steps, mean, std) of the rows that carry an evaluation."""
    steps, means, stds = [], [], []
    with open(metrics_csv, newline="") as f:
        for row in csv.DictReader(f):
            mean = row.get("eval_return_mean") or ""
            if mean.strip() == "":
                continue
            steps.append(float(row["env_steps"]))
            means.append(float(mean))
            std = row.get("eval_return_std") or ""
            stds.append(float(std) if std.strip() else math.nan)
    order = np.argsort(steps, kind="stable")
    return np.asarray(steps)[order], np.asarray(means)[order], np.asarray(stds)[order]


def run_label(run_dir: Path, config: dict) -> str:
    marker = run_dir / "policy.json"  # written by the Gaussian trainer before it became --algo gaussian
    if marker.is_file():
        return json.loads(marker.read_text()).get("policy_family", config.get("algo", "?"))
    return str(config.get("algo", "?"))


def load_run(run_dir: str | Path) -> Run:
    run_dir = Path(run_dir)
    config_path, metrics_path = run_dir / "config.json", run_dir / "metrics.csv"
    if not config_path.is_file() or not metrics_path.is_file():
        raise RunError(f"{run_dir} is not a run directory (needs config.json and metrics.csv)")
    try:
        config = json.loads(config_path.read_text())
        steps, mean, std = read_eval_history(metrics_path)
    except (json.JSONDecodeError, KeyError, ValueError) as exc:
        raise RunError(f"{run_dir}: unreadable config.json or metrics.csv ({exc})") from exc
    return Run(run_dir, str(config.get("env_id", "?")), run_label(run_dir, config), int(config.get("seed", 0)),
               steps, mean, std, int(config.get("num_envs") or 1))


def find_run_dirs(paths: list[str | Path]) -> list[Path]:
    """Each path is a run directory or a folder searched recursively for them (sorted, no duplicates)."""
    found: list[Path] = []
    for p in map(Path, paths):
        if (p / "metrics.csv").is_file():
            found.append(p)
        elif p.is_dir():
            found.extend(m.parent for m in sorted(p.rglob("metrics.csv")) if (m.parent / "config.json").is_file())
        else:
            raise RunError(f"no run directory at {p}")
    unique = sorted({f.resolve() for f in found})
    if not unique:
        raise RunError(f"no run directories (config.json + metrics.csv) under {', '.join(map(str, paths))}")
    return unique
