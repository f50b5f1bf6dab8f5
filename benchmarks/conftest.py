"""pytest wiring of the benchmark suites: options, the `bench_grid` marker's parametrization, the fixtures the
suites use, and the hook that prints and saves the summary. What is measured and how lives in the modules
beside this file: grid.py (shape/backend grid, rows' agents), measure.py (timing, peak memory, machine),
flops.py (analytic FLOP model), report.py (rows, tables, CSV/Markdown).

Suites that time with the plain `benchmark` fixture (test_bench_acting.py) are collected too: they report
through the `record(group, name, benchmark)` fixture below, or set benchmark.extra_info keys
(suite, op, mode, backend, device, S, A, T, B, threads, flops, headline) themselves.

Options: --bench-quick (small grid, for iterating), --bench-compile-all (compile rows on the full grid, not
just the training/acting shapes), --bench-threads N (threads of the update and training rows), --bench-budget
SECONDS (timed time per row), --bench-results DIR, --bench-no-save. With pytest-benchmark's
--benchmark-disable (smoke mode, what CI runs) every row calls its code once, torch.compile uses dynamo's
"eager" backend (traces the same code without paying for Inductor's code generation) and no result files are
written.
"""

from __future__ import annotations

import datetime as _dt
import re
import sys
from collections import OrderedDict
from pathlib import Path

import pytest
import torch

BENCH_DIR = Path(__file__).resolve().parent
# --import-mode=importlib (pyproject.toml) puts no test directory on sys.path; the suites and this file import
# the modules beside them by their plain names, as summarize.py does when run as a script.
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))

from grid import OP_THREADS, grid_cases  # noqa: E402
from measure import DERIVED, MEMORY_NOTE, NOT_RUN, Bench, device_name, device_slug, versions  # noqa: E402
from dacer2.train.host_memory import keep_freed_memory  # noqa: E402
from report import collect_rows, memory_note, render_markdown, terminal_lines, write_results  # noqa: E402


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
    config.stash[NOT_RUN] = []
    config.stash[DERIVED] = []
    # Every row runs with the allocator setting that training runs with (test_bench_host_memory.py compares).
    keep_freed_memory()


def pytest_generate_tests(metafunc):
    if "case" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("bench_grid")
    if marker is None:
        raise pytest.UsageError(f"{metafunc.definition.nodeid} uses `case` without @pytest.mark.bench_grid")
    keys = ("axes", "backends", "devices", "fixed", "compile_batch")
    grid_kwargs = {k: marker.kwargs[k] for k in keys if k in marker.kwargs}
    opts = metafunc.config.option
    cases = grid_cases(**grid_kwargs, quick=opts.bench_quick, compile_all=opts.bench_compile_all)
    metafunc.parametrize("case", cases, ids=[c.id for c in cases])


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


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter, exitstatus, config):
    session = getattr(config, "_benchmarksession", None)
    extra_rows = config.stash.get(NOT_RUN, []) + config.stash.get(DERIVED, [])  # derived rows carry their times
    rows = collect_rows(getattr(session, "benchmarks", None), extra_rows)
    if not any(r.get("median_ms") is not None for r in rows):
        return  # smoke mode (--benchmark-disable) or nothing ran: never overwrite real results
    meta_common = dict(date=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), **versions())
    for device in OrderedDict.fromkeys(r["device"] for r in rows):
        dev_rows = [r for r in rows if r["device"] == device]
        if not any(r.get("median_ms") is not None for r in dev_rows):
            continue
        meta = dict(meta_common, slug=device_slug(device), device_name=device_name(device))
        note = memory_note(device, config.stash.get(MEMORY_NOTE, "peak RSS delta"))
        md = render_markdown(dev_rows, meta, note)
        terminalreporter.write_sep("=", f"dacer2 benchmarks: {meta['device_name']}")
        for line in terminal_lines(dev_rows):
            terminalreporter.write_line(line)
        if config.option.bench_no_save:
            continue
        results = Path(config.option.bench_results)
        results.mkdir(parents=True, exist_ok=True)
        csv_path, md_path = results / f"{meta['slug']}.csv", results / f"{meta['slug']}.md"
        write_results(csv_path, md_path, [{**meta, **r} for r in dev_rows], md)
        terminalreporter.write_line(f"wrote {csv_path} and {md_path}")
