"""Re-render the markdown table from benchmark CSVs, merging several runs.

    python benchmarks/summarize.py benchmarks/results/cpu-amd-epyc-2c.csv [more.csv ...] [--out PREFIX]

`pytest benchmarks/` already writes <device>.csv and <device>.md itself, through the same report.py this
script renders with. This script is for combining runs: e.g. re-running one suite
(`pytest benchmarks/test_bench_update.py --bench-results /tmp/x`) and folding it into the full table. Rows are
keyed by test id; a later file's row replaces an earlier one, and --drop-suite removes a suite's rows from the
files before it (for suites whose tests were renamed). Speed-ups are recomputed from the merged medians, so only
merge runs you are willing to compare.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from report import add_speedups, memory_note, render_markdown, write_results

INT_FIELDS = ("S", "A", "T", "B", "threads", "rounds")
FLOAT_FIELDS = ("median_ms", "mean_ms", "min_ms", "iqr_ms", "speedup", "compile_s", "peak_mem_mb", "gflops", "rate")


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

    merged: dict[str, dict] = {}
    for i, path in enumerate(args.csv):
        rows = read_rows(path)
        if i > 0 and args.drop_suite:
            merged = {k: r for k, r in merged.items() if r["suite"] not in args.drop_suite}
        for r in rows:
            merged[r["test"] or f"{path}:{len(merged)}"] = r
    rows = list(merged.values())
    add_speedups(rows)  # across the merged rows: a suite re-run has a new base

    first = rows[0]
    dates = sorted({r["date"] for r in rows})
    meta = dict(
        date=dates[-1] if len(dates) == 1 else f"{dates[0]} to {dates[-1]} (merged runs)",
        torch=first["torch"], triton=first["triton"], commit=first["commit"], device_name=first["device_name"],
        python=first.get("python") or "-", cuda=first.get("cuda") or "-",
    )
    md = render_markdown(rows, meta, memory_note(first["device"]))
    prefix = args.out or args.csv[0].with_suffix("")
    write_results(prefix.with_suffix(".csv"), prefix.with_suffix(".md"), rows, md)
    print(f"wrote {prefix.with_suffix('.csv')} and {prefix.with_suffix('.md')} ({len(rows)} rows)")


if __name__ == "__main__":
    main()
