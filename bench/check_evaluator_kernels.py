"""The compiled evaluator (allocation/evaluation.py + evaluation_kernels.py) against the numpy one it
replaced (evaluation.py at git revision ``OLD_REVISION``) on the fixed benchmark set.

    python bench/check_evaluator_kernels.py [--cases 1200] [--points 4] [--json bench/out/evaluator_check.json]

Every case of tests/allocation_cases.py (K = 2-100, both surrogates, both normalizations, degenerate
devices) is evaluated at ``--points`` random batches (B = 1, 2, 5, ... in turn; pi_sign uniform in
[0, 1], pi_both = pi_sign u, and about one entry in six set to exactly 0 or 1 in each) by phi,
coefficients and phi_coefficients of both.  The difference of a row is measured relative to the scale
of the row: |new - old| / (scale + 1e-300), where the scale of a coefficient row is max |old| over the
row, and the scale of Phi is the largest of |Phi| and of its parts' sizes (the descent surrogate's
linear part and c times its quadratic part; the Jensen surrogate's sum_k |a_k| pi_sign,k G_k +
|b_k| pi_both,k G_k), because Phi is their difference and may cancel to near 0 (where |new - old| /
|Phi| is also reported, as "plain").  Reported: the largest per method (and
where), and whether any new value is not finite where the old one is; exit status 1 if any difference
exceeds ``TOLERANCE`` or a NaN appears.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))
from allocation_cases import BENCHMARK_SIZE, benchmark_case  # noqa: E402
from solver_at_revision import load_module  # noqa: E402
from spfl.simulator.allocation.evaluation import evaluator_for  # noqa: E402

OLD_REVISION = "3d3cc94"   # the numpy evaluator
TOLERANCE = 1e-12
BATCHES = (1, 2, 5)


def load_old_evaluation(revision: str = OLD_REVISION):
    """evaluation.py at ``revision`` as a module of its own (it imports numpy and .descent only)."""
    return load_module(revision, "src/spfl/simulator/allocation/evaluation.py")


def sample_points(rng: np.random.Generator, rows: int, num: int):
    """(pi_sign, pi_both), (rows, K): uniform, with exact 0s and 1s mixed in."""
    pi_sign = rng.random((rows, num))
    pi_both = pi_sign * rng.random((rows, num))
    for array in (pi_sign, pi_both):
        pick = rng.random((rows, num))
        array[pick < 0.08] = 0.0
        array[pick > 0.92] = 1.0
    if rng.random() < 0.2:  # a point where every device is certain to arrive
        pi_sign[0], pi_both[0] = 1.0, 1.0
    return pi_sign, pi_both


def phi_scale(old, pi_sign, pi_both) -> np.ndarray:
    """The size of Phi's parts at each row, from the old evaluator with a part switched off."""
    part = copy.copy(old)
    if hasattr(old, "eta"):   # descent: eta = 0 leaves -c (quadratic part), c = 0 the linear part
        part.eta = 0.0
        quadratic = np.abs(part.phi(pi_sign, pi_both))
        part.eta, part.c = old.eta, 0.0
        return np.maximum(np.abs(part.phi(pi_sign, pi_both)), quadratic)
    part.a, part.b = np.abs(old.a), np.abs(old.b)
    return np.abs(part.phi(pi_sign, pi_both))


def relative(new, old, scale=None) -> tuple[float, bool]:
    """Largest |new - old| relative to the scale (default max |old| of the row), and whether new is
    non-finite where old is finite."""
    new, old = np.atleast_1d(np.asarray(new, dtype=float)), np.atleast_1d(np.asarray(old, dtype=float))
    if scale is None:
        scale = np.max(np.abs(old), axis=-1, keepdims=True) if old.ndim > 1 else np.abs(old)
    else:
        scale = np.maximum(np.abs(old), scale)
    bad = bool(np.any(np.isfinite(old) & ~np.isfinite(new)))
    finite = np.isfinite(old) & np.isfinite(new)
    diff = np.where(finite, np.abs(new - old), 0.0) / (scale + 1e-300)
    return float(np.max(diff, initial=0.0)), bad


def check(cases, points: int, seed: int = 0):
    old_module = load_old_evaluation()
    worst = {}
    nonfinite = []
    for index in cases:
        problem, _ = benchmark_case(index)
        old, new = old_module.evaluator_for(problem), evaluator_for(problem)
        rng = np.random.default_rng([seed, index])
        for repeat in range(points):
            rows = BATCHES[repeat % len(BATCHES)]
            pi_sign, pi_both = sample_points(rng, rows, problem.num_devices)
            results = {"phi": (new.phi(pi_sign, pi_both), old.phi(pi_sign, pi_both))}
            for method in ("coefficients", "phi_coefficients"):
                got, want = getattr(new, method)(pi_sign, pi_both), getattr(old, method)(pi_sign, pi_both)
                for part, (a, b) in enumerate(zip(got, want)):
                    results[f"{method}[{part}]"] = (a, b)
            kind = ("descent" if problem.descent is not None else "jensen") + "/" + problem.normalize
            scale = phi_scale(old, pi_sign, pi_both)
            results["phi (plain)"] = results["phi"]
            for name, (a, b) in results.items():
                phi_like = name in ("phi", "phi_coefficients[0]")
                diff, bad = relative(a, b, scale if phi_like else None)
                key = f"{name} {kind}"
                if bad:
                    nonfinite.append((index, key))
                if diff >= worst.get(key, (-1.0,))[0]:
                    worst[key] = (diff, index, rows)
    return worst, nonfinite


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=BENCHMARK_SIZE)
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--step", type=int, default=1)
    parser.add_argument("--points", type=int, default=4)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    cases = range(args.start, min(args.start + args.cases, BENCHMARK_SIZE), args.step)
    worst, nonfinite = check(cases, args.points)
    print(f"{len(cases)} cases x {args.points} batches; |new - old| / max|old| per row, largest:")
    for key in sorted(worst):
        diff, index, rows = worst[key]
        print(f"  {key:40s} {diff:.3e}  (case {index}, B = {rows})")
    overall = max(d for key, (d, _, _) in worst.items() if "plain" not in key)
    print(f"largest: {overall:.3e} (tolerance {TOLERANCE:g}); non-finite where old finite: {len(nonfinite)}"
          + (f" e.g. {nonfinite[:5]}" if nonfinite else ""))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"worst": worst, "nonfinite": nonfinite, "cases": len(cases),
                                         "points": args.points}, indent=1))
    return int(overall > TOLERANCE or bool(nonfinite))


if __name__ == "__main__":
    sys.exit(main())
