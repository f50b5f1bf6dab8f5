"""What a run tells its user before the work: where it writes, what computes it, how much it will do, and (once a few
hundred updates have been timed) how long that will take. A 1M-update run on a laptop CPU should not be a surprise."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from dacer2.config import TrainConfig, iterations

PROJECT_AFTER_UPDATES = 300  # updates timed before the finish time is projected (the first ones include warm-up work)


def planned_updates(cfg: TrainConfig, from_env_steps: int = 0) -> int:
    """Updates the loop makes from `from_env_steps` to the budget: every iteration whose env steps have reached the
    warm-up, and the buffer a batch, makes --updates-per-step of them."""
    starts = max(cfg.learning_starts, cfg.batch_size)  # an explicit warm-up may be shorter than a batch
    first = max(iterations(starts, cfg.num_envs), iterations(from_env_steps, cfg.num_envs) + 1)
    return max(iterations(cfg.total_steps, cfg.num_envs) - first + 1, 0) * cfg.updates_per_step


def duration(seconds: float) -> str:
    """'45 s', '12 min', '3 h 05 min'."""
    minutes = round(seconds / 60)
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


def start_block(cfg: TrainConfig, run_dir, resumed_at: int | None, precision: str) -> str:
    """The lines printed before the first iteration."""
    envs = f"{cfg.num_envs} env" + ("s" if cfg.num_envs > 1 else "")
    total_iterations = iterations(cfg.total_steps, cfg.num_envs)
    budget = (f"{cfg.total_steps:,} env steps = {total_iterations:,} iterations of {envs} "
              f"({cfg.updates_per_step} update{'s' if cfg.updates_per_step != 1 else ''} each)")
    if resumed_at:
        work = f"resuming at {resumed_at:,} env steps; {planned_updates(cfg, resumed_at):,} updates to go"
    else:
        work = (f"{planned_updates(cfg):,} updates after a warm-up of {cfg.learning_starts:,} random transitions "
                f"({iterations(cfg.learning_starts, cfg.num_envs):,} iterations)")
    import torch

    threads = cfg.torch_threads or torch.get_num_threads()
    lines = [
        f"dacer2-train: {cfg.algo} on {cfg.env_id}, seed {cfg.seed}, protocol {cfg.protocol}",
        f"  run dir   {run_dir}   (curves: tensorboard --logdir {run_dir})",
        f"  compute   {cfg.device}, {cfg.backend} backend, {precision} GEMMs, {threads} torch thread"
        + ("s" if threads != 1 else ""),
        f"  budget    {budget}",
        f"  work      {work}",
    ]
    crowded = crowded_threads_note(threads) if cfg.device == "cpu" else None
    return "\n".join(lines + ([crowded] if crowded else []))


def other_running_threads(samples: int = 5, pause: float = 0.02, read=lambda: Path("/proc/loadavg").read_text()):
    """Threads of other processes running right now: /proc/loadavg's runnable count less this reader, the fewest of a
    few samples (a momentary spike is not a busy machine). Not the load average: it trails the last minute, so a
    fresh install's compile just before `make train` reads as a busy machine. None where /proc is not there."""
    counts = []
    for i in range(samples):
        try:
            counts.append(int(read().split()[3].split("/")[0]) - 1)
        except (OSError, IndexError, ValueError):
            return None
        if i + 1 < samples:
            time.sleep(pause)
    return max(min(counts), 0)


def crowded_threads_note(threads: int, busy: int | None = None, cores: int | None = None) -> str | None:
    """A line when more torch threads are asked for than the busy machine has free cores. Each parallel op waits
    for its slowest thread, so a thread sharing a core with other work stalls them all: beside two trainings on 2
    cores a 2-thread fp32 update took 300 ms against 77 ms at 1 thread."""
    busy = other_running_threads() if busy is None else busy
    cores = (os.cpu_count() or 1) if cores is None else cores
    if not busy:
        return None
    free = max(cores - busy, 1)
    if threads <= free:
        return None
    return (f"  note      this machine is busy ({busy} other running thread{'s' if busy != 1 else ''} on {cores} "
            f"cores): {threads} torch threads will wait on each other; --torch-threads {free} is faster beside other "
            "work")


class FinishProjection:
    """Once PROJECT_AFTER_UPDATES updates of this process have been timed, one line: the projected time to the end
    of the budget at the rate of the iterations since updates began (updates dominate an iteration's cost)."""

    def __init__(self, after: int = PROJECT_AFTER_UPDATES):
        self.after = after
        self.start: tuple[float, int, int] | None = None  # (time, env steps, updates) at this process's first update
        self.done = False

    def observe(self, cfg: TrainConfig, env_steps: int, updates: int) -> str | None:
        if self.done:
            return None
        if self.start is None:
            if updates > 0:
                self.start = (time.perf_counter(), env_steps, updates)
            return None
        started, start_steps, start_updates = self.start
        if updates - start_updates < self.after:
            return None
        self.done = True
        elapsed = time.perf_counter() - started
        done_iterations = iterations(env_steps - start_steps, cfg.num_envs)
        left_iterations = iterations(cfg.total_steps, cfg.num_envs) - iterations(env_steps, cfg.num_envs)
        per_iteration = elapsed / max(done_iterations, 1)
        return (f"dacer2: {updates - start_updates} updates in {duration(elapsed)} ({per_iteration * 1e3:.1f} ms per "
                f"iteration): about {duration(per_iteration * left_iterations)} to finish {left_iterations:,} more "
                "iterations, evaluations not counted")


def announce(text: str | None) -> None:
    """Print on stderr above a running progress bar (tqdm.write clears and redraws it) rather than through it."""
    if text:
        from tqdm.auto import tqdm

        tqdm.write(text, file=sys.stderr)
