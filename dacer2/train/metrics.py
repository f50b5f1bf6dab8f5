"""Where training metrics go: one CSV row per log event (a stable column set, so runs can be compared with any
tool) and the same scalars to TensorBoard."""

from __future__ import annotations

import csv
import math
from pathlib import Path

from dacer2.config import iterations

# iterations = env_steps / num_envs: the papers' x-axis (one step of all training envs + its updates).
CSV_COLUMNS = (
    "env_steps", "iterations", "updates", "wall_time", "sps",
    "episodic_return", "episode_length", "eval_return_mean", "eval_return_std",
    "critic_loss", "policy_loss_q", "policy_loss_g", "alpha", "entropy", "q_mean", "q_sigma",
)


class MetricsWriter:
    def __init__(self, run_dir: Path, tensorboard: bool = True, keep_until_step: int | None = None, num_envs: int = 1):
        self.csv_path = run_dir / "metrics.csv"
        if keep_until_step is not None and self.csv_path.exists():
            _drop_rows_after(self.csv_path, keep_until_step, num_envs)  # also brings an older file's columns up to date
        new_file = not self.csv_path.exists()
        self._file = open(self.csv_path, "a", newline="")
        self._csv = csv.DictWriter(self._file, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        if new_file:
            self._csv.writeheader()
        self._tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step makes TensorBoard hide the events a crashed attempt wrote after the resumed checkpoint.
            purge = keep_until_step + 1 if keep_until_step is not None else None
            self._tb = SummaryWriter(log_dir=str(run_dir), purge_step=purge)

    def write(self, row: dict[str, float]) -> None:
        clean = {k: v for k, v in row.items() if v is not None and not (isinstance(v, float) and math.isnan(v))}
        self._csv.writerow(clean)
        self._file.flush()
        if self._tb is not None:
            step = int(row["env_steps"])
            for key, value in clean.items():
                if key not in ("env_steps",):
                    self._tb.add_scalar(f"{_tb_group(key)}/{key}", value, step)

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()


def _drop_rows_after(csv_path: Path, env_steps: int, num_envs: int) -> None:
    """Rewrite the CSV (atomically) without the rows logged after `env_steps`."""
    with open(csv_path, newline="") as f:
        reader = csv.DictReader(f)
        kept = [row for row in reader if float(row["env_steps"]) <= env_steps]
    for row in kept:  # a file written before the iterations column existed
        if not row.get("iterations"):
            row["iterations"] = iterations(int(float(row["env_steps"])), num_envs)
    tmp = csv_path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as f:
        # Today's columns: rows appended after a resume line up with the header even where an older dacer2 wrote
        # the file (a column it lacked stays empty in its rows).
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(kept)
    tmp.replace(csv_path)


def _tb_group(key: str) -> str:
    if key.startswith("eval"):
        return "eval"
    if key in ("episodic_return", "episode_length"):
        return "rollout"
    if key in ("sps", "wall_time", "updates", "iterations"):
        return "time"
    return "train"
