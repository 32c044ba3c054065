"""The compiled search (allocation/search_kernel.py) and the compiled stages it added: each gives, bit for bit,
what the Python form it replaces gives (or, where only numpy's exponential differs from the C library's,
the same numbers to 2 units in the last place)."""

import threading
from dataclasses import replace

import numpy as np
import pytest
from allocation_cases import BENCHMARK_SIZE, benchmark_case, speed_problem

import spfl.simulator.allocation.level_kernels as level_kernels
import spfl.simulator.allocation.policies as policies
import spfl.simulator.allocation.separable as separable
from spfl.simulator.allocation import allocate, clear_shared_tables
from spfl.simulator.allocation.evaluation import evaluator_for
from spfl.simulator.allocation.evaluation_kernels import _matrix_rows, _matrix_rows_pair
from spfl.simulator.allocation.objective import arrival_probabilities, thresholds
from spfl.simulator.allocation.power import _geometry
from spfl.simulator.allocation.search_kernel import numpy_sum

SEARCHED = ("spfl", "power", "bandwidth")


def _arrays(allocation):
    return [np.asarray(v).tobytes() for v in (*allocation.arrays, allocation.objective, allocation.trace)]


def _compiled_cases(step: int):
    """Benchmark cases whose policy searches and whose packet level is compiled (block fading or one
    packet), with a policy that searches: every step-th."""
    for index in range(0, BENCHMARK_SIZE, step):
        problem, policy = benchmark_case(index)
        if problem.fading == "block" or not problem.two_packets:
            yield index, problem, policy if policy in SEARCHED else "spfl"


def test_compiled_search_is_the_lockstep_search_bit_for_bit(monkeypatch):
    """Every node structure (descent and Jensen, both normalizations, tau fixed, proportional or optimized,
    one packet, K = 2-100, each searching policy): the compiled search returns the lockstep search's
    allocation, objective and trace to the last bit."""
    compared = 0
    kinds = set()
    for index, problem, policy in _compiled_cases(4):
        compiled = allocate(problem, policy)
        monkeypatch.setattr(policies, "_search_compiled", policies._search_lockstep)
        clear_shared_tables()
        lockstep = allocate(problem, policy)
        monkeypatch.undo()
        assert _arrays(compiled) == _arrays(lockstep), (index, policy)
        compared += 1
        kinds.add((policy, problem.normalize, problem.descent is not None, problem.slot_share is None,
                   problem.two_packets))
    assert compared >= 150
    assert len(kinds) >= 20


@pytest.mark.parametrize("num", [2, 20, 100])
def test_compiled_search_on_default_rounds(monkeypatch, num):
    """The pipeline's default rounds (descent surrogate, received): both sign-share modes, every searching
    policy."""
    for seed in range(3):
        for share in ("proportional", "optimized"):
            problem = speed_problem(num, seed, share=share)
            for policy in SEARCHED:
                compiled = allocate(problem, policy)
                monkeypatch.setattr(policies, "_search_compiled", policies._search_lockstep)
                lockstep = allocate(problem, policy)
                monkeypatch.undo()
                assert _arrays(compiled) == _arrays(lockstep), (seed, share, policy)


def test_kept_grid_tables_change_no_answer():
    """A link's grid tables are kept for the next problems of that link (per thread): the second solve of a
    round, another round of the same link, and a solve in another thread (which builds its own) answer as
    a solve from scratch; a round of another link builds its own table."""
    problem = speed_problem(20, 1, share="optimized")
    other = speed_problem(20, 2, share="optimized")
    other_round = replace(problem, u_sign=other.u_sign, u_modulus=other.u_modulus, descent=other.descent)
    fresh = []
    for p in (problem, other_round):
        clear_shared_tables()
        fresh.append(_arrays(allocate(p, "spfl")))
    clear_shared_tables()
    assert _arrays(allocate(problem, "spfl")) == fresh[0]
    kept = dict(separable._SHARED.tables)
    assert len(kept) >= 1
    assert _arrays(allocate(problem, "spfl")) == fresh[0]
    assert _arrays(allocate(other_round, "spfl")) == fresh[1]
    assert dict(separable._SHARED.tables).keys() == kept.keys()    # the same link: no new table
    allocate(speed_problem(20, 3, share="optimized"), "spfl")       # another link
    assert len(separable._SHARED.tables) > len(kept)
    assert len(separable._SHARED.tables) <= separable._SHARED_TABLES
    answers = []
    worker = threading.Thread(target=lambda: answers.append(_arrays(allocate(other_round, "spfl"))))
    worker.start()
    worker.join()
    assert answers == [fresh[1]]


