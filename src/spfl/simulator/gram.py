"""What the allocator knows of the devices' gradients: the Gram matrix of the descent surrogate.

The descent surrogate (spfl.simulator.allocation.descent) needs every pairwise inner product of the 2K vectors
[g_1 .. g_K, r_1 .. r_K] (a device's gradient and the other vector its rule may use).  Before the
round each device reports, on the error-free control channel, its own three numbers ||g_k||^2,
<g_k, r_k>, ||r_k||^2 and a CountSketch of each vector it holds (``gram: sketch``): m entries
(``sketch_size``) S x = sum_i sigma(i) x_i e_{h(i)}, one seeded hash h and sign sigma per run, so
<S x, S y> is an unbiased estimate of <x, y> with variance
(||x||^2 ||y||^2 + <x, y>^2 - 2 sum_i x_i^2 y_i^2) / m.  ``gram: exact`` gives the allocator the true inner products (an
analysis option: the PS cannot have them without the gradients themselves).
"""

from __future__ import annotations

import numpy as np
import torch

BITS_PER_ENTRY = 32
OWN_SCALARS = 3   # ||g_k||^2, <g_k, r_k>, ||r_k||^2, reported exactly
_CHUNK = 1 << 16  # columns per float64 product of the exact Gram matrix


class CountSketch:
    """A seeded CountSketch of d-entry vectors into m buckets (the same for every method of a seed)."""

    def __init__(self, dim: int, size: int, seed: np.random.SeedSequence, device: torch.device | str = "cpu"):
        rng = np.random.default_rng(seed)
        self.dim, self.size = int(dim), int(size)
        self.bucket = torch.from_numpy(rng.integers(0, self.size, self.dim)).to(device)
        self.sign = torch.from_numpy(rng.choice(np.array([-1.0, 1.0]), self.dim)).to(device)

    def apply(self, vectors: torch.Tensor) -> torch.Tensor:
        """(n, d) -> (n, m) in float64, a chunk of columns at a time."""
        out = torch.zeros(vectors.shape[0], self.size, dtype=torch.float64, device=vectors.device)
        for start in range(0, self.dim, _CHUNK):
            part = slice(start, start + _CHUNK)
            out.index_add_(1, self.bucket[part], vectors[:, part].double() * self.sign[part])
        return out


def exact_gram(vectors: torch.Tensor) -> np.ndarray:
    """sum over column chunks of V V^T in float64 (n x n), without a float64 copy of all of V."""
    n, d = vectors.shape
    gram = torch.zeros(n, n, dtype=torch.float64, device=vectors.device)
    for start in range(0, d, _CHUNK):
        block = vectors[:, start:start + _CHUNK].double()
        gram += block @ block.T
    return gram.cpu().numpy()


def gram_matrix(gradients: torch.Tensor, others: torch.Tensor | None, sketch: CountSketch | None) -> np.ndarray:
    """The (2K, 2K) Gram matrix of [g; r] the allocator uses: exact (``sketch`` None) or estimated from
    sketches with each device's own 2 x 2 block exact.  ``others`` None: every r_k = 0."""
    num = gradients.shape[0]
    rows = gradients if others is None else torch.cat([gradients, others])
    if sketch is None:
        gram = exact_gram(rows)
    else:
        projected = sketch.apply(rows)
        gram = (projected @ projected.T).cpu().numpy()
        own = _own_blocks(gradients, others)
        index = np.arange(num)
        gram[index, index] = own[0]
        if others is not None:
            gram[index, num + index] = gram[num + index, index] = own[1]
            gram[num + index, num + index] = own[2]
    if others is None:
        full = np.zeros((2 * num, 2 * num))
        full[:num, :num] = gram
        gram = full
    return gram


def _own_blocks(gradients: torch.Tensor, others: torch.Tensor | None):
    """Per device ||g_k||^2, <g_k, r_k>, ||r_k||^2 in float64, a few rows at a time (no float64 copy of all)."""
    num, dim = gradients.shape
    rows = max(1, _CHUNK * 16 // max(dim, 1))

    def dot(x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
        return torch.cat([(x[i:i + rows].double() * y[i:i + rows].double()).sum(dim=1)
                          for i in range(0, num, rows)]).cpu().numpy()

    if others is None:
        return dot(gradients, gradients), None, None
    return dot(gradients, gradients), dot(gradients, others), dot(others, others)


def control_bits(num_devices: int, vectors_per_device: int, sketch_size: int | None) -> int:
    """Bits the devices send on the control channel for the allocator's Gram matrix in one round (0 for
    exact inner products, which no device could send: an analysis option)."""
    if sketch_size is None:
        return 0
    return num_devices * (vectors_per_device * sketch_size + OWN_SCALARS) * BITS_PER_ENTRY
