"""Time per call of best_choices, the numpy formulation (revision 3d3cc94) against the compiled kernel.

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python bench/bench_knapsack.py [--seeds 5] [--repeats 7]

The inputs are the solver's own: every best_choices call of allocate(problem, "spfl") on
tests/allocation_cases.speed_problem at K = 20 and 100 (sign share proportional and optimized), grouped
by shape (K, options, total).  Old and new run interleaved in this one process, input by input; per input
the fastest of ``--repeats`` calls, then the median over a group's inputs.  Then the whole allocate on the
same problems with either best_choices (median over seeds of the fastest of ``--repeats``).  Also: the
first call's time with the kernel's numba cache removed (compile) and with it present (load), each in a
fresh process.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))
from allocation_cases import speed_problem  # noqa: E402
from check_knapsack_kernel import load_old, record, solver_knapsack  # noqa: E402
from spfl.simulator.allocation import allocate, bandwidth  # noqa: E402

CACHE = Path(bandwidth.__file__).parent / "__pycache__"
FIRST_CALL = """
import time
start = time.perf_counter()
import numpy as np
from spfl.simulator.allocation.bandwidth import best_choices
imported = time.perf_counter()
best_choices(np.zeros((1, 3, 5)), 4)
print(imported - start, time.perf_counter() - imported)
"""


def first_call(fresh: bool) -> tuple[float, float]:
    """(import s, first call s) in a new process; ``fresh``: the module's numba cache removed first."""
    if fresh:
        for path in CACHE.glob("bandwidth.*.nb[ic]"):
            path.unlink()
    out = subprocess.run([sys.executable, "-c", FIRST_CALL], capture_output=True, text=True, check=True).stdout
    return tuple(float(x) for x in out.split())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    compiled, loaded = first_call(fresh=True), first_call(fresh=False)
    old = load_old()
    groups = defaultdict(list)
    solves = {}
    for num in (20, 100):
        for share in ("proportional", "optimized"):
            cases = [(speed_problem(num, seed, normalize="received", share=share), "spfl")
                     for seed in range(args.seeds)]
            solves[(num, share)] = cases
            for values, total in record(cases):
                kind = "grid" if total == bandwidth.grid_units(num) else "zoom"
                groups[(num, kind, values.shape[2], total)].append((values, total))
    print(f"{'K':>4} {'shape':>5} {'options':>7} {'total':>5} {'calls':>5} {'S':>5} {'old ms':>8} {'new ms':>8} "
          f"{'ratio':>6}")
    for (num, kind, options, total), inputs in sorted(groups.items()):
        best = {"old": [float("inf")] * len(inputs), "new": [float("inf")] * len(inputs)}
        for _ in range(args.repeats):
            for i, (values, total) in enumerate(inputs):
                for name, function in (("old", old.best_choices), ("new", bandwidth.best_choices)):
                    start = time.perf_counter()
                    function(values, total)
                    best[name][i] = min(best[name][i], time.perf_counter() - start)
        old_ms, new_ms = (statistics.median(best[name]) * 1e3 for name in ("old", "new"))
        batch = sorted({values.shape[0] for values, _ in inputs})
        print(f"{num:>4} {kind:>5} {options:>7} {total:>5} {len(inputs):>5} {','.join(map(str, batch)):>5} "
              f"{old_ms:>8.3f} {new_ms:>8.3f} {old_ms / new_ms:>6.1f}")
    print(f"{'K':>4} {'share':>12} allocate ms: {'old':>7} {'new':>7} {'ratio':>6}")
    for (num, share), cases in solves.items():
        times = {"old": [], "new": []}
        for problem, policy in cases:
            best = {"old": float("inf"), "new": float("inf")}
            for _ in range(args.repeats):
                for name, function in (("old", old.best_choices), ("new", bandwidth.best_choices)):
                    with solver_knapsack(function):
                        start = time.perf_counter()
                        allocate(problem, policy)
                        best[name] = min(best[name], time.perf_counter() - start)
            for name in times:
                times[name].append(best[name])
        old_ms, new_ms = (statistics.median(times[name]) * 1e3 for name in ("old", "new"))
        print(f"{num:>4} {share:>12}              {old_ms:>7.2f} {new_ms:>7.2f} {old_ms / new_ms:>6.2f}")
    print(f"fresh process, cache removed: import {compiled[0]:.2f} s, first call (compile) {compiled[1]:.2f} s")
    print(f"fresh process, cache present: import {loaded[0]:.2f} s, first call (cache load) {loaded[1] * 1e3:.0f} ms")


if __name__ == "__main__":
    main()