def test_numpy_sum_is_numpys_row_sum():
    """Pairwise in blocks of 128 with eight partial sums, halves rounded to multiples of 8: the same bits as
    numpy's sum of a contiguous row, on sizes below, at and above each boundary."""
    rng = np.random.default_rng(11)
    for size in [*range(1, 300), 383, 384, 385, 1000, 4097]:
        for _ in range(3):
            row = rng.random(size) * rng.lognormal(0.0, 3.0, size)
            row[rng.random(size) < 0.1] = 0.0
            assert numpy_sum(row) == row.reshape(1, -1).sum(axis=1)[0], size


def test_grid_tables_are_the_geometry_of_the_grid():
    """The grid's thresholds A, M at full power are :func:`_geometry`'s bit for bit (a level's received-power
    need computed once for all devices), and with equal packet powers the arrival probabilities those of
    :class:`.separable._Table` to 2 units in the last place (the C library's exponential), on every
    fading, packet count, power constraint and link of the benchmark set."""
    checked = 0
    for index in range(0, BENCHMARK_SIZE, 9):
        problem, _ = benchmark_case(index)
        level = separable.PacketLevel(problem)
        for fixed in (False, True):
            taus = level.taus(fixed, coarse=True)
            shape = (taus.size,) + level.grid.shape
            A, M, pi_sign, pi_both = (np.empty(shape) for _ in range(4))
            level_kernels.grid_tables(level.grid[:, 0].copy(), taus, level.gain, level.link, True, A, M, pi_sign,
                                      pi_both)
            with np.errstate(all="ignore"):
                _, _, _, A0, M0 = _geometry(problem, level.grid, taus.reshape(-1, 1, 1))
                table = separable._Table(problem, level.grid, taus.reshape(-1, 1, 1), True)
            assert A.tobytes() == np.broadcast_to(A0, shape).tobytes()
            assert M.tobytes() == np.broadcast_to(M0, shape).tobytes()
            for mine, numpys in ((pi_sign, table.pi_sign), (pi_both, table.pi_both)):
                np.testing.assert_array_max_ulp(mine, np.broadcast_to(numpys, shape), maxulp=2)
            checked += 1
    assert checked >= 200


def test_point_arrivals_are_the_link_models():
    """Arrival probabilities of candidate allocations: e^{-t} of the link model's thresholds
    (:func:`.objective.thresholds`, :func:`.objective.arrival_probabilities`) to 2 units in the last place,
    silent devices and a whole slot for the sign included."""
    rng = np.random.default_rng(4)
    for index in range(0, BENCHMARK_SIZE, 13):
        problem, _ = benchmark_case(index)
        num = problem.num_devices
        points = [rng.random((5, num)) * problem.total_bandwidth / num, rng.random((5, num)) * problem.max_power,
                  rng.random((5, num)) * problem.max_power, rng.random((5, num))]
        points[1][0, 0] = 0.0
        points[3][1] = 1.0
        sign, both = np.empty((5, num)), np.empty((5, num))
        level_kernels.point_arrivals(*points, np.ascontiguousarray(problem.gain), level_kernels.link_of(problem), sign,
                                     both)
        expected = arrival_probabilities(problem, *thresholds(problem, *points))
        np.testing.assert_array_max_ulp(sign, expected[0], maxulp=2)
        np.testing.assert_array_max_ulp(both, expected[1], maxulp=2)


def test_paired_matrix_rows_are_two_matrix_rows():
    """The coefficients' two products in one pass: the same bits as two calls of :func:`_matrix_rows`, on
    odd and even sizes (a last row alone) and sizes that are not multiples of 4."""
    rng = np.random.default_rng(8)
    for num in [*range(1, 12), 20, 63, 100, 101]:
        for count in (1, 7, 101):
            first, second, rows = rng.normal(size=(num, num)), rng.normal(size=(num, num)), rng.random((num, count))
            expected = [np.empty((num, count)) for _ in range(2)]
            _matrix_rows(first, rows, expected[0], False)
            _matrix_rows(second, rows, expected[1], False)
            got = [np.full((num, count), np.nan) for _ in range(2)]
            _matrix_rows_pair(first, second, rows, *got)
            assert got[0].tobytes() == expected[0].tobytes() and got[1].tobytes() == expected[1].tobytes()


def test_evaluator_with_paired_rows_still_matches_its_phi():
    """Phi from the coefficients' sums and from Phi's own sums agree to rounding at K = 100 (the paired
    products feed the first)."""
    problem = speed_problem(100, 2)
    evaluator = evaluator_for(problem)
    rng = np.random.default_rng(2)
    sign = rng.random((3, 100))
    both = sign * rng.random((3, 100))
    value, *_ = evaluator.phi_coefficients(sign, both)
    np.testing.assert_allclose(value, evaluator.phi(sign, both), rtol=1e-12)
