"""Shared machinery of the benchmark suites: the shape/backend grid, agent construction per backend, a timing
helper around pytest-benchmark, peak-memory measurement, and a collector that turns the run into
benchmarks/results/<device>.csv and <device>.md with speed-up ratios.

Why ratios: the machines this runs on are shared and noisy, so absolute times drift run to run; a backend's
time divided by the plain-PyTorch reference's time *measured in the same run* is what stays comparable.
Timings are never asserted on.

Backends (a row's `backend` column):
  eager      the plain-PyTorch reference agent (TrainConfig(backend="reference")): the ratio base.
  compile    the same agent with its actor and critics wrapped by torch.compile (Inductor). The first call's
             extra time is reported separately as compile_s; the timed rounds exclude it.
  fused      TrainConfig(backend="fused"): dacer2.ops custom ops (C++ on CPU, Triton on CUDA). Rows appear
             automatically once dacer2.ops reports fused kernels for the device; otherwise one placeholder
             per suite and device is skipped with the reason.
  cudagraph  (CUDA only) the reference acting chain captured once in a CUDA graph and replayed.
  sklearn    (entropy only) scikit-learn's GaussianMixture per state, the algorithm's reference for the entropy
             estimate and therefore the ratio base there.

Suites that time with the plain `benchmark` fixture (test_bench_acting.py) are collected too: they report
through the `record(group, name, benchmark)` fixture below, or set benchmark.extra_info keys
(suite, op, mode, backend, device, S, A, T, B, threads, flops, headline) themselves.

Options: --bench-quick (small grid, for iterating), --bench-compile-all (compile rows on the full grid, not
just the training/acting shapes), --bench-budget SECONDS (timed time per row), --bench-results DIR,
--bench-no-save. With pytest-benchmark's --benchmark-disable (smoke mode, what CI runs) every row calls its
code once, torch.compile uses dynamo's "eager" backend (traces the same code without paying for Inductor's
code generation) and no result files are written.
"""

from __future__ import annotations

import csv
import ctypes
import ctypes.util
import dataclasses
import datetime as _dt
import math
import os
import platform
import re
import subprocess
import time
import types
from collections import OrderedDict
from pathlib import Path
from typing import Callable

import pytest
import torch

from dacer2.config import TrainConfig

BENCH_DIR = Path(__file__).resolve().parent

# Environment presets whose dimensions the grid uses: (env id, obs dim S, action dim A).
DIMS = OrderedDict(halfcheetah=("HalfCheetah-v5", 17, 6), humanoid=("Humanoid-v5", 348, 17))
FULL_GRID = dict(dims=tuple(DIMS), steps=(5, 20), batch=(1, 20, 256))
QUICK_GRID = dict(dims=("halfcheetah",), steps=(5,), batch=(1, 256))
# torch.compile costs 10-60 s per graph on this 2-core machine, so by default compile rows cover only the
# shapes training uses (DACER2's T = 5, batch 256; a suite may add batch 1 for acting through its bench_grid
# marker's compile_batch); --bench-compile-all adds the rest.
COMPILE_GRID = dict(dims=("halfcheetah",), steps=(5,), batch=(256,))
# Per-op CPU rows run on 1 torch thread: they compare kernels, and on a shared machine a 2-thread OpenMP region
# stalls whenever one of its threads is descheduled (measured here under load ~10: a T=20 chain fwd+bwd took
# 0.3 s on 1 thread and 1.5-11 s on 2). Whole-update and training rows use --bench-threads (default 2, the
# count docs/performance.md's update figures and CI use). Smoke runs (--benchmark-disable) use 1 thread throughout.
OP_THREADS = 1
BACKEND_ORDER = ("sklearn", "eager", "compile", "cudagraph", "fused")

_NOT_RUN = pytest.StashKey[list]()
_MEMORY_NOTE = pytest.StashKey[str]()


