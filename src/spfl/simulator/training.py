"""Local computation on the devices: mini-batch gradients (FedSGD) or local-SGD deltas.

The global model is one flat float vector ``w``; the network module only supplies the architecture.
Every device's upload is computed from ``w`` either sequentially (plain autograd per device, bit-stable,
the default on CPU) or batched (``torch.func`` under ``vmap``, in chunks, the default on CUDA), into one
reused (K, d) buffer.  :func:`precision_mode` applies the run's ``precision`` (exact float32, tf32 or
bfloat16 autocast) around every trainer call and evaluation and restores the global settings after.
bench/README.md ("Gradient paths and precision") has the details and the measured costs.
"""

from __future__ import annotations

import copy
import ctypes
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch.func import functional_call, grad_and_value, vmap
from torch.nn import functional as F

from spfl.simulator.kernels import with_fast_pooling
from spfl.vocabulary import PRECISIONS

log = logging.getLogger("spfl")

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters (malloc.h)
_malloc_tuned: bool | None = None


def reuse_freed_memory() -> bool:
    """Keep freed blocks below 2 GiB in glibc's heap for reuse (process-wide, once; see the module
    docstring for the memory cost).  Returns whether the allocator is tuned: False on other C
    libraries (macOS, musl)."""
    global _malloc_tuned
    if _malloc_tuned is None:
        try:
            libc = ctypes.CDLL(None)  # the process's own C library
            limit = 2**31 - 1  # mallopt takes an int
            _malloc_tuned = bool(libc.mallopt(_M_MMAP_THRESHOLD, limit) and libc.mallopt(_M_TRIM_THRESHOLD, limit))
        except (OSError, AttributeError):
            _malloc_tuned = False
    return _malloc_tuned


# The per-operator float32 modes of PyTorch >= 2.9 ("ieee", "tf32", "bf16", or "none" = inherit), parent
# before child: restoring a parent may reset its children, which are then restored after it.
_FP32_MODES = (("backends",), ("backends", "cuda", "matmul"), ("backends", "cudnn"), ("backends", "cudnn", "conv"),
               ("backends", "cudnn", "rnn"), ("backends", "mkldnn"), ("backends", "mkldnn", "matmul"),
               ("backends", "mkldnn", "conv"), ("backends", "mkldnn", "rnn"))
_FP32_LEAVES = tuple(path for path in _FP32_MODES if path[-1] in ("matmul", "conv", "rnn"))


def _fp32_mode_owners(paths=_FP32_MODES) -> list[object]:
    """The ``torch.backends`` objects at ``paths`` that carry an ``fp32_precision`` (none on older PyTorch)."""
    owners = []
    for path in paths:
        obj: object = torch
        for name in path:
            obj = getattr(obj, name, None)
        if obj is not None and hasattr(obj, "fp32_precision"):
            owners.append(obj)
    return owners


def _leaf_owners() -> list[object]:
    return _fp32_mode_owners(_FP32_LEAVES)


def _read_legacy(getter: Callable[[], object]) -> object | None:
    """A legacy (global) TF32 setting, or None where PyTorch refuses to read it: after the per-operator
    modes were set to disagree (e.g. "medium" makes CUDA matmuls tf32 but oneDNN's bf16), PyTorch raises
    rather than answer; then only the per-operator modes, which carry the whole state, are restored."""
    try:
        return getter()
    except RuntimeError:
        return None


