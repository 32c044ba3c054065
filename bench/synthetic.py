"""CIFAR-shaped synthetic data: the benchmarks' stand-in for CIFAR-10 on machines without the archive.

Benchmarks time the simulator, not the data, but they need the real shapes (3 x 32 x 32, 10 classes,
50,000 / 10,000 samples) so that the model, memory and per-sample cost are those of the paper run.
Images are uint8 pixels (as in the archive) built as noise around a fixed per-class template, then
normalized like ``spfl.simulator.data`` does CIFAR-10; so a model can learn them and a 300-round run shows a
rising accuracy curve instead of 10 %.  A fixed seed makes every benchmark see the same bytes.
"""

from __future__ import annotations

import torch

from spfl.simulator.data import Dataset

# spfl.simulator.data normalizes CIFAR-10 with per-channel statistics; the same order of magnitude is enough here.
_MEAN = torch.tensor([0.49, 0.48, 0.45]).view(1, 3, 1, 1)
_STD = torch.tensor([0.25, 0.24, 0.26]).view(1, 3, 1, 1)


def cifar_like(train: int = 50_000, test: int = 10_000, num_classes: int = 10, seed: int = 0,
               noise: float = 60.0, chunk: int = 5_000) -> Dataset:
    """A ``spfl.simulator.data.Dataset`` named ``cifar10`` with CIFAR-10's shapes; deterministic in ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    # Smooth class templates (8x8 upsampled to 32x32) in pixel units around mid-grey.
    templates = torch.nn.functional.interpolate(torch.rand(num_classes, 3, 8, 8, generator=gen), size=(32, 32),
                                                mode="bilinear", align_corners=False) * 160.0 + 48.0

    def split(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.randint(0, num_classes, (n,), generator=gen)
        x = torch.empty(n, 3, 32, 32)
        for start in range(0, n, chunk):  # chunked: the float temporaries stay small
            labels = y[start:start + chunk]
            pixels = templates[labels] + noise * torch.randn(len(labels), 3, 32, 32, generator=gen)
            pixels = pixels.round_().clamp_(0, 255)  # what uint8 pixels would hold
            x[start:start + chunk] = (pixels / 255.0 - _MEAN) / _STD
        return x, y

    train_x, train_y = split(train)
    test_x, test_y = split(test)
    return Dataset("cifar10", train_x, train_y, test_x, test_y, num_classes)
