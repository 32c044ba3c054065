"""Models trained by the federated loop (docs/model.md, section 10).

No BatchNorm and no Dropout anywhere: under FedSGD a device's gradient must be a pure function of the
broadcast weights and its mini-batch (no running statistics, no random masks), so that every method of
one seed sees the same gradients (common random numbers).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from spfl.vocabulary import MODELS


def _mlp(c: int, h: int, w: int, num_classes: int) -> nn.Module:
    """flatten -> Linear(C*H*W, 64) -> ReLU -> Linear(64, classes); 4,810 parameters on digits."""
    return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, 64), nn.ReLU(), nn.Linear(64, num_classes))


def _cnn(c: int, h: int, w: int, num_classes: int) -> nn.Module:
    """conv3x3(16, pad 1)-ReLU-maxpool2-Linear: a small conv net for 8x8 digits that also runs on 32x32."""
    return nn.Sequential(
        nn.Conv2d(c, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(16 * (h // 2) * (w // 2), num_classes),
    )


def _cifar_cnn(c: int, h: int, w: int, num_classes: int) -> nn.Module:
    """conv5x5(32)-pool-conv5x5(64)-pool-fc512-fc, unpadded: 878,538 parameters on 3x32x32, 10 classes."""
    oh, ow = ((h - 4) // 2 - 4) // 2, ((w - 4) // 2 - 4) // 2
    if oh < 1 or ow < 1:
        raise ValueError(f"model: cifar_cnn needs inputs of at least 16x16, got input_shape={(c, h, w)}; "
                         f"use mlp or cnn for small images")
    return nn.Sequential(
        nn.Conv2d(c, 32, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(64 * oh * ow, 512), nn.ReLU(), nn.Linear(512, num_classes),
    )


_BUILDERS = {"mlp": _mlp, "cnn": _cnn, "cifar_cnn": _cifar_cnn}


@torch.no_grad()
def reset_parameters(model: nn.Module, generator: torch.Generator) -> None:
    """Redraw all weights and biases from ``generator`` with PyTorch's default bounds.

    PyTorch's default for Linear/Conv2d (kaiming_uniform with a=sqrt(5), and the matching bias rule)
    amounts to U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for both; drawing them from an explicit generator makes
    the initial model a function of the seed alone, whatever the global RNG has been used for.
    """
    for module in model.modules():
        own = list(module.parameters(recurse=False))
        if not own:
            continue
        if not isinstance(module, (nn.Linear, nn.Conv2d)):
            raise TypeError(f"model: cannot re-initialize parameters of {type(module).__name__}; "
                            f"allowed: Linear, Conv2d")
        bound = 1.0 / math.sqrt(module.weight[0].numel())
        for p in own:
            p.uniform_(-bound, bound, generator=generator)


def build_model(name: str, input_shape: tuple[int, int, int], num_classes: int,
                generator: torch.Generator | None = None) -> nn.Module:
    """Build model ``name`` (one of MODELS) for C x H x W inputs; with ``generator``, init from it alone."""
    if name not in _BUILDERS:
        raise ValueError(f"model: unknown name {name!r}; allowed: {', '.join(MODELS)}")
    if len(input_shape) != 3 or any(int(s) < 1 for s in input_shape):
        raise ValueError(f"model: input_shape={tuple(input_shape)!r} is invalid; allowed: (C, H, W), "
                         f"all >= 1")
    if num_classes < 2:
        raise ValueError(f"model: num_classes={num_classes} is invalid; allowed: integer >= 2")
    c, h, w = (int(s) for s in input_shape)
    model = _BUILDERS[name](c, h, w, int(num_classes))
    if generator is not None:
        reset_parameters(model, generator)
    return model


def count_parameters(model: nn.Module) -> int:
    """Number of scalar parameters d (the sign payload D_s is d bits)."""
    return sum(p.numel() for p in model.parameters())