# --------------------------------------------------------------------------------------------------------------
# Options and grid.
# --------------------------------------------------------------------------------------------------------------
def pytest_addoption(parser):
    group = parser.getgroup("dacer2 benchmarks")
    group.addoption("--bench-quick", action="store_true", help="small shape grid (HalfCheetah dims, T=5, B=1/256)")
    group.addoption("--bench-compile-all", action="store_true", help="torch.compile rows on the full shape grid")
    group.addoption("--bench-threads", type=int, default=2, help="torch threads of the update and training rows")
    group.addoption("--bench-budget", type=float, default=0.25, help="seconds of timed rounds per row (default 0.25)")
    group.addoption("--bench-results", default=str(BENCH_DIR / "results"), help="where <device>.csv/.md go")
    group.addoption("--bench-no-save", action="store_true", help="print the summary but write no result files")


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "bench_grid(axes, backends, devices=('cpu','cuda'), fixed={}, threads=1|'option', compile_batch=(256,)): "
        "parametrize `case` over the benchmark grid; threads='option' runs CPU rows on --bench-threads threads",
    )
    config.stash[_NOT_RUN] = []


@dataclasses.dataclass(frozen=True)
class Case:
    """One row's coordinates. `skip` is set on placeholder cases that exist only to say why a backend or
    device has no rows here."""

    device: str
    backend: str
    dims: str = "halfcheetah"
    steps: int | None = None  # None: T is not a coordinate of this row (the agent uses its preset T = 5)
    batch: int = 256
    skip: str | None = None

    @property
    def env_id(self) -> str:
        return DIMS[self.dims][0]

    @property
    def obs_dim(self) -> int:
        return DIMS[self.dims][1]

    @property
    def action_dim(self) -> int:
        return DIMS[self.dims][2]

    @property
    def id(self) -> str:
        if self.skip:
            return f"{self.device}-{self.backend}-unavailable"
        steps = f"-T{self.steps}" if self.steps else ""
        return f"{self.device}-{self.backend}-{self.dims}{steps}-B{self.batch}"


_FUSED_REASON: dict[str, str | None] = {}


def fused_unavailable(device: str) -> str | None:
    """Why the fused backend cannot run on `device`, or None when it can. Checked once per device."""
    if device in _FUSED_REASON:
        return _FUSED_REASON[device]
    reason = None
    try:
        import dacer2.ops as dops
    except Exception as err:  # the package may be absent or half-built while kernels are developed
        reason = f"dacer2.ops is not importable ({type(err).__name__}: {err})"
    else:
        has = getattr(dops, "has_fused_kernels", None)
        if has is None:
            reason = "dacer2.ops has no has_fused_kernels(); cannot tell whether fused kernels exist"
        elif not has(device):
            what = "the C++ extension dacer2._C is not built" if device == "cpu" else "Triton kernels not registered"
            reason = f"no fused kernels for {device}: {what}"
        else:
            # dacer2.ops falls back to its reference twins where a kernel is missing, so also check that the
            # agent really resolves to the fused path.
            try:
                agent = build_agent(Case(device, "fused"), smoke=True)
                if getattr(agent, "backend", None) != "fused":
                    reason = f"TrainConfig(backend='fused') resolved to {getattr(agent, 'backend', '?')!r}"
            except Exception as err:
                reason = f"building a fused agent failed ({type(err).__name__}: {err})"
    _FUSED_REASON[device] = reason
    return reason


def _devices(requested) -> list[tuple[str, str | None]]:
    out = []
    for dev in requested:
        if dev == "cuda" and not torch.cuda.is_available():
            out.append((dev, "no CUDA device (torch.cuda.is_available() is False)"))
        else:
            out.append((dev, None))
    return out


def pytest_generate_tests(metafunc):
    if "case" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("bench_grid")
    if marker is None:
        raise pytest.UsageError(f"{metafunc.definition.nodeid} uses `case` without @pytest.mark.bench_grid")
    axes = marker.kwargs.get("axes", ())
    backends = marker.kwargs.get("backends", ("eager", "compile", "fused"))
    devices = marker.kwargs.get("devices", ("cpu", "cuda"))
    fixed = marker.kwargs.get("fixed", {})  # axis values pinned by the suite (e.g. batch=256 for the update)
    opts = metafunc.config.option
    grid = QUICK_GRID if opts.bench_quick else FULL_GRID
    limits = dict(COMPILE_GRID, batch=marker.kwargs.get("compile_batch", COMPILE_GRID["batch"]))
    compile_grid = grid if opts.bench_compile_all else {k: tuple(v for v in grid[k] if v in limits[k]) for k in grid}

    cases = []
    for device, no_device in _devices(devices):
        if no_device:
            cases.append(Case(device, "any", skip=no_device))
            continue
        for backend in backends:
            if backend == "cudagraph" and device != "cuda":
                continue  # a CUDA-only variant; on a CPU-only machine the cuda placeholder already explains
            if backend == "fused":
                reason = fused_unavailable(device)
                if reason:
                    cases.append(Case(device, backend, skip=reason))
                    continue
            g = compile_grid if backend == "compile" else grid
            values = {
                ax: (fixed[ax],) if ax in fixed else (g[ax] if ax in axes else (None,))
                for ax in ("dims", "steps", "batch")
            }
            for dims in values["dims"]:
                for steps in values["steps"]:
                    for batch in values["batch"]:
                        kw = {k: v for k, v in dict(dims=dims, steps=steps, batch=batch).items() if v is not None}
                        cases.append(Case(device, backend, **kw))
    metafunc.parametrize("case", cases, ids=[c.id for c in cases])


