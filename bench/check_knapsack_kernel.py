"""The compiled knapsack (bandwidth.best_choices) against its numpy formulation at revision 3d3cc94.

    python bench/check_knapsack_kernel.py [--random 20000] [--step 3] [--revision 3d3cc94]

(a) Random batches: concave, S-shaped, flat, tied (rounded), noisy and nearly concave rows (rises under
the 1e-12 noise threshold), -inf prefixes and suffixes (the zooms) or holes, rows without a finite option
(refused), K = 1..100, S = 1..4, the grid's shapes (J + 1 options, total J), the zooms' (17 options,
total 8 K) and any others; a few with NaN or +inf too.  (b) Every input the solver gives best_choices on
every ``--step``-th case of the benchmark set (tests/allocation_cases.py), recorded while allocate runs.
Old and new must return the same choices (array_equal) or refuse with the same message; and allocate,
run once with the old and once with the new best_choices, must give the same objective, trace and arrays
bit for bit.  Exit status 1 on any mismatch.
"""

from __future__ import annotations

import argparse
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))
from allocation_cases import BENCHMARK_SIZE, benchmark_case  # noqa: E402
from solver_at_revision import load_module  # noqa: E402
from spfl.simulator.allocation import allocate, bandwidth, separable  # noqa: E402

REVISION = "3d3cc94"  # the last revision with the numpy best_choices
MODULE = "src/spfl/simulator/allocation/bandwidth.py"


def load_old(revision: str = REVISION):
    """bandwidth.py as it was at ``revision`` (its own imports are today's power and problem modules)."""
    return load_module(revision, MODULE)


@contextmanager
def solver_knapsack(function):
    """allocate's separable solves call ``function`` as best_choices."""
    saved = separable.best_choices
    separable.best_choices = function
    try:
        yield
    finally:
        separable.best_choices = saved


def record(cases):
    """Every (values, total) the solver gives best_choices while allocating the ``(problem, policy)`` cases."""
    inputs = []

    def recording(values, total):
        inputs.append((np.array(values, dtype=float), int(total)))
        return bandwidth.best_choices(values, total)

    with solver_knapsack(recording):
        for problem, policy in cases:
            allocate(problem, policy)
    return inputs


def outcome(function, values, total):
    """The choices, or the error raised (type and message)."""
    try:
        return function(values, total)
    except Exception as error:  # (NaN or +inf entries may make the old code fail otherwise)
        return f"{type(error).__name__}: {error}"


def same(a, b) -> bool:
    if isinstance(a, str) or isinstance(b, str):
        return isinstance(a, str) and isinstance(b, str) and a == b
    return a.dtype == b.dtype and np.array_equal(a, b)


def random_row(rng, options):
    """One device's values over ``options`` options, of a random kind."""
    steps = np.arange(options, dtype=float)
    kind = int(rng.integers(0, 9))
    scale = 10 ** rng.uniform(-6, 3)
    if kind == 0:    # concave
        row = np.sqrt(steps) * scale
    elif kind == 1:  # concave, saturating
        row = (1 - np.exp(-steps * rng.uniform(0.01, 1.0))) * scale
    elif kind == 2:  # flat (a silent device)
        row = np.zeros(options)
    elif kind in (3, 4):  # S-shaped (sigmoid-like), sometimes starting flat at zero
        row = scale / (1 + np.exp(-(steps - rng.uniform(0, options)) * rng.uniform(0.05, 3.0)))
        if kind == 4:
            row = np.where(row < scale * 0.05, 0.0, row)
    elif kind == 5:  # integers: exact ties everywhere
        row = rng.integers(0, 3, options).astype(float)
    elif kind == 6:  # concave integers: tied marginal gains
        row = np.cumsum(np.sort(rng.integers(0, 3, options))[::-1]).astype(float)
    elif kind == 7:  # linear and rounding noise: marginal gains rising within the threshold (concave)
        row = (steps + rng.uniform(-1e-14, 1e-14, options)) * scale
    else:            # noise
        row = rng.normal(size=options) * scale
    return row


def random_input(rng, odd: bool = False):
    """(values (S, K, options), total) of a random shape; ``odd``: NaN or +inf entries too."""
    num = int(rng.integers(1, 101)) if rng.random() < 0.4 else int(rng.integers(1, 25))
    batch = int(rng.integers(1, 5))
    shape = rng.integers(0, 3)
    if shape == 0:      # the grid
        options, total = bandwidth.grid_units(num) + 1, bandwidth.grid_units(num)
    elif shape == 1:    # a zoom
        options, total = 17, 8 * num
    else:
        options = int(rng.integers(1, 22))
        total = int(rng.integers(0, num * (options - 1) + 1)) if rng.random() < 0.95 else num * (options - 1) + 1
    values = np.array([[random_row(rng, options) for _ in range(num)] for _ in range(batch)])
    steps = np.arange(options)
    hole = rng.random()
    if hole < 0.3:      # -inf prefixes and suffixes, as in a zoom
        low = rng.integers(0, max(1, options // 2), (batch, num, 1))
        high = rng.integers(max(0, options // 2), options, (batch, num, 1))
        values[(steps < low) | (steps > high)] = -np.inf
    elif hole < 0.4:    # holes anywhere
        values[rng.random(values.shape) < 0.1] = -np.inf
    if rng.random() < 0.02:  # a row without a finite option
        values[int(rng.integers(batch)), int(rng.integers(num))] = -np.inf
    if odd:
        values[rng.random(values.shape) < 0.02] = rng.choice([np.nan, np.inf])
    return values, int(total)


def compare(old, inputs):
    """Mismatching inputs' indices among ``inputs``."""
    return [i for i, (values, total) in enumerate(inputs)
            if not same(outcome(old.best_choices, values, total), outcome(bandwidth.best_choices, values, total))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--random", type=int, default=20000)
    parser.add_argument("--odd", type=int, default=2000, help="random inputs with NaN or +inf entries")
    parser.add_argument("--step", type=int, default=3, help="every step-th benchmark case")
    parser.add_argument("--revision", default=REVISION)
    args = parser.parse_args()
    old = load_old(args.revision)
    failed = False
    rng = np.random.default_rng(2024)
    for label, count, odd in (("random", args.random, False), ("random, NaN / +inf", args.odd, True)):
        inputs = [random_input(rng, odd) for _ in range(count)]
        refused = sum(isinstance(outcome(old.best_choices, v, t), str) for v, t in inputs)
        bad = compare(old, inputs)
        print(f"{label}: {len(inputs)} inputs ({refused} refused), {len(bad)} mismatches")
        failed |= bool(bad) and not odd
    start = time.perf_counter()
    cases = [benchmark_case(i) for i in range(0, BENCHMARK_SIZE, args.step)]
    inputs = record(cases)
    bad = compare(old, inputs)
    shapes = {(v.shape[1], v.shape[2], t) for v, t in inputs}
    print(f"solver inputs of {len(cases)} benchmark cases: {len(inputs)} inputs ({len(shapes)} shapes), "
          f"{len(bad)} mismatches")
    failed |= bool(bad)
    changed = 0
    for problem, policy in cases:
        with solver_knapsack(old.best_choices):
            before = allocate(problem, policy)
        after = allocate(problem, policy)
        equal = (before.objective == after.objective and before.trace == after.trace
                 and all(np.array_equal(a, b) for a, b in zip(before.arrays, after.arrays)))
        changed += not equal
    print(f"allocations of {len(cases)} benchmark cases, old vs new knapsack: {changed} differ "
          f"(objective, trace, arrays bit for bit); {time.perf_counter() - start:.0f} s")
    failed |= bool(changed)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
