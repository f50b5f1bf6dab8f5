"""How a benchmark row is measured: the `Bench` timing helper around pytest-benchmark, peak memory of one call
(with the glibc allocator workaround that makes CPU peaks visible), and the description of the machine and
software a run was measured on.

Timings are never asserted on: the machines this runs on are shared and noisy, so only ratios measured in the
same run are compared (report.py).
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
import time
from pathlib import Path
from typing import Callable

import pytest
import torch

from dacer2.algo.precision import BF16_FLAGS, cpuinfo_field, cpu_flags
from dacer2.train.host_memory import M_MMAP_THRESHOLD, glibc, keep_freed_memory
from flops import op_flops
from grid import Case, build_agent, random_batch

BENCH_DIR = Path(__file__).resolve().parent

# Where Bench leaves what the summary needs beyond pytest-benchmark's own records: the rows that could not run
# (with why) and how the CPU peak memory was measured (the table's caption says it).
NOT_RUN = pytest.StashKey[list]()
MEMORY_NOTE = pytest.StashKey[str]()
# Rows computed from one timed run's parts (the training loop's phase clock) rather than timed rounds.
DERIVED = pytest.StashKey[list]()


# --------------------------------------------------------------------------------------------------------------
# Peak memory.
# --------------------------------------------------------------------------------------------------------------
def _status_kb(key: str) -> int:
    with open("/proc/self/status") as f:
        return int(re.search(rf"^{key}:\s+(\d+)", f.read(), re.M).group(1))


def peak_memory_mb(fn: Callable[[], object], device: str) -> tuple[float | None, str]:
    """Extra memory at the peak of one call of fn over what was in use just before it, in MiB.

    CUDA: torch.cuda.max_memory_allocated (tensor memory only). CPU: peak RSS (VmHWM, reset through
    /proc/self/clear_refs). glibc would serve the call from heap memory the timed rounds left resident, which
    RSS never sees, so the heap is trimmed first and, for the measured call, the mmap threshold is pinned low
    so every tensor-sized block is a fresh mapping that shows up in RSS (then set back to training's setting,
    dacer2.train.host_memory).
    The timed rounds run before this, so they never pay for the fresh mappings. Resolution is about 1 MiB
    (the kernel's RSS counters are per-CPU and batched), so "0" means below that.
    """
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - before) / 2**20, "cuda max_memory_allocated delta"
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError as err:
        return None, f"peak RSS unavailable ({err})"
    libc = glibc()
    if libc:
        # Return the heap's free pages first: blocks the timed rounds left in glibc's bins are resident, and
        # reusing them would not show up in RSS at all.
        libc.malloc_trim(0)
        libc.mallopt(M_MMAP_THRESHOLD, 64 * 1024)
    try:
        before = _status_kb("VmRSS")
        fn()
        peak = _status_kb("VmHWM")
    finally:
        if libc:
            keep_freed_memory()
    return max(peak - before, 0) / 1024, "peak RSS delta"


# --------------------------------------------------------------------------------------------------------------
# The timing helper.
# --------------------------------------------------------------------------------------------------------------
def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


class Bench:
    """Times one row with pytest-benchmark and attaches the row's coordinates to benchmark.extra_info, which the
    summary reads back. `fn(*args)` is the timed code; `setup()` (optional, untimed, run before every round)
    returns its args, e.g. the forward pass whose backward is timed."""

    def __init__(self, benchmark, request, case: Case | None):
        self.benchmark = benchmark
        self.request = request
        self.case = case
        self.config = request.config
        self.smoke = benchmark.disabled
        self.budget = self.config.option.bench_budget

    # The row's agent, batch and FLOP count, bound to its case (and, for compile rows, to smoke mode).
    def agent(self, **overrides):
        return build_agent(self.case, smoke=self.smoke, **overrides)

    def batch(self, n: int | None = None, seed: int = 1):
        return random_batch(self.case, n, seed)

    def flops(self, op: str, mode: str) -> float:
        c = self.case
        return op_flops(op, mode, c.obs_dim, c.action_dim, c.steps or 0, c.batch)

    def info(self, **meta) -> dict:
        c = self.case
        base = dict(
            suite=Path(str(self.request.node.fspath)).stem.removeprefix("test_bench_"),
            device=c.device if c else "cpu",
            backend=c.backend if c else "eager",
            S=c.obs_dim if c else None,
            A=c.action_dim if c else None,
            T=c.steps if c else None,
            B=c.batch if c else None,
            threads=torch.get_num_threads(),
        )
        base.update(meta)
        return base

    def run(
        self,
        fn: Callable,
        setup: Callable[[], tuple] | None = None,
        *,
        op: str,
        mode: str,
        flops: float | None = None,
        rounds: int | None = None,
        max_rounds: int = 200,
        min_rounds: int = 3,
        measure_memory: bool = True,
        warm: bool = True,
        warmup_rounds: int = 0,
        **meta,
    ):
        device = self.case.device if self.case else "cpu"

        def target(*args):
            out = fn(*args)
            _sync(device)
            return out

        def make_args():
            args = setup() if setup else ()
            _sync(device)
            return args, {}

        extra = self.benchmark.extra_info
        extra.update(self.info(op=op, mode=mode, flops=flops, **meta))
        self.benchmark.group = f"{extra['suite']}:{op}:{mode}"
        if self.smoke:
            # --benchmark-disable: pytest-benchmark calls setup + target once; that is the whole smoke check.
            return self.benchmark.pedantic(target, setup=make_args, rounds=1)

        # First call: includes torch.compile's tracing and code generation and any lazy packing/allocation; the
        # second sizes the round count. Slow rows with a fixed round count skip both (warm=False).
        first = None
        if warm:
            args, _ = make_args()
            t0 = time.perf_counter()
            target(*args)
            first = estimate = time.perf_counter() - t0
            if self.case is not None and self.case.backend == "compile":  # the first call was mostly compiling
                args, _ = make_args()
                t0 = time.perf_counter()
                target(*args)
                estimate = time.perf_counter() - t0
        if rounds is None:
            rounds = int(min(max(self.budget / max(estimate, 1e-6), min_rounds), max_rounds)) if warm else min_rounds
        result = self.benchmark.pedantic(
            target, setup=make_args, rounds=rounds, warmup_rounds=warmup_rounds, iterations=1
        )
        median = self.benchmark.stats.stats.median
        if first is not None:
            extra["first_call_s"] = first
            if extra["backend"] == "compile":
                extra["compile_s"] = max(first - median, 0.0)
        if measure_memory:
            args, _ = make_args()
            mb, how = peak_memory_mb(lambda: target(*args), device)
            extra["peak_mem_mb"] = mb
            if device == "cpu":
                self.config.stash[MEMORY_NOTE] = how
        return result

    def derived(self, *, op: str, mode: str, seconds: float, work: float, work_unit: str, note: str = "",
                **meta) -> None:
        """A row whose time per unit of work comes from a part of a timed run (e.g. the update phase of a training
        run, split out by its phase clock): `seconds` for `work` units, reported as the median time of one unit."""
        row = self.info(op=op, mode=mode, **meta)
        per_unit = seconds / work
        row.update(median_ms=per_unit * 1e3, mean_ms=per_unit * 1e3, rounds=1, rate=work / seconds,
                   rate_unit=work_unit, note=note, test=self.request.node.nodeid,
                   ratio_base=row.get("ratio_base", "eager"), headline=row.get("headline", False))
        if not self.smoke:
            self.config.stash[DERIVED].append(row)

    def not_run(self, reason: str, **meta) -> None:
        """Record a row that could not run (the reason goes into the results) and skip the test."""
        row = self.info(**meta)
        row["note"] = reason
        row["test"] = self.request.node.nodeid
        self.config.stash[NOT_RUN].append(row)
        pytest.skip(reason)


# --------------------------------------------------------------------------------------------------------------
# What the run was measured on.
# --------------------------------------------------------------------------------------------------------------
def _cpu_model() -> tuple[str, str, str]:
    """(model, model with cores and vector/bf16 units, the units as a file-name tier), from the package's own
    /proc/cpuinfo reader (the one behind --precision auto and result.json's host)."""
    model = cpuinfo_field("model name") or platform.processor() or platform.machine()
    flags = cpu_flags()
    if not flags:  # no /proc/cpuinfo (not Linux)
        return model, f"{model} ({os.cpu_count()} cores)", ""
    bf16 = [flag for flag in BF16_FLAGS if flag in flags]
    avx512 = ", AVX-512" if "avx512f" in flags else ""
    # VMs report bare names ("AMD EPYC") for different generations: the tier keeps their files apart
    tier = " ".join(bf16) or ("avx512" if avx512 else "")
    units = f", bf16: {' '.join(bf16)}" if bf16 else ", no bf16 hardware"
    # VMs name different CPU generations alike: the family/model numbers say which one timed the rows.
    generation = f"family {cpuinfo_field('cpu family') or '?'} model {cpuinfo_field('model') or '?'}, "
    return model, f"{model} ({generation}{os.cpu_count()} cores{avx512}{units})", tier


def device_name(device: str) -> str:
    return torch.cuda.get_device_name() if device == "cuda" else _cpu_model()[1]


def device_slug(device: str) -> str:
    if device == "cuda":
        name = torch.cuda.get_device_name()
    else:
        model, _, tier = _cpu_model()
        name = f"{model} {os.cpu_count()}c {tier}"
    return f"{device}-" + re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def versions() -> dict:
    try:
        import triton

        triton_version = triton.__version__
    except Exception:
        triton_version = "not installed"
    try:
        commit = subprocess.run(
            ["git", "-C", str(BENCH_DIR), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5
        ).stdout.strip()
    except Exception:
        commit = ""
    return {
        "torch": torch.__version__,
        "triton": triton_version,
        "python": platform.python_version(),
        "cuda": torch.version.cuda or "-",
        "commit": commit or "-",
    }