# --------------------------------------------------------------------------------------------------------------
# Agents per backend.
# --------------------------------------------------------------------------------------------------------------
def build_agent(case: Case, smoke: bool = False, **overrides):
    """A DACER2 agent for this row's dims/T on its device, computing through the row's backend."""
    from dacer2.agent import DACER2Agent

    config_backend = "fused" if case.backend == "fused" else "reference"
    cfg = TrainConfig(env_id=case.env_id, diffusion_steps=case.steps, backend=config_backend, seed=0, **overrides)
    torch.manual_seed(0)  # network init draws from the global generator
    agent = DACER2Agent(case.obs_dim, case.action_dim, cfg.resolved(), case.device)
    if case.backend == "compile":
        # Module-level compile: the agent's Python (chain loop, losses, optimizer) stays as in the reference and
        # every network call goes through Inductor. Compiling the whole chain was tried: torch.randn(generator=)
        # graph-breaks at every step, so it ends up as the same per-step graphs at a higher compile cost.
        # dynamic=False: one static-shape graph per shape, Inductor's best code (automatic dynamic shapes would
        # switch to slower symbolic-shape kernels as soon as a second batch size appears).
        kwargs = {"backend": "eager"} if smoke else {"dynamic": False}
        for module in (agent.actor, agent.critic, agent.critic_target):
            module.compile(**kwargs)
    return agent


def random_batch(case: Case, batch: int | None = None, seed: int = 1):
    """A replay-like batch: actions in the box, a few terminal transitions."""
    from dacer2.agent import Batch

    n = batch or case.batch
    g = torch.Generator().manual_seed(seed)

    def dev(x):
        return x.to(case.device)

    return Batch(
        obs=dev(torch.randn(n, case.obs_dim, generator=g)),
        action=dev(torch.rand(n, case.action_dim, generator=g) * 2 - 1),
        reward=dev(torch.randn(n, generator=g)),
        next_obs=dev(torch.randn(n, case.obs_dim, generator=g)),
        terminated=dev((torch.rand(n, generator=g) < 0.02).float()),
    )


# --------------------------------------------------------------------------------------------------------------
# FLOPs, counted analytically: 2 x matmul multiply-adds; elementwise work (mish, Adam, clips) is not counted.
# docs/performance.md derives these; test_bench_update.py checks update_flops against torch's own counts.
# --------------------------------------------------------------------------------------------------------------
def _mlp_macs(sizes) -> int:
    return sum(i * o for i, o in zip(sizes[:-1], sizes[1:]))


def flop_terms(S: int, A: int, actor_hidden=(256, 256, 256), critic_hidden=(256, 256, 256), time_dim=16):
    """Multiply-adds per row: eps_theta (Pa), one critic (Pc), the critic's first layer (Pc1), and half of the
    time-embedding MLP per step (h: its two layers, 16x32 and 32x16, are the same size)."""
    Pa = _mlp_macs((S + A + time_dim, *actor_hidden, A))
    Pc = _mlp_macs((S + A, *critic_hidden, 2))
    Pc1 = (S + A) * critic_hidden[0]
    h = time_dim * 2 * time_dim
    return Pa, Pc, Pc1, h


def _emb_flops(T: int, h: int) -> tuple[int, int]:
    # Forward of both embedding layers on T rows; backward = time_out input + weight gradients, time_in weight
    # gradient only (its input is the fixed sinusoidal code).
    return 2 * T * 2 * h, 2 * T * 3 * h