@contextmanager
def precision_mode(precision: str) -> Iterator[None]:
    """Make float32 matmuls and convolutions exact (``float32``, ``bfloat16``) or TF32 (``tf32``) for
    the duration of the block; every global setting it touches is restored afterwards, also when the
    block raises.  (``bfloat16``'s autocast itself is applied by the trainer, not here.)"""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is invalid: allowed {', '.join(PRECISIONS)}")
    owners = _fp32_mode_owners()
    saved_modes = [(owner, owner.fp32_precision) for owner in owners]
    saved_precision = _read_legacy(torch.get_float32_matmul_precision)
    saved_matmul = _read_legacy(lambda: torch.backends.cuda.matmul.allow_tf32)
    saved_cudnn = _read_legacy(lambda: torch.backends.cudnn.allow_tf32)
    tf32 = precision == "tf32"
    try:
        torch.set_float32_matmul_precision("high" if tf32 else "highest")
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
        if not tf32:
            # An inherited global mode (e.g. torch.backends.fp32_precision = "tf32") would still reach
            # the operators whose own mode is "none": pin every operator to IEEE float32.
            for leaf in _leaf_owners():
                leaf.fp32_precision = "ieee"
        yield
    finally:
        if saved_precision is not None:
            torch.set_float32_matmul_precision(saved_precision)
        if saved_matmul is not None:
            torch.backends.cuda.matmul.allow_tf32 = saved_matmul
        if saved_cudnn is not None:
            torch.backends.cudnn.allow_tf32 = saved_cudnn
        for owner, mode in saved_modes:
            if owner.fp32_precision != mode:
                owner.fp32_precision = mode


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
    """Computes every device's upload for one round from the same global model.

    ``batched``: True / False force the path; None (default) picks batched on CUDA only.
    ``reuse_output`` (default True): return every round's uploads in the same (K, d) buffer, so the
    caller must be done with one round's uploads before the next call (the simulation's round loop
    is: what outlives a round, such as the aggregator's stale rows, is copied out).  False gives a
    fresh tensor per call.
    ``precision``: one of ``PRECISIONS`` (module docstring).
    """

    def __init__(self, model: FlatModel, learning_rate: float, local_steps: int, batched: bool | None = None,
                 precision: str = "float32", max_batched_samples: int = 16384, reuse_output: bool = True):
        if precision not in PRECISIONS:
            raise ValueError(f"precision {precision!r} is invalid: allowed {', '.join(PRECISIONS)}")
        self.model = model
        self.precision = precision
        self.learning_rate = learning_rate
        self.local_steps = local_steps
        self.batched = batched
        self.max_batched_samples = max_batched_samples
        loss = self._autocast_loss if precision == "bfloat16" else model.loss
        self._grad: Callable = grad_and_value(loss)
        self._grad_shared: Callable = vmap(self._grad, in_dims=(None, 0, 0))  # one w for all devices
        self._grad_each: Callable = vmap(self._grad, in_dims=(0, 0, 0))       # one w per device
        self._warned_cpu_bf16 = False
        self._work: torch.nn.Module | None = None  # the sequential path's private module copy
        self.reuse_output = reuse_output
        self._out: torch.Tensor | None = None
        if os.environ.get("SPFL_MALLOC_TUNING") == "1":
            reuse_freed_memory()

    def _autocast_loss(self, w: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16):
            logits = self.model.logits(w, x)
        return F.cross_entropy(logits.float(), y)

    def uses_batched(self, device: torch.device) -> bool:
        return device.type == "cuda" if self.batched is None else self.batched

    def uploads(self, w: torch.Tensor, batches: list[list[tuple[torch.Tensor, torch.Tensor]]]
                ) -> tuple[torch.Tensor, np.ndarray]:
        """Per device: the gradient (E = 1) or (w - w_local) / lr after E local steps.

        ``batches[k][e]`` is device k's (x, y) for local step e.  Returns the uploads as a
        (K, d) tensor and each device's loss at ``w`` on its first batch.
        """
        out, losses = self.launch(w, batches)
        return out, losses.double().cpu().numpy()

    def launch(self, w: torch.Tensor, batches: list[list[tuple[torch.Tensor, torch.Tensor]]]
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`uploads` with the losses left as a tensor on ``w``'s device: on a GPU the work is only
        queued, and nothing waits for it until the losses are read."""
        if self.precision == "bfloat16" and w.device.type == "cpu" and not self._warned_cpu_bf16:
            log.info("precision bfloat16 on CPU: autocast runs, but it is slower than float32 there")
            self._warned_cpu_bf16 = True
        out = self._output(len(batches), w)
        losses = torch.empty(len(batches), dtype=torch.float32, device=w.device)
        with precision_mode(self.precision):
            if self.uses_batched(w.device):
                self._fill_batched(w, batches, out, losses)
            else:
                self._fill_sequential(w, batches, out, losses)
        return out, losses

    def _output(self, num_devices: int, w: torch.Tensor) -> torch.Tensor:
        shape = (num_devices, w.numel())
        if self.reuse_output and self._out is not None and self._out.shape == shape \
                and self._out.dtype == w.dtype and self._out.device == w.device:
            return self._out
        out = torch.empty(shape, dtype=w.dtype, device=w.device)
        self._out = out if self.reuse_output else None
        return out

    def _fill_sequential(self, w, batches, out, losses) -> None:
        """One device at a time, rows written in place (no K x d list to stack: half the peak)."""
        module = self._work_module(w.device)
        params = list(module.parameters())
        with torch.enable_grad():
            self._sequential_loop(module, params, w, batches, out, losses)

    def _sequential_loop(self, module, params, w, batches, out, losses) -> None:
        for k, device_batches in enumerate(batches):
            w_local = w
            for step, (x, y) in enumerate(device_batches):
                torch.nn.utils.vector_to_parameters(w_local, params)  # views into w_local, no copy
                for p in params:
                    p.grad = None
                if self.precision != "bfloat16":
                    loss = F.cross_entropy(module(x), y)
                else:
                    with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16):
                        logits = module(x)
                    loss = F.cross_entropy(logits.float(), y)
                loss.backward()
                if step == 0:
                    losses[k] = loss.detach()
                if self.local_steps == 1:
                    torch.cat([p.grad.reshape(-1) for p in params], out=out[k])
                    break
                grad = torch.cat([p.grad.reshape(-1) for p in params])
                w_local = w_local - self.learning_rate * grad
            if self.local_steps > 1:
                out[k] = (w - w_local) / self.learning_rate

    def _work_module(self, device: torch.device) -> torch.nn.Module:
        """A copy of the architecture for plain autograd; the shared module is never touched."""
        if self._work is None or next(self._work.parameters()).device != device:
            # Max pooling by ATen's channels-last kernel: bit for bit the same, several times faster on CPU.
            self._work = with_fast_pooling(copy.deepcopy(self.model.module).to(device))
            for p in self._work.parameters():
                p.requires_grad_(True)
        return self._work

    def _fill_batched(self, w, batches, out, losses) -> None:
        """vmap over groups of devices with equal batch sizes, in memory-bounded chunks."""
        for group in _groups_by_batch_sizes(batches):
            per_device = max(1, max(len(y) for _, y in batches[group[0]]))
            chunk = max(1, self.max_batched_samples // per_device)
            for start in range(0, len(group), chunk):
                index = group[start:start + chunk]
                rows, first_loss = self._batched_chunk(w, [batches[k] for k in index])
                where = torch.as_tensor(index, device=w.device)
                out[where] = rows
                losses[where] = first_loss.float()

    def _batched_chunk(self, w, batches):
        w_local, first_loss = None, None
        for step in range(self.local_steps):
            x = torch.stack([b[step][0] for b in batches])
            y = torch.stack([b[step][1] for b in batches])
            if w_local is None:
                grad, loss = self._grad_shared(w, x, y)
            else:
                grad, loss = self._grad_each(w_local, x, y)
            if step == 0:
                first_loss = loss
            if self.local_steps == 1:
                return grad, first_loss
            w_local = (w if w_local is None else w_local) - self.learning_rate * grad
        return (w - w_local) / self.learning_rate, first_loss


def _groups_by_batch_sizes(batches) -> list[list[int]]:
    """Device indices grouped by their sequence of batch sizes (vmap needs equal shapes)."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for k, device_batches in enumerate(batches):
        groups.setdefault(tuple(len(y) for _, y in device_batches), []).append(k)
    return list(groups.values())


def all_finite(tensor: torch.Tensor) -> bool:
    """Whether no entry is NaN or +-inf, without a tensor-sized temporary.

    ``torch.isfinite(t).all()`` materializes a boolean copy of ``t`` (and temporaries inside
    ``isfinite``); this one-pass min/max does not (it propagates NaN and exposes an infinity at either
    end), which for a (K, d) upload tensor is much faster (bench/README.md)."""
    if tensor.numel() == 0:
        return True
    if not tensor.is_floating_point():
        return True
    low, high = torch.aminmax(tensor)
    return bool(torch.isfinite(low) & torch.isfinite(high))


@torch.no_grad()
def evaluate(model: FlatModel, w: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
             chunk: int = 2048, precision: str = "float32", cpu_batch: int = 64) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``w`` on a whole split.

    Exact float32 by default, whatever precision the training used, so that accuracies of runs in
    different precisions measure the weights, not the evaluation.  On CPU the forward pass runs
    ``cpu_batch`` samples at a time (a 2,048-image batch of the CIFAR CNN has 200 MB activations that
    miss every cache: ~1.5x slower); each sample's logits are the same bits either way (tests), and
    the loss is still summed per ``chunk``."""
    total_loss, correct = 0.0, 0
    step = cpu_batch if x.device.type == "cpu" else chunk
    with precision_mode(precision):
        for start in range(0, len(y), chunk):
            target = y[start:start + chunk]
            inputs = x[start:start + chunk]
            if precision == "bfloat16":
                with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16):
                    logits = _batched_logits(model, w, inputs, step).float()
            else:
                logits = _batched_logits(model, w, inputs, step)
            total_loss += F.cross_entropy(logits, target, reduction="sum").item()
            correct += (logits.argmax(dim=1) == target).sum().item()
    return total_loss / len(y), correct / len(y)


def _batched_logits(model: FlatModel, w: torch.Tensor, x: torch.Tensor, batch: int) -> torch.Tensor:
    if len(x) <= batch:
        return model.logits(w, x)
    return torch.cat([model.logits(w, x[start:start + batch]) for start in range(0, len(x), batch)])
