"""Solve time of SP-FL's allocation (policy ``spfl``) beside a generic solver on the same rounds.

    python bench/bench_allocation.py [--sizes 10,20,100] [--seeds 5] [--repeats 7] [--json out.json]

For each K and seed, one calibrated random round (``sample_problem`` of tests/allocation_reference.py,
budgets from scarce to ample) is solved by ``allocate`` (best wall time of ``--repeats`` runs) and
by ``scipy.optimize.minimize`` (SLSQP, same variables and constraints, numerical gradient, started
at the uniform point; timed once).  The table gives, over seeds: AO ms (median and max), generic
ms (median), the time ratio generic / AO (median over all rounds, and over the rounds where
SLSQP reached the AO's Phi within 1e-3: "equal objective"), the objective gap (AO - generic) /
max(AO, generic) in [-1, 1] (>= 0: the AO is at least as good; median and min) and how many rounds
SLSQP ended below half the AO's Phi (it stops at once where Phi is flat at its start, which also
makes it "fast").
Goal (issue #3): under 5 ms at K = 20 and at least 50x faster at equal or better objective.

    python bench/bench_allocation.py --vs-old [--sizes 20,100] [--seeds 7] [--repeats 3] [--policies spfl,...]
                                     [--json bench/out/allocation_vs_old.json]

instead times today's solver beside the solver before issue #21 (src/spfl/allocation at main f3914d3,
read from git by bench/solver_at_revision.py) on rounds of the pipeline's default objective (the descent
surrogate: ``speed_problem`` of tests/allocation_cases.py, block fading, budgets from scarce to ample)
for every policy, ``normalize`` (received, all), ``slot_share`` (proportional, optimized) and K.  Both
solve the same rounds in one process, interleaved (old, new, old, new, ...), with BLAS on one thread (as
the pipeline runs, run setting ``threads``); per row: the medians over rounds of the fastest of
``--repeats`` runs of each, the median of the per-round ratios old / new, and the median and smallest
relative Phi difference (new - old) / |old|.  Today's solver starts each of those solves without the
grid tables it keeps per link; "kept ms" times it after a solve of another round of the same link (as on
every round of a simulated cell after its first: the link is the cell's).  The load average before and after is printed and stored
(the machine may be shared).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from spfl.simulator.allocation import allocate, clear_shared_tables

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from allocation_cases import speed_problem  # noqa: E402
from allocation_reference import sample_problem, scipy_solve, scipy_starts  # noqa: E402
from check_allocation_phi import timed_pair  # noqa: E402
from solver_at_revision import DEFAULT_REVISION, load_solver  # noqa: E402
from spfl.simulator.allocation import ALLOCATION_POLICIES  # noqa: E402

SCARCITIES = (-1.0, -0.5, 0.0, 0.5, 1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,20,100", help="comma-separated device counts K")
    parser.add_argument("--seeds", type=int, default=6, help="rounds per K")
    parser.add_argument("--repeats", type=int, default=7, help="timed AO runs per round (best is kept)")
    parser.add_argument("--generic-iterations", type=int, default=300, help="SLSQP iteration cap")
    parser.add_argument("--json", help="write the rows and per-round records here")
    parser.add_argument("--vs-old", action="store_true", help="time against the solver before issue #21")
    parser.add_argument("--revision", default=DEFAULT_REVISION, help="the old solver's git revision (--vs-old)")
    parser.add_argument("--policies", default=",".join(ALLOCATION_POLICIES), help="comma-separated (--vs-old)")
    args = parser.parse_args()
    if args.vs_old:
        _versus_old(args)
        return
    rows, records = [], []
    load_before = os.getloadavg()
    for num in (int(size) for size in args.sizes.split(",")):
        cases = [_case(num, seed, args.repeats, args.generic_iterations) for seed in range(args.seeds)]
        records.extend(cases)
        rows.append(_summary(num, cases))
    _print_table(rows)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"machine": platform.platform(), "cpus": os.cpu_count(),
                       "load_average_before": load_before, "load_average_after": os.getloadavg(),
                       "rows": rows, "rounds": records}, handle, indent=2)


def _case(num: int, seed: int, repeats: int, generic_iterations: int) -> dict:
    """One round: AO best-of-repeats wall time, SLSQP wall time, both objectives."""
    problem = sample_problem(num, 3000 + seed, scarcity=SCARCITIES[seed % len(SCARCITIES)],
                             power_constraint=("energy", "sum")[seed % 2])
    ao_seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = allocate(problem)
        ao_seconds.append(time.perf_counter() - start)
    start = time.perf_counter()
    generic = scipy_solve(problem, scipy_starts(problem, 1, np.random.default_rng(seed)), generic_iterations)
    generic_seconds = time.perf_counter() - start
    return {
        "K": num, "seed": seed, "ao_ms": 1e3 * min(ao_seconds),
        "ao_ms_median": 1e3 * float(np.median(ao_seconds)),
        "generic_ms": 1e3 * generic_seconds, "ao_objective": result.objective,
        "generic_objective": generic.objective, "ao_stages": len(result.trace) - 1,
    }


def _summary(num: int, cases: list[dict]) -> dict:
    ao = np.array([case["ao_ms"] for case in cases])
    generic = np.array([case["generic_ms"] for case in cases])
    gaps = np.array([(case["ao_objective"] - case["generic_objective"])
                     / max(case["ao_objective"], case["generic_objective"], 1e-300) for case in cases])
    equal = np.abs(gaps) <= 1e-3
    return {
        "K": num, "ao_ms": float(np.median(ao)), "ao_ms_max": float(ao.max()),
        "generic_ms": float(np.median(generic)), "ratio": float(np.median(generic / ao)),
        "ratio_equal": float(np.median(generic[equal] / ao[equal])) if equal.any() else float("nan"),
        "equal_rounds": int(equal.sum()), "gap_median": float(np.median(gaps)),
        "gap_min": float(gaps.min()), "generic_failures": int(np.sum(gaps > 0.5)),
    }


def _print_table(rows: list[dict]) -> None:
    print(f"{'K':>5} {'AO ms':>8} {'AO max':>8} {'generic ms':>11} {'ratio':>7} {'ratio@equal':>12} "
          f"{'gap median':>11} {'gap min':>10} {'failures':>9}")
    for row in rows:
        at_equal = f"{row['ratio_equal']:.0f} ({row['equal_rounds']})"
        print(f"{row['K']:>5} {row['ao_ms']:>8.2f} {row['ao_ms_max']:>8.2f} {row['generic_ms']:>11.1f} "
              f"{row['ratio']:>7.0f} {at_equal:>12} {row['gap_median']:>11.2e} {row['gap_min']:>10.2e} "
              f"{row['generic_failures']:>9d}")


def _versus_old(args) -> None:
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - installed with scikit-learn
        threadpool_limits = None
    limit = threadpool_limits(limits=1, user_api="blas") if threadpool_limits else None
    old = load_solver(args.revision)
    load_before = os.getloadavg()
    print(f"load average before: {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}")
    print(f"{'K':>4} {'policy':>10} {'normalize':>9} {'slot_share':>12} {'old ms':>8} {'new ms':>8} {'ratio':>6} "
          f"{'kept ms':>8} {'Phi diff median':>16} {'min':>10}")
    rows = []
    for num in (int(size) for size in args.sizes.split(",")):
        for policy in args.policies.split(","):
            for normalize in ("received", "all"):
                for share in ("proportional", "optimized"):
                    row = _old_row(old, num, policy, normalize, share, args.seeds, args.repeats)
                    rows.append(row)
                    print(f"{num:>4} {policy:>10} {normalize:>9} {share:>12} {row['old_ms']:>8.2f} "
                          f"{row['new_ms']:>8.2f} {row['ratio']:>6.1f} {row['new_kept_ms']:>8.2f} {row['phi_median']:>16.2e} "
                          f"{row['phi_min']:>10.2e}", flush=True)
    load_after = os.getloadavg()
    print(f"load average after: {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}")
    if limit is not None:
        limit.restore_original_limits()
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as handle:
            json.dump({"machine": platform.platform(), "cpus": os.cpu_count(), "revision": args.revision,
                       "seeds": args.seeds, "repeats": args.repeats, "blas_threads": 1,
                       "load_average_before": load_before, "load_average_after": load_after, "rows": rows},
                      handle, indent=2)


def _old_row(old, num: int, policy: str, normalize: str, share: str, seeds: int, repeats: int) -> dict:
    old_ms, new_ms, kept_ms, differences = [], [], [], []
    for seed in range(seeds):
        problem = speed_problem(num, seed, normalize=normalize, share=share)
        old_s, new_s, before, after = timed_pair(old, problem, policy, repeats)
        old_ms.append(1e3 * old_s)
        new_ms.append(1e3 * new_s)
        other = speed_problem(num, seed + seeds, normalize=normalize, share=share)   # another round, same link:
        previous = replace(problem, u_sign=other.u_sign, u_modulus=other.u_modulus, descent=other.descent)
        kept_ms.append(1e3 * _kept_tables_time(problem, previous, policy, repeats))
        differences.append((after.objective - before.objective) / max(abs(before.objective), 1e-300))
    old_ms, new_ms = np.array(old_ms), np.array(new_ms)
    return {"K": num, "policy": policy, "normalize": normalize, "slot_share": share,
            "old_ms": float(np.median(old_ms)), "new_ms": float(np.median(new_ms)),
            "new_kept_ms": float(np.median(kept_ms)), "new_kept_ms_rounds": kept_ms,
            "ratio": float(np.median(old_ms / new_ms)), "old_ms_rounds": old_ms.tolist(),
            "new_ms_rounds": new_ms.tolist(), "phi_median": float(np.median(differences)),
            "phi_min": float(np.min(differences)), "rounds": seeds}


def _kept_tables_time(problem, previous, policy: str, repeats: int) -> float:
    """Today's solver on ``problem`` after a solve of ``previous``, another round of the same link (as every
    round of a simulated cell after its first: the link's grid tables are kept from the rounds before):
    the fastest of ``repeats`` (s)."""
    times = []
    for _ in range(repeats):
        clear_shared_tables()
        allocate(previous, policy)
        start = time.perf_counter()
        allocate(problem, policy)
        times.append(time.perf_counter() - start)
    return min(times)


if __name__ == "__main__":
    main()
