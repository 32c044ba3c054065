"""The compiled packet level (spfl.simulator.allocation.level_kernels, packet.entry_best, the link's
threshold kernel) gives what the numpy forms it replaced give: the same thresholds and per-entry maxima bit
for bit, and the same separable solves (shares, powers, sign shares) to 1e-12 on block-fading problems of
every kind (the numpy path is kept for per-packet fading, so it is the reference here)."""

from dataclasses import replace

import numpy as np
import pytest

from allocation_cases import benchmark_case
from spfl.simulator.allocation.packet import BlockPacket, entry_best
from spfl.simulator.allocation.separable import PacketLevel, solve_bandwidth
from spfl.simulator.channel import failure_threshold, threshold_kernel


def test_threshold_kernel_is_the_link_model():
    """The kernel the compiled loops call and ``failure_threshold`` are one function: equal bit for bit,
    dead packets (no bandwidth, power or time; an overflowing 2^x - 1) included."""
    rng = np.random.default_rng(5)
    count = 3000
    bandwidth = 10 ** rng.uniform(2, 7, count) * (rng.random(count) > 0.05)
    power = 10 ** rng.uniform(-4, 0, count) * (rng.random(count) > 0.05)
    gain, bits = 10 ** rng.uniform(-15, -9, count), 10 ** rng.uniform(2, 9, count)
    slot = rng.uniform(0, 0.2, count) * (rng.random(count) > 0.05)
    for model, outage in (("outage", True), ("waterfall", False)):
        expected = failure_threshold(bandwidth, power, gain, bits, slot, 4e-21, model, 1.7)
        got = [threshold_kernel(*args, 4e-21, outage, 1.7) for args in zip(bandwidth, power, gain, bits, slot)]
        assert np.array_equal(np.array(got), expected), model
    assert np.isinf(expected[bandwidth == 0]).all()


def test_entry_maximum_without_table_is_the_tabled_one():
    """``entry_best`` (one entry, table computed on the way) and ``BlockPacket.best`` (tables kept) agree bit
    for bit, over thresholds of seven decades, coefficients of either sign or zero, dead and single
    packets."""
    rng = np.random.default_rng(8)
    count = 20000
    A, M = 10 ** rng.uniform(-4, 3, count), 10 ** rng.uniform(-4, 3, count)
    M[::40], A[::53] = np.inf, 800.0
    a = 10 ** rng.uniform(-3, 3, count) * np.where(rng.random(count) < 0.2, -1, 1) * (rng.random(count) > 0.02)
    b = 10 ** rng.uniform(-3, 3, count) * np.where(rng.random(count) < 0.2, -1, 1) * (rng.random(count) > 0.02)
    value, x = BlockPacket(A, M).best(a, b)
    single = np.array([entry_best(*args) for args in zip(A, M, a, b)])
    assert np.array_equal(single[:, 0], value) and np.array_equal(single[:, 1], x)


def _numpy_level(problem):
    level = PacketLevel(problem)
    level.compiled = False
    return level


def _block_cases(count: int):
    """Block-fading benchmark problems (descent, Jensen, every share mode, single packets, degenerate
    devices) with coefficient sets from the problem's own linearization and perturbed ones."""
    found, index = [], 0
    while len(found) < count:
        problem, _ = benchmark_case(index)
        index += 7
        if problem.fading != "block" and problem.two_packets:
            continue
        from spfl.simulator.allocation.evaluation import evaluator_for
        every = np.ones((1, problem.num_devices))
        sign, both = evaluator_for(problem).coefficients(every, every * problem.two_packets)
        rng = np.random.default_rng(index)
        scale = rng.lognormal(0.0, 0.5, (2, problem.num_devices)) * np.where(
            rng.random((2, problem.num_devices)) < 0.1, -1.0, 1.0)
        found.append((problem, np.vstack([sign, sign * scale[0]]), np.vstack([both, both * scale[1]])))
    return found


@pytest.mark.parametrize("fixed", [False, True])
def test_compiled_separable_solve_matches_numpy(fixed):
    """solve_bandwidth and the split with the sign-share zoom: the compiled loops against the numpy forms
    (tables over the grid, zooms, ``_Table.split``), on 40 block-fading problems, two coefficient sets
    each: the same shares and splits to 1e-12 (relative to each array's scale)."""
    for problem, sign, both in _block_cases(40):
        with np.errstate(all="ignore"):
            compiled = solve_bandwidth(PacketLevel(problem), sign, both, fixed)
            reference = solve_bandwidth(_numpy_level(problem), sign, both, fixed)
        _assert_close(compiled, reference, problem)
        bandwidth = np.full(sign.shape, problem.total_bandwidth / problem.num_devices)
        with np.errstate(all="ignore"):
            got = PacketLevel(problem).split(bandwidth, sign, both, fixed=fixed)
            expected = _numpy_level(problem).split(bandwidth, sign, both, fixed=fixed)
        _assert_close((np.zeros(1), got), (np.zeros(1), expected), problem)


def test_compiled_split_zooms_the_sign_share():
    """With tau optimized the split zooms each device's share: the compiled split keeps the numpy one's
    shares to 1e-12, and a split without the zoom is never better (a planted change of the zoom's step or
    order would move the shares)."""
    problem, sign, both = next(case for case in _block_cases(60) if case[0].slot_share is None
                               and case[0].two_packets)
    bandwidth = np.full(sign.shape, problem.total_bandwidth / problem.num_devices)
    with np.errstate(all="ignore"):
        zoomed = PacketLevel(problem).split(bandwidth, sign, both, fixed=False)
        plain = PacketLevel(problem).split(bandwidth, sign, both, fixed=False, refine=False)
        expected = _numpy_level(problem).split(bandwidth, sign, both, fixed=False)
    np.testing.assert_allclose(zoomed.slot_share, expected.slot_share, rtol=1e-12)
    assert np.all(zoomed.value >= plain.value)
    assert np.any(zoomed.slot_share != plain.slot_share)


def _assert_close(got, expected, problem):
    share, split = got
    share_ref, split_ref = expected
    np.testing.assert_allclose(share, share_ref, rtol=1e-12, atol=1e-15)
    for field in ("value", "power_sign", "power_modulus", "slot_share"):
        a, b = getattr(split, field), getattr(split_ref, field)
        scale = max(float(np.max(np.abs(b))), 1e-300)
        assert np.all(np.abs(a - b) <= 1e-12 * scale), (field, problem.num_devices, np.max(np.abs(a - b)) / scale)


def test_per_packet_fading_keeps_the_numpy_search():
    """Per-packet fading has no closed form: its levels are not compiled."""
    problem, _ = next(case for case in (benchmark_case(i) for i in range(200))
                      if case[0].fading == "per_packet" and case[0].two_packets)
    assert not PacketLevel(problem).compiled
    assert PacketLevel(replace(problem, fading="block")).compiled
