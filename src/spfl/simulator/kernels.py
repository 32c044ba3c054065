"""Faster CPU kernels that give the same bits as the stock ones, for the sequential gradient path.

ATen's CPU max pooling over NCHW (contiguous) tensors is a scalar loop: on the CIFAR CNN's first pool
(64 x 32 x 28 x 28) it costs ~8 ms, about a fifth of a device's whole forward + backward pass at one
thread, while the channels-last kernel (vectorized over channels) with the layout conversions costs
~1.5 ms (bench/README.md).  Both kernels pick, in every window, the first maximum in row-major order
(a later entry wins only if strictly greater, or NaN) and return the flat index ih * W + iw, so the
pooled values and indices are identical; the backward pass is ATen's own NCHW backward with those
indices, so the gradients are bit for bit those of ``nn.MaxPool2d`` (tests/test_kernels.py).
"""

from __future__ import annotations

import copy

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
