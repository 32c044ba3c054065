"""Compare the allocation solver with a frozen copy of the solver it replaced, on many sampled rounds.

    python bench/compare_allocation.py [--cases 400] [--sizes 3,8,20,100] [--cache bench/out/frozen.pkl]

The frozen solver is src/spfl/allocation at ``solver_at_revision.DEFAULT_REVISION`` (main f3914d3, before
issue #21; it was main 68a2967 for issue #11), read from git by bench/solver_at_revision.py.  (The
benchmark set of issue #21, with the descent surrogate, is bench/check_allocation_phi.py's; this script
keeps the earlier case generator, Jensen surrogate only.)  Each case is a calibrated random round (``sample_problem`` of
tests/allocation_reference.py) with every switch drawn: policy, fading, normalize, slot_share
(proportional, fixed or optimized), power constraint, whether a lone sign counts, the error model and,
now and then, a single-packet scheme; about one case in seven also has degenerate devices (no link,
no weight, harmful signs) or the sign packet alone (tau = 1).  Both solvers run on the same problem;
the report gives the largest relative objective difference (new - frozen) / |frozen| either way, how many rounds each
solver was better by more than 1e-9, and how many allocations are bitwise identical (all four arrays)
or equal within 1e-12 relative (bitwise identical also requires the same trace; since issue #21 the
answers are no longer expected to be identical, only never worse).  ``--cache`` keeps the frozen answers
(they are slow to recompute).
Exit status 1 when the new solver is worse than the frozen one by more than 1e-9 anywhere.
"""

from __future__ import annotations

import argparse
import os
import pickle
import sys
import time
from dataclasses import fields, replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))
from allocation_reference import sample_problem  # noqa: E402
from solver_at_revision import DEFAULT_REVISION, load_solver  # noqa: E402
from spfl.simulator.allocation import ALLOCATION_POLICIES, allocate  # noqa: E402

FROZEN = load_solver()  # the solver at DEFAULT_REVISION
TOLERANCE = 1e-9


def case_problem(index: int, sizes: list[int]):
    """The index-th case: (problem, policy), every switch drawn from the index."""
    rng = np.random.default_rng(10_000 + index)
    num = sizes[index % len(sizes)]
    share = rng.choice(["proportional", "optimized", "fixed"], p=[0.45, 0.4, 0.15])
    fields_ = dict(fading=str(rng.choice(["block", "per_packet"])), normalize=str(rng.choice(["all", "received"])),
                   power_constraint=str(rng.choice(["energy", "sum"])), sign_only_counts=bool(rng.random() < 0.8),
                   per_model="waterfall" if rng.random() < 0.1 else "outage",
                   slot_share=None if share != "fixed" else float(rng.uniform(0.02, 0.9)))
    if rng.random() < 0.08:
        fields_["modulus_bits"] = 0
    problem = sample_problem(num, 50_000 + index, scarcity=float(rng.uniform(-2.0, 1.5)), **fields_)
    if share == "proportional" and problem.two_packets:
        problem = replace(problem, slot_share=problem.proportional_share)
    if rng.random() < 0.15:  # degenerate devices: no link, no weight, harmful signs; or the sign alone
        alpha = np.where(rng.random(num) < 0.2, 0.0, problem.alpha)
        alpha[0] = alpha[0] if alpha.sum() > 0 else 1.0
        problem = replace(problem, alpha=alpha, gain=np.where(rng.random(num) < 0.2, 0.0, problem.gain),
                          u_sign=problem.u_sign * np.where(rng.random(num) < 0.3, -3.0, 1.0),
                          slot_share=1.0 if rng.random() < 0.3 else problem.slot_share)
    policy = ALLOCATION_POLICIES[int(rng.integers(len(ALLOCATION_POLICIES)))] if rng.random() < 0.4 else "spfl"
    return problem, policy


def frozen_allocate(problem, policy):
    """The frozen solver on its own problem class (so later edits of problem.py cannot leak in)."""
    copy = FROZEN.AllocationProblem(**{f.name: getattr(problem, f.name) for f in fields(problem)})
    return FROZEN.allocate(copy, policy)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=400)
    parser.add_argument("--sizes", default="3,8,20,100")
    parser.add_argument("--cache", default=str(ROOT / "bench" / "out" / "frozen_allocations.pkl"))
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]
    cache_key = (args.sizes, 2, DEFAULT_REVISION)  # 2: the case generator's version
    cache = {}
    if args.cache and os.path.exists(args.cache):
        with open(args.cache, "rb") as handle:
            cache = pickle.load(handle)
    rows = []
    times = {"frozen": 0.0, "new": 0.0}
    for index in range(args.cases):
        problem, policy = case_problem(index, sizes)
        key = (*cache_key, index)
        if key not in cache:
            start = time.perf_counter()
            old = frozen_allocate(problem, policy)
            cache[key] = (old.arrays, old.objective, time.perf_counter() - start, old.trace)
        old_arrays, old_objective, old_seconds, old_trace = cache[key]
        start = time.perf_counter()
        new = allocate(problem, policy)
        new_seconds = time.perf_counter() - start
        times["frozen"] += old_seconds
        times["new"] += new_seconds
        relative = (new.objective - old_objective) / max(abs(old_objective), 1e-300)
        identical = all(np.array_equal(a, b) for a, b in zip(new.arrays, old_arrays)) and new.trace == old_trace
        close = all(np.allclose(a, b, rtol=1e-12, atol=0) for a, b in zip(new.arrays, old_arrays))
        rows.append((index, problem.num_devices, policy, problem.normalize, problem.slot_share is None,
                     relative, identical, close))
    if args.cache:
        os.makedirs(os.path.dirname(args.cache), exist_ok=True)
        with open(args.cache, "wb") as handle:
            pickle.dump(cache, handle)
    relative = np.array([row[5] for row in rows])
    identical = np.array([row[6] for row in rows])
    close = np.array([row[7] for row in rows])
    print(f"cases {len(rows)} (sizes {sizes}); solve time frozen {times['frozen']:.2f} s, new {times['new']:.2f} s "
          f"(ratio {times['frozen'] / max(times['new'], 1e-12):.1f}x)")
    print(f"objective (new - frozen) / |frozen|: max {relative.max():.3e}, min {relative.min():.3e}, "
          f"max |.| {np.abs(relative).max():.3e}")
    print(f"new better by > {TOLERANCE:g}: {int(np.sum(relative > TOLERANCE))}; "
          f"worse by > {TOLERANCE:g}: {int(np.sum(relative < -TOLERANCE))}")
    print(f"allocations bitwise identical: {int(identical.sum())}/{len(rows)}; "
          f"within 1e-12 relative: {int(close.sum())}/{len(rows)}")
    for row in rows:
        if not row[6] or abs(row[5]) > TOLERANCE:
            print(f"  case {row[0]}: K={row[1]} policy={row[2]} normalize={row[3]} tau_optimized={row[4]} "
                  f"relative={row[5]:.3e} identical={row[6]} close={row[7]}")
    sys.exit(1 if np.any(relative < -TOLERANCE) else 0)


if __name__ == "__main__":
    main()
