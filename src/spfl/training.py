"""Local computation on the devices: mini-batch gradients (FedSGD) or local-SGD deltas.

The global model lives as one flat float vector ``w``; the network module only supplies the
architecture (``torch.func.functional_call``).  One pure function, ``loss(w, x, y)``, is
differentiated with ``torch.func.grad_and_value``: called in a Python loop over devices it
is the sequential path (bit-stable on CPU), and the same function under ``torch.func.vmap``
is the batched path for accelerators.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch.func import functional_call, grad_and_value, vmap
from torch.nn import functional as F


@dataclass(frozen=True)
class FlatModel:
    """A module's architecture with its parameters packed into one flat vector."""

    module: torch.nn.Module
    names: tuple[str, ...]
    shapes: tuple[torch.Size, ...]
    sizes: tuple[int, ...]

    @classmethod
    def wrap(cls, module: torch.nn.Module) -> FlatModel:
        named = list(module.named_parameters())
        return cls(module, tuple(n for n, _ in named), tuple(p.shape for _, p in named),
                   tuple(p.numel() for _, p in named))

    @property
    def num_params(self) -> int:
        return sum(self.sizes)

    def initial_vector(self) -> torch.Tensor:
        return torch.cat([p.detach().reshape(-1) for p in self.module.parameters()]).clone()

    def unflatten(self, w: torch.Tensor) -> dict[str, torch.Tensor]:
        return {n: chunk.view(s) for n, chunk, s in zip(self.names, torch.split(w, self.sizes), self.shapes)}

    def logits(self, w: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.module, self.unflatten(w), (x,))

    def loss(self, w: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.logits(w, x), y)


class LocalTrainer:
    """Computes every device's upload for one round from the same global model."""

    def __init__(self, model: FlatModel, learning_rate: float, local_steps: int, batched: bool = False,
                 precision: str = "float32"):
        self.model = model
        self.precision = precision
        self.learning_rate = learning_rate
        self.local_steps = local_steps
        self.batched = batched
        self._grad: Callable = grad_and_value(model.loss)
        self._grad_all: Callable = vmap(self._grad, in_dims=(0, 0, 0))

    def uploads(self, w: torch.Tensor, batches: list[list[tuple[torch.Tensor, torch.Tensor]]]
                ) -> tuple[torch.Tensor, np.ndarray]:
        """Per device: the gradient (E = 1) or (w - w_local) / lr after E local steps.

        ``batches[k][e]`` is device k's (x, y) for local step e.  Returns the uploads as a
        (K, d) tensor and each device's loss at ``w`` on its first batch.
        """
        if self.batched and _same_batch_sizes(batches):
            return self._uploads_batched(w, batches)
        rows, losses = [], []
        for device_batches in batches:
            w_local = w
            for step, (x, y) in enumerate(device_batches):
                grad, loss = self._grad(w_local, x, y)
                if step == 0:
                    losses.append(loss.item())
                if self.local_steps == 1:
                    break
                w_local = w_local - self.learning_rate * grad
            rows.append(grad if self.local_steps == 1 else (w - w_local) / self.learning_rate)
        return torch.stack(rows), np.asarray(losses, dtype=float)

    def _uploads_batched(self, w, batches):
        num_devices = len(batches)
        w_local = w.expand(num_devices, -1)
        first_loss = None
        for step in range(self.local_steps):
            x = torch.stack([b[step][0] for b in batches])
            y = torch.stack([b[step][1] for b in batches])
            grad, loss = self._grad_all(w_local, x, y)
            if step == 0:
                first_loss = loss
            if self.local_steps == 1:
                return grad, first_loss.double().cpu().numpy()
            w_local = w_local - self.learning_rate * grad
        return (w.expand(num_devices, -1) - w_local) / self.learning_rate, first_loss.double().cpu().numpy()


def _same_batch_sizes(batches) -> bool:
    sizes = {len(y) for device in batches for _, y in device}
    return len(sizes) == 1


@torch.no_grad()
def evaluate(model: FlatModel, w: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
             chunk: int = 2048) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``w`` on a whole split."""
    total_loss, correct = 0.0, 0
    for start in range(0, len(y), chunk):
        logits = model.logits(w, x[start:start + chunk])
        target = y[start:start + chunk]
        total_loss += F.cross_entropy(logits, target, reduction="sum").item()
        correct += (logits.argmax(dim=1) == target).sum().item()
    return total_loss / len(y), correct / len(y)
