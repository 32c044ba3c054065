"""Kernels that give the same bits as the stock torch expressions, faster or with less memory traffic.

- Max pooling: ATen's CPU max pooling over NCHW tensors is a scalar loop (on the CIFAR CNN's first pool
  ~8 ms, a fifth of a device's forward + backward pass at one thread); the channels-last kernel with the
  layout conversions costs ~1.5 ms (bench/README.md).  Both pick, in every window, the first maximum in
  row-major order and return the flat index ih * W + iw, and the backward pass is ATen's own NCHW
  backward with those indices, so values and gradients are those of ``nn.MaxPool2d`` bit for bit.
- The aggregation's per-device reductions and K x d matrices: a fresh K x d tensor is page-faulted in
  again every round (spfl.simulator.training), so they are formed in one reused :class:`Workspace`, and
  on CPU in pieces small enough to stay in cache; each helper names the plain expression it equals bit
  for bit (tests/test_kernels.py, tests/test_aggregation.py).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable

import numpy as np
import torch
from torch import nn

_aten = torch.ops.aten


class _MaxPool2dChannelsLast(torch.autograd.Function):
    """``max_pool2d_with_indices`` computed on a channels-last copy; NCHW in, NCHW out, NCHW backward."""

    @staticmethod
    def forward(ctx, x, kernel_size, stride, padding, dilation, ceil_mode):
        out, indices = _aten.max_pool2d_with_indices(x.contiguous(memory_format=torch.channels_last),
                                                     kernel_size, stride, padding, dilation, ceil_mode)
        out, indices = out.contiguous(), indices.contiguous()
        ctx.save_for_backward(x, indices)
        ctx.settings = (kernel_size, stride, padding, dilation, ceil_mode)
        ctx.mark_non_differentiable(indices)
        return out

    @staticmethod
    def backward(ctx, grad):
        x, indices = ctx.saved_tensors
        # What autograd runs for max_pool2d_with_indices (MaxPool2DWithIndicesBackward0), same arguments.
        return (_aten.max_pool2d_with_indices_backward(grad, x, *ctx.settings, indices),
                None, None, None, None, None)


class ChannelsLastMaxPool2d(nn.MaxPool2d):
    """``nn.MaxPool2d`` with the same results, pooled by the channels-last kernel on 4-d CPU input."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu" or x.dim() != 4 or self.return_indices \
                or not x.is_contiguous() or not x.is_floating_point():
            return super().forward(x)
        pair = nn.modules.utils._pair
        stride = pair(self.stride if self.stride is not None else self.kernel_size)
        return _MaxPool2dChannelsLast.apply(x, list(pair(self.kernel_size)), list(stride),
                                            list(pair(self.padding)), list(pair(self.dilation)), self.ceil_mode)


def with_fast_pooling(module: nn.Module) -> nn.Module:
    """``module`` with every plain ``nn.MaxPool2d`` replaced, in place, by :class:`ChannelsLastMaxPool2d`
    of the same settings (same results; faster on CPU).  Returns ``module``."""
    for name, child in list(module.named_children()):
        if type(child) is nn.MaxPool2d:
            fast = ChannelsLastMaxPool2d.__new__(ChannelsLastMaxPool2d)
            fast.__dict__ = copy.copy(child.__dict__)
            setattr(module, name, fast)
        else:
            with_fast_pooling(child)
    return module


# -- the aggregation's reductions -----------------------------------------------------------------------

_PIECE = 1 << 18  # float64 entries converted at a time: 2 MiB, still in cache for the abs that follows


