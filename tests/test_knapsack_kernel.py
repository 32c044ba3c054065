"""The compiled best_choices (bandwidth.py's numba kernel) against the plain dynamic program, knapsack, on
the shapes the solver gives it: batches of rows, the grid (J + 1 options, total J) and the zooms (17
options, total 8 K, -inf outside [0, 1]), K up to 100.  (tests/test_allocation.py covers single small
rows; bench/check_knapsack_kernel.py checks the kernel's choices against the numpy formulation it
replaced, bit for bit.)"""

from __future__ import annotations

import numpy as np
import pytest

from spfl.simulator.allocation.bandwidth import best_choices, grid_units, knapsack


def _row(rng: np.random.Generator, options: int) -> np.ndarray:
    """One device's values: concave, S-shaped, flat, tied, linear with rounding noise (gains rising within
    the concavity threshold) or noise."""
    steps = np.arange(options, dtype=float)
    kind = int(rng.integers(0, 6))
    if kind == 0:
        return np.sqrt(steps) * rng.uniform(0.1, 2.0)
    if kind == 1:
        return 1.0 / (1.0 + np.exp(-(steps - rng.uniform(0, options)) * rng.uniform(0.05, 3.0)))
    if kind == 2:
        return np.zeros(options)
    if kind == 3:
        return rng.integers(0, 3, options).astype(float)
    if kind == 4:
        return (steps + rng.uniform(-1e-14, 1e-14, options)) * rng.uniform(0.1, 2.0)
    return rng.normal(size=options)


def _batch(rng: np.random.Generator, num: int, options: int, zoom: bool) -> np.ndarray:
    values = np.array([[_row(rng, options) for _ in range(num)] for _ in range(int(rng.integers(1, 4)))])
    if zoom:   # impossible offsets below 0 or above 1 at the ends of a few rows
        steps, shape = np.arange(options), (*values.shape[:2], 1)
        low = np.where(rng.random(shape) < 0.3, rng.integers(1, options // 2, shape), 0)
        high = np.where(rng.random(shape) < 0.3, rng.integers(options // 2, options - 1, shape), options)
        values[(steps < low) | (steps > high)] = -np.inf
    return values


@pytest.mark.parametrize("zoom", [False, True], ids=["grid", "zoom"])
def test_best_choices_reaches_knapsacks_optimum_on_the_solvers_shapes(zoom):
    """Every row of a batch: options in range summing to the total, as good as knapsack's choice (within
    1e-12 of the values' scale per device), the same as solved alone; refused where knapsack finds no
    finite choice."""
    rng = np.random.default_rng(7 + zoom)
    solved = 0
    for num in (1, 2, 3, 5, 8, 13, 20, 33, 100):
        for _ in range(4 if num < 100 else 1):
            options, total = (17, 8 * num) if zoom else (grid_units(num) + 1, grid_units(num))
            values = _batch(rng, num, options, zoom)
            try:
                expected = np.array([knapsack(row, total) for row in values])
            except ValueError:
                with pytest.raises(ValueError, match="no choice of options"):
                    best_choices(values, total)
                continue
            chosen = best_choices(values, total)
            assert chosen.shape == (values.shape[0], num) and chosen.dtype == np.intp
            assert np.all(chosen.sum(axis=1) == total) and np.all((chosen >= 0) & (chosen < options))
            for row, got, best in zip(values, chosen, expected):
                value, optimum = row[np.arange(num), got].sum(), row[np.arange(num), best].sum()
                scale = np.abs(row[np.isfinite(row)]).max()
                assert np.isfinite(value) and value >= optimum - 1e-12 * max(scale, 1e-300) * num
            for index, row in enumerate(values):
                np.testing.assert_array_equal(best_choices(row[None], total)[0], chosen[index])
            solved += 1
    assert solved >= 25


def test_best_choices_ties_and_impossible_options_inside():
    """Integer values (ties everywhere) and -inf anywhere, small rows: knapsack's optimum exactly."""
    rng = np.random.default_rng(11)
    for _ in range(300):
        num, options = int(rng.integers(1, 7)), int(rng.integers(1, 9))
        values = rng.integers(0, 3, (2, num, options)).astype(float)
        values[rng.random(values.shape) < 0.15] = -np.inf
        total = int(rng.integers(0, num * (options - 1) + 1))
        try:
            expected = [knapsack(row, total) for row in values]
        except ValueError:
            with pytest.raises(ValueError, match="no choice of options"):
                best_choices(values, total)
            continue
        chosen = best_choices(values, total)
        for row, got, best in zip(values, chosen, expected):
            assert got.sum() == total
            assert row[np.arange(num), got].sum() == row[np.arange(num), best].sum()


def test_best_choices_refusals_by_message():
    with pytest.raises(ValueError) as beyond:
        best_choices(np.zeros((1, 2, 3)), 5)
    assert str(beyond.value) == "knapsack total 5 exceeds what 2 devices x 2 can reach"
    none = "knapsack: no choice of options summing to {} has a finite value"
    impossible = np.zeros((2, 3, 4))
    impossible[1, 2] = -np.inf                       # a device without a possible option, in the second row
    ends = np.zeros((1, 2, 4))
    ends[0, :, 2:] = -np.inf                          # at most 1 + 1 units reachable
    s_shaped = np.array([[[0.0, 0.0, 1.0, -np.inf], [0.0, 0.0, 1.0, -np.inf], [0.0, 1.0, 0.0, 2.0]]])
    s_shaped[0, 2, 3] = -np.inf                       # non-concave devices only, at most 6 units reachable
    for values, total in ((impossible, 3), (ends, 3), (s_shaped, 7), (np.zeros((1, 2, 3)), -1)):
        with pytest.raises(ValueError) as error:
            best_choices(values, total)
        assert str(error.value) == none.format(total)
    assert best_choices(ends, 2).tolist() == [[1, 1]]
    assert best_choices(s_shaped, 6).tolist() == [[2, 2, 2]]


def test_best_choices_gives_equally_good_units_to_the_earlier_devices():
    """Ties between concave devices go to the earlier device (the stable order of marginal gains), and
    between the two groups to the concave devices (the first best split: the fewest units to the dynamic
    program's devices)."""
    linear, root, flat = (np.tile(row, (1, 3, 1)) for row in (np.arange(3.0), np.sqrt(np.arange(3.0)), np.zeros(3)))
    assert best_choices(linear, 4).tolist() == [[2, 2, 0]]
    assert best_choices(root, 4).tolist() == [[2, 1, 1]]
    assert best_choices(flat, 4).tolist() == [[2, 2, 0]]
    mixed = np.array([[[0.0, 0.0, 2.0], [0.0, 1.0, 2.0], [0.0, 1.0, 2.0]]])   # device 0 is not concave
    assert best_choices(mixed, 2).tolist() == [[0, 2, 0]]
    assert best_choices(mixed, 4).tolist() == [[0, 2, 2]]
