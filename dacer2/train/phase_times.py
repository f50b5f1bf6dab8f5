"""Where a training run's wall time goes: seconds per phase of the loop, so a user (and the loop-overhead benchmark)
can see how much of a run is learning and how much is the loop around it.

The gradient updates are the work; everything else (acting, env stepping, the replay buffer, entropy fits,
evaluation, logging, checkpoints) is the loop's overhead. Timing a phase costs about a microsecond, against
milliseconds per env step.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator

# The phases the trainer times, in the order a summary lists them. "entropy" is the updates that also re-estimate
# the entropy (one in alpha_every): their gradient step is filed there too, at most one update in ten thousand.
PHASES = ("update", "entropy", "act", "env", "replay", "eval", "log", "checkpoint")


class PhaseTimes:
    def __init__(self) -> None:
        self.seconds = {phase: 0.0 for phase in PHASES}
        self.started = time.perf_counter()

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - start

    def breakdown(self) -> dict:
        """Seconds per phase, the untimed rest ("other": the loop's own bookkeeping, e.g. progress output and episode
        counters; setup happens before the clock starts), the total and the overhead share (1 - update / total)."""
        total = time.perf_counter() - self.started
        seconds = {name: round(value, 4) for name, value in self.seconds.items()}
        seconds["other"] = round(max(total - sum(self.seconds.values()), 0.0), 4)
        return {"seconds": seconds, "total_s": round(total, 4),
                "loop_overhead": round(1.0 - self.seconds["update"] / total, 4) if total > 0 else 0.0}


def describe(breakdown: dict) -> str:
    """One line for the end of a run: the overhead share, then each phase's share of the wall time."""
    total = breakdown["total_s"] or 1.0
    parts = [f"{name} {100 * value / total:.1f}%" for name, value in breakdown["seconds"].items() if value > 0]
    return f"loop overhead {100 * breakdown['loop_overhead']:.1f}% of {total:.0f} s ({', '.join(parts)})"