def op_flops(op: str, mode: str, S: int, A: int, T: int, B: int) -> float:
    """Matmul FLOPs of one call of a benchmarked op (reference algorithm)."""
    Pa, Pc, Pc1, h = flop_terms(S, A)
    emb_f, emb_b = _emb_flops(T, h)
    if op == "chain":
        fwd = 2 * Pa * T * B + emb_f
        bwd = 4 * Pa * T * B + emb_b  # the actor's first-layer input carries the chain state: input + weight grads
        return float({"sample": fwd, "fwd": fwd, "bwd": bwd, "fwd+bwd": fwd + bwd}[mode])
    if op == "critic":  # twin critic training pass: weight gradients, none into the replay inputs
        fwd = 4 * Pc * B
        bwd = 4 * Pc * B + 4 * (Pc - Pc1) * B
        return float({"fwd": fwd, "bwd": bwd, "fwd+bwd": fwd + bwd}[mode])
    if op == "critic_action_grad":  # q and dq/da through frozen weights
        return float(8 * Pc * B)
    if op == "policy_loss":  # chain + L_q + L_g (eta > 0, stop-gradient), as in update_flops
        fwd = emb_f + 2 * Pa * T * B + 4 * Pc * B + 8 * Pc * T * B + emb_f + 2 * Pa * T * B
        bwd = emb_b + 4 * Pa * T * B + 4 * Pc * B + emb_b + 4 * Pa * T * B
        return float({"fwd": fwd, "bwd": bwd, "fwd+bwd": fwd + bwd}[mode])
    raise KeyError(op)


def update_flops(S: int, A: int, T: int, B: int, eta_on: bool = True) -> float:
    """One DACER2Agent.update including the policy step (delay 1), L_g with stop-gradient, no entropy re-estimate."""
    Pa, Pc, Pc1, h = flop_terms(S, A)
    emb_f, emb_b = _emb_flops(T, h)
    total = emb_f + 2 * Pa * T * B + 4 * Pc * B  # critic targets: no-grad chain on s', target twin on (s', a')
    total += 4 * Pc * B + 4 * Pc * B + 4 * (Pc - Pc1) * B  # twin critic forward + backward
    total += emb_f + emb_b + 6 * Pa * T * B  # policy chain forward + backward through all T steps
    total += 8 * Pc * B  # L_q: min-Q of the executed action and its gradient to the action
    if eta_on:
        total += 8 * Pc * T * B  # L_g: Q and its action-gradient at all T visited states
        total += emb_f + emb_b + 6 * Pa * T * B  # eps_theta(s, sg(x_t), t) forward + backward
    return float(total)


# --------------------------------------------------------------------------------------------------------------
# Peak memory.
# --------------------------------------------------------------------------------------------------------------
_M_MMAP_THRESHOLD = -3
_libc = None


def _glibc():
    global _libc
    if _libc is None:
        try:
            lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            lib.mallopt  # noqa: B018  (AttributeError off glibc)
            _libc = lib
        except (OSError, AttributeError):
            _libc = False
    return _libc or None


def _status_kb(key: str) -> int:
    with open("/proc/self/status") as f:
        return int(re.search(rf"^{key}:\s+(\d+)", f.read(), re.M).group(1))


