"""Summarize the simulate jobs' benchmark files into the run-time numbers docs/performance.md quotes.

    python workflow/scripts/runtimes.py results/quick/benchmarks/simulate [--cores 2]

Each simulate job leaves `<results>/<name>/benchmarks/simulate/<cell>.tsv` (Snakemake's `benchmark:`:
wall seconds `s`, peak memory `max_rss` in MB, `cpu_time` in seconds).  Prints the number of cells,
the total, median and largest wall time of one cell, the CPU time, the peak memory, and the wall time
the simulations alone need on N cores (the total divided by N: a lower bound, since cells do not split).
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
from pathlib import Path


def read_benchmarks(folder: Path) -> list[dict[str, float]]:
    rows = []
    for path in sorted(folder.glob("*.tsv")):
        with path.open(newline="") as handle:
            records = list(csv.DictReader(handle, delimiter="\t"))
        if not records:
            raise ValueError(f"benchmark file '{path}' holds no measurement")
        record = records[-1]  # one row per repeat; the pipeline runs each job once
        try:
            rows.append({"s": float(record["s"]), "cpu_time": float(record["cpu_time"]),
                         "max_rss": float(record["max_rss"]) if record["max_rss"] not in ("", "NA") else 0.0})
        except (KeyError, ValueError) as exc:
            raise ValueError(f"benchmark file '{path}' is not a Snakemake benchmark table: {exc}") from None
    return rows


def summary(rows: list[dict[str, float]], cores: int) -> str:
    walls = [r["s"] for r in rows]
    total = sum(walls)
    return "\n".join([
        f"cells: {len(rows)}",
        f"wall time of all cells, one after another: {total:.1f} s ({total / 60:.1f} min)",
        f"per cell: median {statistics.median(walls):.1f} s, largest {max(walls):.1f} s",
        f"CPU time: {sum(r['cpu_time'] for r in rows):.1f} s",
        f"peak memory of one cell: {max(r['max_rss'] for r in rows):.0f} MB",
        f"simulations on {cores} cores: at least {total / cores:.1f} s ({total / cores / 60:.1f} min)",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="a benchmarks/simulate folder of the pipeline's results")
    parser.add_argument("--cores", type=int, default=2, help="cores the run had (default 2)")
    args = parser.parse_args(argv)
    if args.cores < 1:
        print(f"--cores {args.cores} is invalid: allowed an integer >= 1", file=sys.stderr)
        return 2
    if not args.folder.is_dir():
        print(f"benchmark folder '{args.folder}' not found: run the pipeline first "
              "(it is <results>/<config name>/benchmarks/simulate)", file=sys.stderr)
        return 2
    try:
        rows = read_benchmarks(args.folder)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    if not rows:
        print(f"benchmark folder '{args.folder}' holds no .tsv file", file=sys.stderr)
        return 2
    print(summary(rows, args.cores))
    return 0


if __name__ == "__main__":
    sys.exit(main())
