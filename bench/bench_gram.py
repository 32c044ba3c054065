"""What the descent surrogate's Gram matrix costs per round on the CIFAR CNN (d = 878,538), at K = 20 and 100.

Times, in one process and interleaved (median of ``--repeats`` after a warm-up), the allocator's Gram
matrix of [g_1..g_K, r_1..r_K] exact (``gram: exact``: a float64 product in column chunks, 4 K^2 d
multiply-adds, 1.4 / 35 GFLOP at K = 20 / 100 counting multiply and add) and from CountSketches
(``gram: sketch``, m = 4096), against the reference every round pays anyway: one aggregation of the
K uploads (``weights @ uploads``).  Reported as ratios to that reference, with the sketch's relative
error on the off-diagonal entries and its control-channel bits next to one gradient's.

    .venv/bin/python bench/bench_gram.py [--repeats 5] [--devices 20,100] [--out bench/out/gram.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from spfl.simulator.gram import CountSketch, control_bits, gram_matrix
from spfl.simulator.transmission import signs

DIM = 878_538  # the CIFAR CNN's parameters (docs/model.md, section 10)


def _time(function, repeats: int) -> float:
    function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(num: int, repeats: int, size: int = 4096) -> dict:
    gen = torch.Generator().manual_seed(num)
    common = torch.randn(DIM, generator=gen)
    uploads = (common + 3.0 * torch.randn(num, DIM, generator=gen)) * 1e-3
    others = signs(uploads) * uploads.abs().mean(dim=0)
    weights = torch.full((num,), 1.0 / num)
    sketch = CountSketch(DIM, size, np.random.SeedSequence(0))
    torch.set_num_threads(1)
    reference = _time(lambda: weights @ uploads, repeats)
    exact_s = _time(lambda: gram_matrix(uploads, others, None), repeats)
    sketch_s = _time(lambda: gram_matrix(uploads, others, sketch), repeats)
    exact = gram_matrix(uploads, others, None)
    estimate = gram_matrix(uploads, others, sketch)
    off = ~np.eye(2 * num, dtype=bool)
    scale = np.sqrt(np.outer(np.diag(exact), np.diag(exact)))[off]
    return {
        "devices": num, "dim": DIM, "sketch_size": size,
        "aggregation_ms": 1000 * reference, "exact_ms": 1000 * exact_s, "sketch_ms": 1000 * sketch_s,
        "exact_over_aggregation": exact_s / reference, "sketch_over_aggregation": sketch_s / reference,
        "exact_over_sketch": exact_s / sketch_s,
        "offdiagonal_error_rms_relative_to_norms": float(np.sqrt(np.mean(((estimate - exact)[off] / scale) ** 2))),
        "control_bits_per_device": control_bits(1, 2, size), "gradient_bits": 32 * DIM,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--devices", default="20,100")
    parser.add_argument("--out", default="bench/out/gram.json")
    args = parser.parse_args()
    rows = [measure(int(n), args.repeats) for n in args.devices.split(",")]
    for row in rows:
        print(f"K = {row['devices']}: aggregation {row['aggregation_ms']:.0f} ms; exact Gram "
              f"{row['exact_over_aggregation']:.1f}x it, sketched {row['sketch_over_aggregation']:.1f}x "
              f"(exact / sketch {row['exact_over_sketch']:.1f}x); sketch error "
              f"{row['offdiagonal_error_rms_relative_to_norms']:.4f} of ||x|| ||y||; "
              f"{row['control_bits_per_device'] / row['gradient_bits']:.2%} of a gradient's bits")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
