"""spfl.simulator.partition: cover/disjointness invariants, the min-size rule, determinism, label skew vs beta."""

from __future__ import annotations

import numpy as np
import pytest

from spfl.records import PARTITION_COLUMNS
from spfl.simulator.partition import (
    PARTITIONS,
    PartitionError,
    histogram_rows,
    label_histogram,
    label_skew,
    partition,
)

LABELS = np.repeat(np.arange(10), 500)  # 5,000 samples, 10 balanced classes


def _check_invariants(parts: list[np.ndarray], n: int, num_devices: int, min_size: int) -> None:
    assert len(parts) == num_devices
    for p in parts:
        assert p.dtype == np.int64 and np.all(np.diff(p) > 0)  # sorted, no repeats within a device
        assert len(p) >= min_size
    everything = np.concatenate(parts)
    assert len(everything) == n and np.array_equal(np.sort(everything), np.arange(n))  # disjoint + cover


@pytest.mark.parametrize("scheme", PARTITIONS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_invariants(scheme: str, seed: int) -> None:
    labels = np.random.default_rng(100 + seed).integers(0, 10, size=1437)  # unbalanced, odd size
    parts = partition(labels, 20, scheme, np.random.default_rng(seed), beta=0.5, min_size=10)
    _check_invariants(parts, len(labels), 20, 10)


@pytest.mark.parametrize("scheme", PARTITIONS)
def test_deterministic_given_seed(scheme: str) -> None:
    a = partition(LABELS, 7, scheme, np.random.default_rng(42))
    b = partition(LABELS, 7, scheme, np.random.default_rng(42))
    c = partition(LABELS, 7, scheme, np.random.default_rng(43))
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


def test_iid_sizes_near_equal() -> None:
    sizes = [len(p) for p in partition(np.zeros(1003, dtype=int), 10, "iid", np.random.default_rng(0))]
    assert max(sizes) - min(sizes) <= 1 and sum(sizes) == 1003


def test_shards_give_few_labels_per_device() -> None:
    parts = partition(LABELS, 20, "shards", np.random.default_rng(0), shards_per_device=2)
    assert [len(p) for p in parts] == [250] * 20  # 40 shards of 125, none dropped
    hist = label_histogram(LABELS, parts, 10)
    assert np.all((hist > 0).sum(axis=1) <= 2)  # 125-sample shards never straddle a 500-sample class


def test_dirichlet_min_size_rule_holds_when_redraws_are_needed() -> None:
    labels = np.repeat(np.arange(10), 30)  # 300 samples, 15 devices: about 80 % of single draws fail
    for seed in range(10):
        parts = partition(labels, 15, "dirichlet", np.random.default_rng(seed), beta=0.5, min_size=10,
                          max_attempts=1_000)
        _check_invariants(parts, 300, 15, 10)


def test_dirichlet_skew_decreases_with_beta() -> None:
    """Mean total-variation distance from the pooled label mix, averaged over 5 seeds.

    Per-seed spread is <= 0.025 at K=20 on 5,000 samples, so a margin of 0.05 between the 5-seed means of
    consecutive betas is safe; measured means are about 0.70, 0.45, 0.16, 0.04.
    """
    def mean_skew(beta: float) -> float:
        return float(np.mean([
            label_skew(label_histogram(LABELS, partition(LABELS, 20, "dirichlet", np.random.default_rng(s),
                                                         beta=beta), 10))
            for s in range(5)]))

    skews = [mean_skew(b) for b in (0.1, 0.5, 5.0, 100.0)]
    assert all(hi - lo > 0.05 for hi, lo in zip(skews, skews[1:], strict=False)), skews
    assert skews[-1] < 0.1 and skews[0] > 0.5, skews


def test_dirichlet_infeasible_raises_partition_error() -> None:
    labels = np.zeros(20, dtype=int)  # one class: Dir(0.001) puts it all on one device
    with pytest.raises(PartitionError) as exc:
        partition(labels, 2, "dirichlet", np.random.default_rng(0), beta=0.001, min_size=5, max_attempts=50)
    msg = str(exc.value)
    assert "\n" not in msg and isinstance(exc.value, ValueError)
    for part in ("num_devices=2", "beta=0.001", "min_size=5", "20 samples", "50 attempts"):
        assert part in msg


@pytest.mark.parametrize(("kwargs", "needle"), [
    ({"num_devices": 0}, "num_devices=0"),
    ({"scheme": "pathological"}, "scheme='pathological'"),
    ({"beta": 0.0}, "beta=0.0"),
    ({"beta": float("nan")}, "beta=nan"),
    ({"min_size": 0}, "min_size=0"),
    ({"num_devices": 11, "min_size": 10}, "11 * 10"),
    ({"scheme": "shards", "shards_per_device": 0}, "shards_per_device=0"),
    ({"scheme": "shards", "num_devices": 10, "shards_per_device": 8, "min_size": 9}, "min_size=9"),
    ({"max_attempts": 0}, "max_attempts=0"),
    ({"labels": np.zeros((10, 10), dtype=int)}, "1-D integer"),
    ({"labels": np.full(100, 0.5)}, "1-D integer"),
])
def test_invalid_arguments_rejected_before_drawing(kwargs: dict, needle: str) -> None:
    args = {"labels": np.arange(100) % 10, "num_devices": 5, "scheme": "dirichlet", "min_size": 1} | kwargs
    rng = np.random.default_rng(0)
    before = rng.bit_generator.state
    with pytest.raises(PartitionError) as exc:
        partition(args.pop("labels"), args.pop("num_devices"), args.pop("scheme"), rng, **args)
    assert needle in str(exc.value) and "\n" not in str(exc.value)
    assert rng.bit_generator.state == before


def test_histogram_and_rows() -> None:
    parts = partition(LABELS, 4, "dirichlet", np.random.default_rng(1), beta=0.5)
    hist = label_histogram(LABELS, parts, 10)
    assert hist.shape == (4, 10) and hist.dtype == np.int64
    assert np.array_equal(hist.sum(axis=0), np.bincount(LABELS)) and list(hist.sum(axis=1)) == [
        len(p) for p in parts]
    rows = list(histogram_rows(hist))
    assert PARTITION_COLUMNS == ("device", "label", "count") and len(rows) == 40
    assert rows[13] == (1, 3, int(hist[1, 3])) and all(type(v) is int for v in rows[13])
    with pytest.raises(PartitionError, match="num_classes"):
        label_histogram(LABELS, parts, 5)


def test_label_skew_extremes() -> None:
    assert label_skew(np.array([[5, 5], [5, 5]])) == 0.0
    assert label_skew(np.array([[10, 0], [0, 10]])) == pytest.approx(0.5)
