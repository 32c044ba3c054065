"""Splitting a training set across the K federated devices (docs/model.md, section 10).

Schemes:
- ``iid``: a random permutation cut into K near-equal parts (sizes differ by at most one).
- ``dirichlet``: label skew after Hsu et al. (2019): for each class, the shares of the K devices are drawn
  from Dir(beta); small beta gives devices few classes, large beta approaches iid. Whole draws are
  repeated (from the same generator, so the result is still a pure function of the seed) until every
  device holds at least ``min_size`` samples.
- ``shards``: McMahan et al. (2017): samples sorted by label (ties in random order) are cut into
  K * shards_per_device contiguous shards that are dealt at random, shards_per_device to each device.
  ``np.array_split`` makes the shards near-equal (sizes differ by at most one), so unlike the original
  recipe no remainder is dropped: every scheme assigns every sample to exactly one device.

All randomness comes from the ``rng`` argument; inputs are validated before anything is drawn, so an
invalid call never advances the generator.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from spfl.vocabulary import PARTITIONS


class PartitionError(ValueError):
    """Invalid partition arguments, or no admissible partition found; the message is one line."""


def _validate(labels: np.ndarray, num_devices: int, scheme: str, beta: float, min_size: int,
              shards_per_device: int, max_attempts: int) -> None:
    if scheme not in PARTITIONS:
        raise PartitionError(f"partition: scheme={scheme!r} is unknown; allowed: {', '.join(PARTITIONS)}")
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise PartitionError(f"partition: labels must be a 1-D integer array, got dtype {labels.dtype} "
                             f"shape {labels.shape}")
    n = len(labels)
    if n and labels.min() < 0:
        raise PartitionError(f"partition: labels must be >= 0, found {labels.min()}")
    if not isinstance(num_devices, (int, np.integer)) or num_devices < 1:
        raise PartitionError(f"partition: num_devices={num_devices!r} is invalid; allowed: integer >= 1")
    if not isinstance(min_size, (int, np.integer)) or min_size < 1:
        raise PartitionError(f"partition: min_size={min_size!r} is invalid; allowed: integer >= 1")
    if num_devices * min_size > n:
        raise PartitionError(f"partition: num_devices * min_size = {num_devices} * {min_size} exceeds the "
                             f"{n} samples; allowed: num_devices * min_size <= {n}")
    if not isinstance(max_attempts, (int, np.integer)) or max_attempts < 1:
        raise PartitionError(f"partition: max_attempts={max_attempts!r} is invalid; allowed: integer >= 1")
    if scheme == "dirichlet" and not (math.isfinite(beta) and beta > 0):
        raise PartitionError(f"partition: beta={beta!r} is invalid; allowed: finite number > 0")
    if scheme == "shards":
        if not isinstance(shards_per_device, (int, np.integer)) or shards_per_device < 1:
            raise PartitionError(f"partition: shards_per_device={shards_per_device!r} is invalid; "
                                 f"allowed: integer >= 1")
        num_shards = num_devices * shards_per_device
        smallest = shards_per_device * (n // num_shards)
        if smallest < min_size:
            raise PartitionError(f"partition: shards_per_device={shards_per_device} with num_devices="
                                 f"{num_devices} on {n} samples gives a device only {smallest} samples "
                                 f"< min_size={min_size}; allowed: shards_per_device * floor({n} / "
                                 f"(num_devices * shards_per_device)) >= min_size")


def _iid(n: int, num_devices: int, rng: np.random.Generator) -> list[np.ndarray]:
    return np.array_split(rng.permutation(n), num_devices)


def _dirichlet_once(labels: np.ndarray, num_devices: int, beta: float,
                    rng: np.random.Generator) -> list[np.ndarray]:
    """One draw: each class's samples, shuffled, are cut at the cumulative Dir(beta) shares."""
    buckets: list[list[np.ndarray]] = [[] for _ in range(num_devices)]
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        shares = rng.dirichlet(np.full(num_devices, beta))
        cuts = (np.cumsum(shares)[:-1] * len(idx)).astype(np.int64)
        for dev, chunk in enumerate(np.split(idx, cuts)):
            buckets[dev].append(chunk)
    return [np.concatenate(b) for b in buckets]


def _shards(labels: np.ndarray, num_devices: int, shards_per_device: int,
            rng: np.random.Generator) -> list[np.ndarray]:
    perm = rng.permutation(len(labels))
    order = perm[np.argsort(labels[perm], kind="stable")]  # by label, random order within a label
    shards = np.array_split(order, num_devices * shards_per_device)
    deal = rng.permutation(len(shards)).reshape(num_devices, shards_per_device)
    return [np.concatenate([shards[s] for s in row]) for row in deal]


def partition(labels: np.ndarray, num_devices: int, scheme: str, rng: np.random.Generator, *,
              beta: float = 0.5, min_size: int = 10, shards_per_device: int = 2,
              max_attempts: int = 100) -> list[np.ndarray]:
    """Split sample indices 0..N-1 across ``num_devices`` devices; returns each device's sorted indices.

    Every sample goes to exactly one device and every device gets at least ``min_size`` samples (for
    iid and shards this follows from the validated sizes, for dirichlet from redrawing).
    """
    labels = np.asarray(labels)
    _validate(labels, num_devices, scheme, beta, min_size, shards_per_device, max_attempts)
    n = len(labels)
    if scheme == "iid":
        parts = _iid(n, num_devices, rng)
    elif scheme == "shards":
        parts = _shards(labels, num_devices, shards_per_device, rng)
    else:
        for _ in range(max_attempts):
            parts = _dirichlet_once(labels, num_devices, beta, rng)
            if min(len(p) for p in parts) >= min_size:
                break
        else:
            raise PartitionError(
                f"partition: dirichlet with num_devices={num_devices}, beta={beta}, min_size={min_size} on "
                f"{n} samples left a device below min_size in all {max_attempts} attempts; raise beta, "
                f"lower min_size or num_devices, or raise max_attempts")
    return [np.sort(p).astype(np.int64) for p in parts]


def label_histogram(labels: np.ndarray, parts: list[np.ndarray], num_classes: int) -> np.ndarray:
    """Counts of each label on each device, shape (num_devices, num_classes)."""
    labels = np.asarray(labels)
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise PartitionError(f"label_histogram: labels span [{labels.min()}, {labels.max()}]; allowed: "
                             f"[0, num_classes - 1] = [0, {num_classes - 1}]")
    hist = np.zeros((len(parts), num_classes), dtype=np.int64)
    for dev, idx in enumerate(parts):
        hist[dev] = np.bincount(labels[idx], minlength=num_classes)
    return hist


def histogram_rows(hist: np.ndarray) -> Iterator[tuple[int, int, int]]:
    """Tidy (device, label, count) rows of a label histogram, for partition.csv (records.PARTITION_COLUMNS)."""
    for dev, row in enumerate(np.asarray(hist)):
        for label, count in enumerate(row):
            yield dev, label, int(count)


def label_skew(hist: np.ndarray) -> float:
    """Mean total-variation distance between each device's label distribution and the pooled one.

    0 for identical label mixes, up to 1 - (smallest class share) when each device holds a single class;
    a one-number summary of how non-iid a partition is.
    """
    hist = np.asarray(hist, dtype=np.float64)
    pooled = hist.sum(axis=0) / hist.sum()
    local = hist / hist.sum(axis=1, keepdims=True)
    return float(0.5 * np.abs(local - pooled).sum(axis=1).mean())
