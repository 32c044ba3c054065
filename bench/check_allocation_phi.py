"""Phi of today's solver against the solver before issue #21 on the fixed benchmark set.

    python bench/check_allocation_phi.py [--cases 1200] [--start 0] [--json bench/out/phi_check.json]
    python bench/check_allocation_phi.py --step 4 --write-reference tests/allocation_old_phi.json

The benchmark set is tests/allocation_cases.py (``benchmark_case``: K = 2-100, every policy, both
normalizations, both fadings, proportional / fixed / optimized sign shares, descent and Jensen
surrogates, degenerate devices).  The old solver is src/spfl/allocation at main f3914d3, read from git
by bench/solver_at_revision.py; its answers are kept in ``--cache`` (they take minutes to recompute).
Both allocations are scored by the old objective (so a change of the objective's code cannot move the
yardstick); the relative difference is (new - old) / |old|.  Reported: how many cases, how many with
the new Phi higher by more than 1e-9 (and 1e-6), the largest relative gain, the smallest relative
difference and every case below -1e-6 (exit status 1 if there is one).  Solve times are totals.
``--write-reference`` stores the old Phi of the cases run, for tests/test_allocation_benchmark.py (which
checks every fourth case: ``--step 4``).
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import platform
import sys
import time
from dataclasses import fields
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))
from allocation_cases import BENCHMARK_SIZE, GENERATOR_VERSION, benchmark_case  # noqa: E402
from solver_at_revision import DEFAULT_REVISION, load_solver  # noqa: E402
from spfl.simulator.allocation import allocate, clear_shared_tables  # noqa: E402

TOLERANCE = 1e-6


def old_problem(old, problem):
    """The problem as an instance of the old solver's own classes."""
    values = {f.name: getattr(problem, f.name) for f in fields(problem)}
    if problem.descent is not None:
        terms = problem.descent
        values["descent"] = old.descent.DescentTerms(terms.gram, terms.states, terms.learning_rate, terms.smoothness)
    return old.AllocationProblem(**values)


