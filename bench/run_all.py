"""Run the whole benchmark suite with one command, print one table, write ``bench/out/results.json``.

    python bench/run_all.py            # everything (about 10 minutes on 2 cores, most of it the quick replication)
    python bench/run_all.py --quick    # round and memory benchmarks only, fewer repeats (about 2 minutes)

Full: the CIFAR CNN round at 2 threads (sequential and batched paths), at 1 thread (what the pipeline's
simulate jobs use, and robust to other load on the machine) also with the opt-in allocator tuning
(``SPFL_MALLOC_TUNING=1``, see ``spfl.simulator.training``); the digits MLP round (the quick config's model,
where Python overhead rather than compute dominates); K = 100 memory; the quick replication.

Each benchmark runs in its own interpreter (``bench_*.py --json``): a crash in one still leaves the
others' numbers, and no benchmark inherits another's memory or threads.  The machine's load average
is recorded before and after, because on a shared machine it explains noisy numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROUND_GOAL, MEMORY_GOAL_GIB = 1.25, 4.0


def run(script: str, args: list[str], timeout: float, env: dict[str, str] | None = None) -> dict:
    """``python bench/<script> <args> --json <tmp>``; its JSON, or what went wrong."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        command = [sys.executable, str(HERE / script), *args, "--json", str(out)]
        start, load_before = time.perf_counter(), os.getloadavg()[0]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False,
                                  env={**os.environ, **(env or {})})
        except subprocess.TimeoutExpired:
            return {"error": f"timed out after {timeout:.0f} s", "command": " ".join(command)}
        print(done.stdout, end="", flush=True)
        if done.returncode != 0 or not out.exists():
            return {"error": f"exit {done.returncode}: {done.stderr[-1500:]}", "command": " ".join(command)}
        result = json.loads(out.read_text())
        result["benchmark_wall_s"] = time.perf_counter() - start
        result["load_average_during"] = [load_before, os.getloadavg()[0]]
        return result


def round_rows(label: str, rnd: dict) -> list[tuple[str, str, str]]:
    if "error" in rnd:
        return [(f"{label}: round benchmark", "FAILED", rnd["error"].splitlines()[-1])]
    load = "load average {:.1f} -> {:.1f}".format(*rnd["load_average_during"])
    rows = [(f"{label}: floor, one fwd+bwd over K x batch (ms)", f"{rnd['floor_s'] * 1000:.1f}", f"median; {load}")]
    for path, r in rnd["paths"].items():
        if "error" in r:
            rows.append((f"{label}: round, {path}", "FAILED", r["error"]))
            continue
        goal = ""
        if rnd["setup"] == "cifar" and path == ("batched" if rnd["device"].startswith("cuda") else "sequential"):
            goal = f"goal <= {ROUND_GOAL}x: {'ok' if r['ratio_to_floor'] <= ROUND_GOAL else 'over'}"
        rows.append((f"{label}: round, {path} (ms)", f"{r['round_s'] * 1000:.1f}", ""))
        rows.append((f"{label}: round / floor, {path}", f"{r['ratio_to_floor']:.2f}x",
                     f"{goal}{'; ' if goal else ''}fastest repeats {r['ratio_to_floor_min']:.2f}x"))
        if "speedup_vs_reference" in r:
            rows.append((f"{label}: speedup vs reference, {path}", f"{r['speedup_vs_reference']:.2f}x",
                         f"reference {rnd['reference_s'] * 1000:.1f} ms; fastest repeats "
                         f"{r['speedup_vs_reference_min']:.2f}x"))
        rows.append((f"{label}: allocation solve share, {path}", f"{100 * r['allocation_share']:.1f} %",
                     f"{r['phases_s']['allocate'] * 1000:.1f} ms"))
    return rows


def summary_rows(results: dict) -> list[tuple[str, str, str]]:
    """(measure, value, goal / note) rows of the final table."""
    rows = []
    for label, rnd in results.get("round", {}).items():
        rows.extend(round_rows(label, rnd))
    mem = results.get("memory", {})
    if "error" in mem:
        rows.append(("memory benchmark", "FAILED", mem["error"].splitlines()[-1]))
    elif mem:
        ok = "ok" if mem["peak_rss_gib"] < MEMORY_GOAL_GIB else "over"
        rows.append((f"peak RSS, K = {mem['num_devices']} (GiB)", f"{mem['peak_rss_gib']:.2f}",
                     f"goal < {MEMORY_GOAL_GIB:.0f} GiB: {ok}"))
    quick = results.get("quick_replication", {})
    if quick.get("status") == "skipped":
        rows.append(("quick replication", "skipped", quick.get("reason", "")))
    elif "error" in quick or quick.get("status") == "failed":
        rows.append(("quick replication", "FAILED", str(quick.get("error") or quick.get("log_tail", [""])[-1])))
    elif quick:
        rows.append(("quick replication wall (min)", f"{quick['wall_s'] / 60:.1f}", quick["command"]))
        rows.append(("quick replication peak tree RSS (GiB)", f"{quick['peak_tree_rss_gib']:.2f}",
                     f"largest process {quick['largest_process_rss_gib']:.2f} GiB"))
    return rows


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fast subset (about 2 minutes)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=HERE / "out" / "results.json")
    args = parser.parse_args(argv)
    threads = ["--threads", str(args.threads)]
    started = time.perf_counter()
    results: dict = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "load_average_before": os.getloadavg()},
        "quick": args.quick,
    }
    cifar = f"CIFAR CNN, {args.threads} threads"
    if args.quick:
        results["round"] = {
            cifar: run("bench_round.py", [*threads, "--repeats", "5", "--train-size", "10000"], 300),
            "digits MLP, 1 thread": run("bench_round.py", ["--setup", "digits", "--threads", "1", "--repeats", "9"],
                                        120),
        }
        results["memory"] = run("bench_memory.py", [*threads, "--rounds", "2"], 300)
        results["quick_replication"] = {"status": "skipped", "reason": "--quick"}
    else:
        results["round"] = {
            cifar: run("bench_round.py", [*threads, "--repeats", "7", "--paths", "sequential,batched"], 900),
            "CIFAR CNN, 1 thread": run("bench_round.py", ["--threads", "1", "--repeats", "5"], 600),
            "CIFAR CNN, 1 thread, SPFL_MALLOC_TUNING=1": run(
                "bench_round.py", ["--threads", "1", "--repeats", "5"], 600, env={"SPFL_MALLOC_TUNING": "1"}),
            "digits MLP, 1 thread": run("bench_round.py", ["--setup", "digits", "--threads", "1", "--repeats", "15"],
                                        120),
        }
        results["memory"] = run("bench_memory.py", [*threads, "--rounds", "3"], 600)
        results["quick_replication"] = run("bench_quick.py", ["--cores", str(args.threads)], 2400)
    results["machine"]["load_average_after"] = os.getloadavg()
    results["wall_s"] = time.perf_counter() - started
    rows = summary_rows(results)
    width = max(len(r[0]) for r in rows)
    print(f"\nspfl benchmarks ({'quick' if args.quick else 'full'}, {args.threads} threads, "
          f"{results['wall_s'] / 60:.1f} min; load average before/after "
          f"{results['machine']['load_average_before'][0]:.1f}/{results['machine']['load_average_after'][0]:.1f})")
    for name, value, note in rows:
        print(f"  {name:<{width}}  {value:>9}  {note}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"written: {args.out}")
    return results


if __name__ == "__main__":
    main()