def peak_memory_mb(fn: Callable[[], object], device: str) -> tuple[float | None, str]:
    """Extra memory at the peak of one call of fn over what was in use just before it, in MiB.

    CUDA: torch.cuda.max_memory_allocated (tensor memory only). CPU: peak RSS (VmHWM, reset through
    /proc/self/clear_refs). glibc would serve the call from heap memory the timed rounds left resident, which
    RSS never sees, so the heap is trimmed first and, for the measured call, the mmap threshold is pinned low
    so every tensor-sized block is a fresh mapping that shows up in RSS (then set to glibc's default maximum).
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
    libc = _glibc()
    if libc:
        # Return the heap's free pages first: blocks the timed rounds left in glibc's bins are resident, and
        # reusing them would not show up in RSS at all.
        libc.malloc_trim(0)
        libc.mallopt(_M_MMAP_THRESHOLD, 64 * 1024)
    try:
        before = _status_kb("VmRSS")
        fn()
        peak = _status_kb("VmHWM")
    finally:
        if libc:
            libc.mallopt(_M_MMAP_THRESHOLD, 32 * 2**20)
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

    # Helpers the suites use through this fixture (test modules cannot import conftest under importlib mode).
    def agent(self, **overrides):
        return build_agent(self.case, smoke=self.smoke, **overrides)

    def batch(self, n: int | None = None, seed: int = 1):
        return random_batch(self.case, n, seed)

    def flops(self, op: str, mode: str) -> float:
        c = self.case
        return op_flops(op, mode, c.obs_dim, c.action_dim, c.steps or 0, c.batch)

    def update_flops(self, *args, **kwargs) -> float:
        return update_flops(*args, **kwargs)

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
                self.config.stash[_MEMORY_NOTE] = how
        return result

    def not_run(self, reason: str, **meta) -> None:
        """Record a row that could not run (the reason goes into the results) and skip the test."""
        row = self.info(**meta)
        row["note"] = reason
        row["test"] = self.request.node.nodeid
        self.config.stash[_NOT_RUN].append(row)
        pytest.skip(reason)


@pytest.fixture
def bench(request):
    case = request.getfixturevalue("case") if "case" in request.fixturenames else None
    if case is not None and case.skip:
        pytest.skip(case.skip)
    # Requested only now: pytest-benchmark warns about a benchmark fixture that a skipped placeholder never used.
    benchmark = request.getfixturevalue("benchmark")
    previous = torch.get_num_threads()
    marker = request.node.get_closest_marker("bench_grid")
    threads = marker.kwargs.get("threads", OP_THREADS) if marker else OP_THREADS
    if threads == "option":
        threads = request.config.option.bench_threads
    if benchmark.disabled:
        threads = 1  # smoke: nothing is measured, and 1 thread is the fastest way through on a busy machine
    torch.set_num_threads(threads)
    yield Bench(benchmark, request, case)
    torch.set_num_threads(previous)


@pytest.fixture
def smoke(request) -> bool:
    """True under --benchmark-disable (CI's smoke run)."""
    return bool(request.config.getoption("benchmark_disable"))


@pytest.fixture
def flop_model():
    """The analytic FLOP formulas, for tests that check them."""
    return types.SimpleNamespace(update_flops=update_flops, op_flops=op_flops, flop_terms=flop_terms)


@pytest.fixture
def record():
    """record(group, name, benchmark) after benchmark(...) ran, for suites that time with the plain `benchmark`
    fixture (test_bench_acting.py): tags the row so the summary can file it. `name` is the backend
    ("reference" is the eager reference); `group` names the measurement, e.g. "act B=1 explore"."""

    def _record(group, name, benchmark):
        info = benchmark.extra_info
        info.setdefault("op", group)
        info.setdefault("mode", "")
        info.setdefault("backend", "eager" if name == "reference" else name)
        info.setdefault("device", "cpu")
        info.setdefault("threads", torch.get_num_threads())
        info.setdefault("headline", True)
        m = re.search(r"\bB=(\d+)", group)
        if m:
            info.setdefault("B", int(m.group(1)))

    return _record


# --------------------------------------------------------------------------------------------------------------
# Summary: CSV + markdown per device.
# --------------------------------------------------------------------------------------------------------------
def _cpu_model() -> tuple[str, str]:
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
        model = re.search(r"^model name\s*:\s*(.+)$", text, re.M).group(1).strip()
        avx512 = ", AVX-512" if re.search(r"\bavx512f\b", text) else ""
    except (OSError, AttributeError):
        model, avx512 = platform.processor() or platform.machine(), ""
    return model, f"{model} ({os.cpu_count()} cores{avx512})"


def device_name(device: str) -> str:
    return torch.cuda.get_device_name() if device == "cuda" else _cpu_model()[1]


def device_slug(device: str) -> str:
    name = torch.cuda.get_device_name() if device == "cuda" else f"{_cpu_model()[0]} {os.cpu_count()}c"
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


CSV_FIELDS = [
    "date", "device", "device_name", "torch", "triton", "python", "cuda", "commit", "suite", "op", "mode", "backend", "S", "A", "T",
    "B", "threads", "rounds", "median_ms", "mean_ms", "min_ms", "iqr_ms", "speedup", "ratio_base", "compile_s",
    "peak_mem_mb", "gflops", "rate", "rate_unit", "headline", "note", "test",
]

_KEY = ("device", "suite", "op", "mode", "S", "A", "T", "B", "threads")


def collect_rows(config) -> list[dict]:
    session = getattr(config, "_benchmarksession", None)
    rows = []
    for bench in getattr(session, "benchmarks", None) or []:
        if not bench:  # no stats: disabled or errored
            continue
        s = bench.stats
        info = dict(bench.extra_info or {})
        params = bench.params or {}
        # Rows from suites that do not use the `bench` helper get their coordinates from extra_info where set,
        # else from their parameters and names.
        row = {
            "suite": info.get("suite") or Path(bench.fullname.split("::")[0]).stem.removeprefix("test_bench_"),
            "op": info.get("op") or bench.name.split("[")[0].removeprefix("test_"),
            "mode": info.get("mode", params.get("mode", "")),
            "backend": info.get("backend", params.get("backend", "eager")),
            "device": info.get("device", params.get("device", "cpu")),
            "threads": info.get("threads", params.get("threads", "")),
            "test": bench.fullname,
        }
        for k, alt in (("S", "S"), ("A", "A"), ("T", "steps"), ("B", "batch")):
            row[k] = info.get(k, params.get(k, params.get(alt, "")))
        scale = float(info.get("time_scale", 1.0))  # rows timed on a subset and scaled up (sklearn)
        row.update(
            rounds=s.rounds,
            median_ms=s.median * scale * 1e3,
            mean_ms=s.mean * scale * 1e3,
            min_ms=s.min * scale * 1e3,
            iqr_ms=s.iqr * scale * 1e3,
            ratio_base=info.get("ratio_base", "eager"),
            compile_s=info.get("compile_s"),
            peak_mem_mb=info.get("peak_mem_mb"),
            note=info.get("note", ""),
            headline=info.get("headline", False),
        )
        flops = info.get("flops")
        row["gflops"] = flops / (s.median * scale) / 1e9 if flops else None
        if info.get("work"):  # e.g. env steps per call -> steps/s
            row["rate"] = info["work"] / (s.median * scale)
            row["rate_unit"] = info.get("work_unit", "")
        rows.append(row)
    for extra in config.stash.get(_NOT_RUN, []):
        rows.append({"median_ms": None, "ratio_base": "eager", **extra})
    # Speed-up = the base backend's median / this row's median, at the same coordinates in the same run.
    medians = {(tuple(r.get(k) for k in _KEY), r["backend"]): r.get("median_ms") for r in rows}
    for r in rows:
        base = medians.get((tuple(r.get(k) for k in _KEY), r["ratio_base"]))
        r["speedup"] = base / r["median_ms"] if base and r.get("median_ms") else None
    return rows


def _fmt(v, digits=3) -> str:
    if v is None or v == "":
        return ""
    if isinstance(v, float):
        if math.isnan(v):
            return ""
        if abs(v) >= 100:
            return f"{v:.0f}"
        return f"{v:.{digits}g}"
    return str(v)


def _shape(r) -> str:
    parts = []
    if r.get("S") not in (None, ""):
        parts.append(f"{r['S']}/{r['A']}")
    if r.get("T") not in (None, ""):
        parts.append(f"T={r['T']}")
    if r.get("B") not in (None, ""):
        parts.append(f"B={r['B']}")
    return " ".join(parts)


def pivot_table(rows: list[dict]) -> list[str]:
    """One line per coordinate tuple, one column per backend: median ms (speed-up vs the base)."""
    backends = [b for b in BACKEND_ORDER if any(r["backend"] == b for r in rows)]
    backends += sorted({r["backend"] for r in rows} - set(backends))
    has_compile = any(r.get("compile_s") is not None for r in rows)
    has_flops = any(r.get("gflops") for r in rows)
    has_rate = any(r.get("rate") for r in rows)
    has_mem = any(r.get("peak_mem_mb") is not None for r in rows)
    head = ["op", "mode", "S/A T B", "thr"] + [f"{b} ms (x)" for b in backends]
    if has_flops:
        head += [f"{b} GFLOP/s" for b in backends]
    if has_rate:
        head += [f"{b} rate" for b in backends]
    if has_compile:
        head.append("compile s")
    if has_mem:
        head += [f"{b} peak MB" for b in backends]
    groups: OrderedDict = OrderedDict()
    for r in rows:
        groups.setdefault((r["op"], r["mode"], _shape(r), r.get("threads")), {})[r["backend"]] = r
    body = []
    for (op, mode, shape, thr), by in groups.items():
        cells = [op, mode, shape, _fmt(thr)]
        for b in backends:
            r = by.get(b)
            if r is None:
                cells.append("")
            elif r.get("median_ms") is None:
                cells.append("n/a")
            else:
                sp = r.get("speedup")
                cells.append(f"{_fmt(r['median_ms'])} ({_fmt(sp, 2)}x)" if sp else _fmt(r["median_ms"]))
        if has_flops:
            cells += [_fmt(by[b].get("gflops")) if b in by else "" for b in backends]
        if has_rate:
            cells += [
                f"{_fmt(by[b]['rate'])} {by[b].get('rate_unit', '')}".strip() if b in by and by[b].get("rate") else ""
                for b in backends
            ]
        if has_compile:
            cells.append(_fmt(by["compile"].get("compile_s")) if "compile" in by else "")
        if has_mem:
            cells += [_fmt(by[b].get("peak_mem_mb")) if b in by else "" for b in backends]
        body.append(cells)
    # Drop columns that no row fills (e.g. GFLOP/s of a backend without FLOP counts).
    keep = [i for i in range(len(head)) if i < 4 + len(backends) or any(row[i] for row in body)]
    lines = ["| " + " | ".join(head[i] for i in keep) + " |", "|" + "---|" * len(keep)]
    lines += ["| " + " | ".join(row[i] for i in keep) + " |" for row in body]
    return lines


def render_markdown(rows: list[dict], meta: dict, memory_note: str) -> str:
    out = [
        f"# dacer2 benchmarks: {meta['device_name']}",
        "",
        f"{meta['date']}; torch {meta['torch']}, Triton {meta['triton']}, Python {meta['python']}, "
        f"CUDA {meta['cuda']}, commit {meta['commit']}.",
        "",
        "Times are medians in ms; (Nx) is the speed-up over the ratio base measured in the same run "
        "(the plain-PyTorch eager reference; scikit-learn for gmm_fit). thr = torch threads. compile s = extra "
        f"time of the first call under torch.compile. Peak MB = {memory_note} of one call. "
        "GFLOP/s counts the reference algorithm's matmul FLOPs (docs/performance.md).",
        "",
    ]
    headline = [r for r in rows if r.get("headline")]
    if headline:
        out += ["## Headline", ""] + pivot_table(headline) + [""]
    for suite in OrderedDict.fromkeys(r["suite"] for r in rows):
        out += [f"## {suite}", ""] + pivot_table([r for r in rows if r["suite"] == suite]) + [""]
    notes = OrderedDict.fromkeys(
        f"{r['suite']} / {r['backend']}: {r['note']}" for r in rows if r.get("median_ms") is None and r.get("note")
    )
    if notes:
        out += ["## Not measured", ""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(out)


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter, exitstatus, config):
    rows = collect_rows(config)
    if not any(r.get("median_ms") is not None for r in rows):
        return  # smoke mode (--benchmark-disable) or nothing ran: never overwrite real results
    meta_common = dict(date=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), **versions())
    for device in OrderedDict.fromkeys(r["device"] for r in rows):
        dev_rows = [r for r in rows if r["device"] == device]
        if not any(r.get("median_ms") is not None for r in dev_rows):
            continue
        meta = dict(meta_common, slug=device_slug(device), device_name=device_name(device))
        memory_note = config.stash.get(_MEMORY_NOTE, "peak RSS delta") if device == "cpu" else "cuda max_memory_allocated delta"
        md = render_markdown(dev_rows, meta, memory_note)
        terminalreporter.write_sep("=", f"dacer2 benchmarks: {meta['device_name']}")
        # The terminal gets the headline table and the update's GFLOP/s; the files get every row.
        headline = [r for r in dev_rows if r.get("headline")]
        for line in pivot_table(headline) if headline else []:
            terminalreporter.write_line(line)
        for r in dev_rows:
            if r["suite"] == "update" and r.get("gflops"):
                terminalreporter.write_line(
                    f"{r['op']:14s} {r['backend']:8s} {_shape(r):18s} {_fmt(r['threads']):>2s} thr "
                    f"{r['median_ms']:9.2f} ms {r['gflops']:7.1f} GFLOP/s"
                )
        if config.option.bench_no_save:
            continue
        results = Path(config.option.bench_results)
        results.mkdir(parents=True, exist_ok=True)
        csv_path, md_path = results / f"{meta['slug']}.csv", results / f"{meta['slug']}.md"
        with open(csv_path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
            writer.writeheader()
            for r in dev_rows:
                writer.writerow({k: _fmt(v, 6) if isinstance(v, float) else v for k, v in {**meta, **r}.items()})
        md_path.write_text(md + "\n")
        terminalreporter.write_line(f"wrote {csv_path} and {md_path}")
