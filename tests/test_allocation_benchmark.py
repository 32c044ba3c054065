"""The solver on the fixed benchmark set (tests/allocation_cases.py): never below the solver it replaced,
and the same answer, bit for bit, in every call and every process.

The old solver's Phi on every fourth case is stored in tests/allocation_old_phi.json (written by
``python bench/check_allocation_phi.py --step 4 --write-reference tests/allocation_old_phi.json``, which
runs src/spfl/allocation at main f3914d3 read from git); bench/check_allocation_phi.py checks all 1,200.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from allocation_cases import BENCHMARK_SIZE, GENERATOR_VERSION, SIZES, benchmark_case
from allocation_reference import assert_consistent, assert_feasible
from spfl.simulator.allocation import allocate

REFERENCE = Path(__file__).with_name("allocation_old_phi.json")
TOLERANCE = 1e-6  # relative: the new Phi is never this much below the old one


def _reference() -> dict[int, float]:
    stored = json.loads(REFERENCE.read_text())
    assert stored["generator_version"] == GENERATOR_VERSION, "regenerate the reference with the generator"
    return {int(index): value for index, value in stored["old_phi"].items()}


def test_the_stored_subset_spans_the_benchmark_set():
    """Every fourth case: 300 problems, every size K, every policy, both surrogates and normalizations."""
    indices = sorted(_reference())
    assert indices == list(range(0, BENCHMARK_SIZE, 4))
    sizes, policies, kinds = set(), set(), set()
    for index in indices:
        problem, policy = benchmark_case(index)
        sizes.add(problem.num_devices)
        policies.add(policy)
        kinds.add((problem.descent is None, problem.normalize, problem.fading, problem.slot_share is None))
    assert sizes == set(SIZES) and len(policies) == 5 and len(kinds) == 16


def test_never_below_the_old_solver_on_every_fourth_benchmark_case():
    """Phi of the answer is at least the old solver's minus 1e-6 relative, and the answer is feasible
    with a monotone trace ending at its Phi."""
    below = []
    for index, old in _reference().items():
        problem, policy = benchmark_case(index)
        result = allocate(problem, policy)
        assert_feasible(problem, result)
        assert_consistent(problem, result)
        if result.objective < old - TOLERANCE * abs(old):
            below.append((index, result.objective, old))
    assert not below, below


def _digest(indices) -> str:
    """SHA-256 of every array and trace of the answers to the benchmark cases ``indices``."""
    digest = hashlib.sha256()
    for index in indices:
        problem, policy = benchmark_case(index)
        result = allocate(problem, policy)
        for array in result.arrays:
            digest.update(np.ascontiguousarray(array, dtype=float).tobytes())
        digest.update(np.array(result.trace, dtype=float).tobytes())
    return digest.hexdigest()


# One case per size, the spfl policy and optimized shares among them (K = 2 .. 100).
_DETERMINISM_CASES = [index for index in range(0, 68) if benchmark_case(index)[1] in ("spfl", "power")][:12]


def test_same_problem_same_answer_in_every_call():
    first = _digest(_DETERMINISM_CASES)
    assert _digest(_DETERMINISM_CASES) == first


def test_same_problem_same_answer_in_another_process():
    """A fresh interpreter (its own imports, caches and memory layout) gives the same bytes."""
    tests = str(Path(__file__).parent)
    script = f"import sys; sys.path.insert(0, {tests!r}); import test_allocation_benchmark as t; " \
             "print(t._digest(t._DETERMINISM_CASES))"
    other = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                           cwd=Path(__file__).parents[1]).stdout.strip()
    assert other == _digest(_DETERMINISM_CASES)
