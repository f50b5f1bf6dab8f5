"""Benchmark rows and their tables: rows from pytest-benchmark's records, speed-up ratios, the headline and
per-suite Markdown tables, and the <device>.csv / <device>.md files.

Why ratios: the machines this runs on are shared and noisy, so absolute times drift run to run; a backend's
time divided by the plain-PyTorch reference's time *measured in the same run* is what stays comparable.

The pytest hook (conftest.py) and summarize.py (merging CSVs of several runs) both render through here, so a
re-rendered table is the same as the one a run wrote. No torch import: summarize.py needs none.
"""

from __future__ import annotations

import csv
import math
from collections import OrderedDict
from pathlib import Path

BACKEND_ORDER = ("sklearn", "eager", "compile", "cudagraph", "fused", "graphed")

CSV_FIELDS = [
    "date", "device", "device_name", "torch", "triton", "python", "cuda", "commit", "suite", "op", "mode", "backend", "S", "A", "T",
    "B", "threads", "rounds", "median_ms", "mean_ms", "min_ms", "iqr_ms", "speedup", "ratio_base", "compile_s",
    "peak_mem_mb", "gflops", "rate", "rate_unit", "headline", "note", "test",
]

# Rows with equal values here are the same measurement on different backends: the speed-up compares them.
RATIO_KEY = ("device", "suite", "op", "mode", "S", "A", "T", "B", "threads")


def collect_rows(benchmarks, not_run=()) -> list[dict]:
    """Rows from pytest-benchmark's records (its session's `benchmarks`) plus `not_run`: the rows that could not
    run (no median) and rows derived from parts of a timed run (which bring their own median_ms and rate)."""
    rows = []
    for bench in benchmarks or []:
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
    for extra in not_run:
        rows.append({"median_ms": None, "ratio_base": "eager", **extra})
    add_speedups(rows)
    return rows


def add_speedups(rows: list[dict]) -> None:
    """Speed-up = the base backend's median / this row's median, at the same coordinates among `rows`."""
    medians = {(tuple(r.get(k) for k in RATIO_KEY), r["backend"]): r.get("median_ms") for r in rows}
    for r in rows:
        base = medians.get((tuple(r.get(k) for k in RATIO_KEY), r["ratio_base"]))
        r["speedup"] = base / r["median_ms"] if base and r.get("median_ms") else None


def memory_note(device: str, cpu_note: str = "peak RSS delta") -> str:
    """What the peak-memory column measured on `device` (the CPU's depends on how measure.py could read it)."""
    return "cuda max_memory_allocated delta" if device == "cuda" else cpu_note


def fmt(v, digits=3) -> str:
    if v is None or v == "":
        return ""
    if isinstance(v, float):
        if math.isnan(v):
            return ""
        if abs(v) >= 100:
            return f"{v:.0f}"
        return f"{v:.{digits}g}"
    return str(v)


def shape(r) -> str:
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
        groups.setdefault((r["op"], r["mode"], shape(r), r.get("threads")), {})[r["backend"]] = r
    body = []
    for (op, mode, shp, thr), by in groups.items():
        cells = [op, mode, shp, fmt(thr)]
        for b in backends:
            r = by.get(b)
            if r is None:
                cells.append("")
            elif r.get("median_ms") is None:
                cells.append("n/a")
            else:
                sp = r.get("speedup")
                cells.append(f"{fmt(r['median_ms'])} ({fmt(sp, 2)}x)" if sp else fmt(r["median_ms"]))
        if has_flops:
            cells += [fmt(by[b].get("gflops")) if b in by else "" for b in backends]
        if has_rate:
            cells += [
                f"{fmt(by[b]['rate'])} {by[b].get('rate_unit', '')}".strip() if b in by and by[b].get("rate") else ""
                for b in backends
            ]
        if has_compile:
            cells.append(fmt(by["compile"].get("compile_s")) if "compile" in by else "")
        if has_mem:
            cells += [fmt(by[b].get("peak_mem_mb")) if b in by else "" for b in backends]
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


def terminal_lines(rows: list[dict]) -> list[str]:
    """What a run prints: the headline table and the update's GFLOP/s (the files get every row)."""
    headline = [r for r in rows if r.get("headline")]
    lines = pivot_table(headline) if headline else []
    for r in rows:
        if r["suite"] == "update" and r.get("gflops"):
            lines.append(
                f"{r['op']:14s} {r['backend']:8s} {shape(r):18s} {fmt(r['threads']):>2s} thr "
                f"{r['median_ms']:9.2f} ms {r['gflops']:7.1f} GFLOP/s"
            )
    return lines


def write_results(csv_path: Path, md_path: Path, rows: list[dict], markdown: str) -> None:
    """The CSV (every row with its spread, rounds and test id; floats to 6 digits) and the Markdown tables."""
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for r in rows:
            writer.writerow({k: fmt(v, 6) if isinstance(v, float) else v for k, v in r.items()})
    Path(md_path).write_text(markdown + "\n")