def timed_pair(old, problem, policy: str, repeats: int):
    """Solve ``problem`` with the old and today's solver, interleaved ``repeats`` times: the fastest wall
    time of each (s) and their last answers, (old_s, new_s, old_answer, new_answer).  Today's solver starts
    each repeat without the grid tables it keeps per link (as on a round with a new link)."""
    frozen = old_problem(old, problem)
    old_times, new_times = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        before = old.allocate(frozen, policy)
        old_times.append(time.perf_counter() - start)
        clear_shared_tables()   # (a solve from scratch: no grid table kept from the last repeat)
        start = time.perf_counter()
        after = allocate(problem, policy)
        new_times.append(time.perf_counter() - start)
    return min(old_times), min(new_times), before, after


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=BENCHMARK_SIZE)
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--step", type=int, default=1, help="every step-th case from --start")
    parser.add_argument("--revision", default=DEFAULT_REVISION)
    parser.add_argument("--cache", default=str(ROOT / "bench" / "out" / "phi_check_old.pkl"))
    parser.add_argument("--json", default=str(ROOT / "bench" / "out" / "phi_check.json"))
    parser.add_argument("--write-reference", help="store the old Phi of these cases (JSON) for the tests")
    parser.add_argument("--old-only", action="store_true", help="only fill the cache of old answers")
    args = parser.parse_args()
    old = load_solver(args.revision)
    cache = {}
    if args.cache and os.path.exists(args.cache):
        with open(args.cache, "rb") as handle:
            cache = pickle.load(handle)
    load_before = os.getloadavg()
    rows = []
    times = {"old": 0.0, "new": 0.0}
    dirty = False
    for index in range(args.start, args.start + args.cases, args.step):
        problem, policy = benchmark_case(index)
        frozen = old_problem(old, problem)
        key = (GENERATOR_VERSION, args.revision, index)
        if key not in cache:
            start = time.perf_counter()
            answer = old.allocate(frozen, policy)
            cache[key] = (answer.arrays, answer.objective, time.perf_counter() - start)
            dirty = True
            if dirty and index % 50 == 0 and args.cache:
                _save(args.cache, cache)
        old_arrays, old_phi, old_seconds = cache[key]
        if args.old_only:
            continue
        start = time.perf_counter()
        new = allocate(problem, policy)
        new_seconds = time.perf_counter() - start
        times["old"] += old_seconds
        times["new"] += new_seconds
        new_phi = float(old.objective(frozen, *new.arrays))
        relative = (new_phi - old_phi) / max(abs(old_phi), 1e-300)
        rows.append({"index": index, "K": problem.num_devices, "policy": policy, "normalize": problem.normalize,
                     "fading": problem.fading, "share": _share_mode(problem),
                     "surrogate": "jensen" if problem.descent is None else "descent", "old_phi": old_phi,
                     "new_phi": new_phi, "new_phi_own": new.objective, "relative": relative,
                     "old_ms": 1e3 * old_seconds, "new_ms": 1e3 * new_seconds})
    if dirty and args.cache:
        _save(args.cache, cache)
    if args.old_only:
        return
    relative = np.array([row["relative"] for row in rows])
    load_after = os.getloadavg()
    below = [row for row in rows if row["relative"] < -TOLERANCE]
    summary = {
        "cases": len(rows), "first": args.start, "revision": args.revision,
        "higher_1e-9": int(np.sum(relative > 1e-9)), "higher_1e-6": int(np.sum(relative > 1e-6)),
        "equal_within_1e-9": int(np.sum(np.abs(relative) <= 1e-9)),
        "lower_1e-9": int(np.sum(relative < -1e-9)), "below_tolerance": len(below),
        "max_relative_gain": float(relative.max()), "min_relative_difference": float(relative.min()),
        "median_relative_difference": float(np.median(relative)),
        "old_seconds": times["old"], "new_seconds": times["new"],
        "load_average_before": load_before, "load_average_after": load_after,
        "machine": platform.platform(), "cpus": os.cpu_count(),
    }
    print(f"cases {summary['cases']} (from {args.start}); old solver at {args.revision}")
    print(f"new Phi higher by > 1e-9: {summary['higher_1e-9']}, by > 1e-6: {summary['higher_1e-6']}; "
          f"within 1e-9: {summary['equal_within_1e-9']}; lower by > 1e-9: {summary['lower_1e-9']}; "
          f"below -{TOLERANCE:g}: {summary['below_tolerance']}")
    print(f"relative difference (new - old) / |old|: max {summary['max_relative_gain']:.3e}, "
          f"min {summary['min_relative_difference']:.3e}, median {summary['median_relative_difference']:.3e}")
    print(f"solve time total: old {times['old']:.1f} s, new {times['new']:.1f} s "
          f"(ratio {times['old'] / max(times['new'], 1e-12):.1f}x); load average before "
          f"{load_before[0]:.2f}, after {load_after[0]:.2f}")
    for row in sorted(rows, key=lambda r: r["relative"])[:10]:
        print(f"  case {row['index']}: K={row['K']} {row['policy']} {row['surrogate']} {row['normalize']} "
              f"{row['fading']} {row['share']} relative={row['relative']:.3e}")
    if args.json:
        os.makedirs(os.path.dirname(args.json), exist_ok=True)
        with open(args.json, "w") as handle:
            json.dump({"summary": summary, "rows": rows}, handle, indent=1)
    if args.write_reference:
        with open(args.write_reference, "w") as handle:
            json.dump({"generator_version": GENERATOR_VERSION, "revision": args.revision,
                       "command": "python bench/check_allocation_phi.py " + " ".join(sys.argv[1:]),
                       "old_phi": {str(row["index"]): row["old_phi"] for row in rows}}, handle, indent=0)
            handle.write("\n")
    sys.exit(1 if below else 0)


def _share_mode(problem) -> str:
    if not problem.two_packets:
        return "single"
    if problem.slot_share is None:
        return "optimized"
    return "proportional" if problem.slot_share == problem.proportional_share else "fixed"


def _save(path: str, cache: dict) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "wb") as handle:
        pickle.dump(cache, handle)
    os.replace(path + ".tmp", path)


if __name__ == "__main__":
    main()
