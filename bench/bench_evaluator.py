"""Per-call time of the compiled evaluator against the numpy one it replaced (revision ``OLD_REVISION``),
interleaved in one process.

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python bench/bench_evaluator.py [--repeats 300] [--json PATH]

Problems: tests/allocation_cases.py ``speed_problem`` (the pipeline's default objective, the descent
surrogate) at K = 20 and 100, normalize received and all, and the same with ``descent=None`` (the Jensen
form).  For each, phi and phi_coefficients at a batch of B = 1 and 4 random points are called old, new,
old, new, ... ``--repeats`` times after a warm-up; reported: the median time of each (ms) and their
ratio old / new (a ratio measured side by side survives the machine's other load; absolute times do not).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))
from allocation_cases import speed_problem  # noqa: E402
from check_evaluator_kernels import load_old_evaluation  # noqa: E402
from spfl.simulator.allocation.evaluation import evaluator_for  # noqa: E402


def interleaved(old_call, new_call, repeats: int) -> tuple[float, float]:
    """Median seconds of each, called alternately."""
    for _ in range(5):
        old_call()
        new_call()
    old_times, new_times = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        old_call()
        old_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        new_call()
        new_times.append(time.perf_counter() - start)
    return float(np.median(old_times)), float(np.median(new_times))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=300)
    parser.add_argument("--sizes", default="20,100")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    old_module = load_old_evaluation()
    rows = []
    print(f"{'K':>4} {'normalize':9} {'surrogate':8} {'B':>2} {'method':17} {'old ms':>8} {'new ms':>8} {'old/new':>8}")
    for num in (int(x) for x in args.sizes.split(",")):
        for normalize in ("received", "all"):
            descent = speed_problem(num, 1, normalize=normalize)
            for surrogate, problem in (("descent", descent), ("jensen", replace(descent, descent=None))):
                old, new = old_module.evaluator_for(problem), evaluator_for(problem)
                rng = np.random.default_rng(num)
                for batch in (1, 4):
                    pi_sign = rng.random((batch, num))
                    pi_both = pi_sign * rng.random((batch, num))
                    for method in ("phi", "phi_coefficients"):
                        old_call, new_call = getattr(old, method), getattr(new, method)
                        old_s, new_s = interleaved(partial(old_call, pi_sign, pi_both),
                                                   partial(new_call, pi_sign, pi_both), args.repeats)
                        rows.append(dict(K=num, normalize=normalize, surrogate=surrogate, B=batch, method=method,
                                         old_ms=1e3 * old_s, new_ms=1e3 * new_s, ratio=old_s / new_s))
                        print(f"{num:4d} {normalize:9} {surrogate:8} {batch:2d} {method:17} {1e3 * old_s:8.4f} "
                              f"{1e3 * new_s:8.4f} {old_s / new_s:8.2f}", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
