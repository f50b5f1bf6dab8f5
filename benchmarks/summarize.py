"""Re-render the markdown table from benchmark CSVs, merging several runs.

    python benchmarks/summarize.py benchmarks/results/cpu-amd-epyc-2c.csv [more.csv ...] [--out PREFIX]

`pytest benchmarks/` already writes <device>.csv and <device>.md itself (benchmarks/conftest.py). This script is
for combining runs: e.g. re-running one suite (`pytest benchmarks/test_bench_update.py --bench-results /tmp/x`)
and folding it into the full table. Rows are keyed by test id; a later file's row replaces an earlier one, and
--drop-suite removes a suite's rows from the files before it (for suites whose tests were renamed). Speed-ups
are recomputed from the merged medians, so only merge runs you are willing to compare.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
INT_FIELDS = ("S", "A", "T", "B", "threads", "rounds")
FLOAT_FIELDS = ("median_ms", "mean_ms", "min_ms", "iqr_ms", "speedup", "compile_s", "peak_mem_mb", "gflops", "rate")


def _conftest():
    # The table code lives in conftest.py (pytest's hook writes the same tables); load it as a plain module.
    spec = importlib.util.spec_from_file_location("dacer2_bench_conftest", HERE / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


def read_rows(path: Path) -> list[dict]:
    rows = []
    with open(path, newline="") as f:
        for raw in csv.DictReader(f):
            row = dict(raw)
            for k in INT_FIELDS:
                row[k] = int(row[k]) if row.get(k) not in (None, "") else None
            for k in FLOAT_FIELDS:
                row[k] = float(row[k]) if row.get(k) not in (None, "") else None
            row["headline"] = str(row.get("headline", "")).lower() == "true"
            rows.append(row)
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("csv", nargs="+", type=Path)
    parser.add_argument("--drop-suite", action="append", default=[], help="drop this suite's rows from earlier files")
    parser.add_argument("--out", type=Path, help="output prefix (default: the first CSV's, overwritten)")
    args = parser.parse_args(argv)
    conf = _conftest()

    merged: dict[str, dict] = {}
    for i, path in enumerate(args.csv):
        rows = read_rows(path)
        if i > 0 and args.drop_suite:
            merged = {k: r for k, r in merged.items() if r["suite"] not in args.drop_suite}
        for r in rows:
            merged[r["test"] or f"{path}:{len(merged)}"] = r
    rows = list(merged.values())
    # Recompute speed-ups across the merged rows (a suite re-run has a new base).
    key = conf._KEY
    medians = {(tuple(r.get(k) for k in key), r["backend"]): r.get("median_ms") for r in rows}
    for r in rows:
        base = medians.get((tuple(r.get(k) for k in key), r["ratio_base"]))
        r["speedup"] = base / r["median_ms"] if base and r.get("median_ms") else None

    first = rows[0]
    dates = sorted({r["date"] for r in rows})
    meta = dict(
        date=dates[-1] if len(dates) == 1 else f"{dates[0]} to {dates[-1]} (merged runs)",
        torch=first["torch"], triton=first["triton"], commit=first["commit"], device_name=first["device_name"],
        python=first.get("python") or "-", cuda=first.get("cuda") or "-",
    )
    memory_note = "cuda max_memory_allocated delta" if first["device"] == "cuda" else "peak RSS delta"
    md = conf.render_markdown(rows, meta, memory_note)
    prefix = args.out or args.csv[0].with_suffix("")
    with open(prefix.with_suffix(".csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=conf.CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for r in rows:
            writer.writerow({k: conf._fmt(v, 6) if isinstance(v, float) else v for k, v in r.items()})
    prefix.with_suffix(".md").write_text(md + "\n")
    print(f"wrote {prefix.with_suffix('.csv')} and {prefix.with_suffix('.md')} ({len(rows)} rows)")


if __name__ == "__main__":
    main()