class Workspace:
    """One byte buffer, reused from round to round, that serves views of any shape and dtype.  A caller
    must be done with one view before taking the next: every :meth:`take` returns the same memory."""

    def __init__(self) -> None:
        self._bytes: torch.Tensor | None = None

    def take(self, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device | str) -> torch.Tensor:
        """An uninitialized tensor of ``shape`` and ``dtype`` on ``device``, in the reused buffer."""
        size = int(np.prod(shape)) * torch.empty((), dtype=dtype).element_size()
        if self._bytes is None or self._bytes.numel() < size or self._bytes.device != torch.device(device):
            self._bytes = None  # free the old buffer before allocating the new one
            self._bytes = torch.empty(size, dtype=torch.uint8, device=device)
        return self._bytes[:size].view(dtype).view(shape)


def squared_norms(x: torch.Tensor, workspace: Workspace) -> torch.Tensor:
    """``x.double().square().sum(dim=1)``.  On CPU a few rows at a time, so that the squares are summed
    while still in cache: a CPU row sum never depends on the other rows (PyTorch splits a reduction
    across threads over its rows, and splits a row only when there is one row in all, hence blocks of
    two or three rows).  Elsewhere in one piece."""
    num, d = x.shape
    if x.device.type != "cpu":
        return workspace.take(x.shape, torch.float64, x.device).copy_(x).square_().sum(dim=1)
    work = workspace.take((min(num, 3), d), torch.float64, x.device)
    squared = torch.empty(num, dtype=torch.float64)
    start = 0
    while start < num:
        end = num if num - start <= 3 else start + 2
        squared[start:end] = work[:end - start].copy_(x[start:end]).square_().sum(dim=1)
        start = end
    return squared


def abs_sums(x: torch.Tensor, workspace: Workspace) -> torch.Tensor:
    """``x.double().abs().sum(dim=1)``: the rows' l1 norms in float64."""
    return _float64_abs(x, workspace).sum(dim=1)


def abs_dot(x: torch.Tensor, c: torch.Tensor, workspace: Workspace) -> torch.Tensor:
    """``x.abs().double() @ c.double()``: every row's <|x_k|, c> in float64."""
    return _float64_abs(x, workspace) @ c.double()


def abs_means(x: torch.Tensor, workspace: Workspace) -> torch.Tensor:
    """``x.abs().mean(dim=1, keepdim=True)``: every row's mean magnitude (K x 1), in x's dtype."""
    return torch.abs(x, out=workspace.take(x.shape, x.dtype, x.device)).mean(dim=1, keepdim=True)


def rows_at(x: torch.Tensor, mask: np.ndarray, workspace: Workspace) -> torch.Tensor:
    """``x[mask]``: the rows a boolean mask picks, gathered in the workspace."""
    index = torch.from_numpy(np.flatnonzero(mask)).to(x.device)
    return torch.index_select(x, 0, index, out=workspace.take((len(index), x.shape[1]), x.dtype, x.device))


def rows_written(like: torch.Tensor, rows: Iterable[int], write: Callable[[int, torch.Tensor], object],
                 workspace: Workspace, base: torch.Tensor | None = None) -> torch.Tensor:
    """A matrix of ``like``'s shape and dtype in the workspace: a copy of ``base`` (uninitialized rows
    when None) with each row k of ``rows`` written in place by ``write(k, row)``.  The values of
    ``torch.where(mask, new_rows, base)``, without a K x d temporary for the new rows."""
    out = workspace.take(like.shape, like.dtype, like.device)
    if base is not None:
        out.copy_(base)
    for k in map(int, rows):
        write(k, out[k])
    return out


def _float64_abs(x: torch.Tensor, workspace: Workspace) -> torch.Tensor:
    """``|x|`` in float64 (exact) in the workspace, piece by piece on CPU so that each piece is converted
    and made absolute while in cache (elementwise, so the values are those of one whole-tensor pass)."""
    out = workspace.take(x.shape, torch.float64, x.device)
    flat_in, flat_out = x.reshape(-1), out.view(-1)
    piece = _PIECE if x.device.type == "cpu" else flat_in.numel()
    for start in range(0, flat_in.numel(), piece):
        flat_out[start:start + piece].copy_(flat_in[start:start + piece]).abs_()
    return out
