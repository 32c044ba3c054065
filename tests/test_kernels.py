"""spfl.simulator.kernels: the channels-last max pooling gives the stock nn.MaxPool2d's values and
gradients bit for bit, and the aggregation's workspace helpers the plain torch expressions they name."""

import copy
import itertools

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from spfl.simulator.kernels import (
    ChannelsLastMaxPool2d,
    Workspace,
    abs_dot,
    abs_means,
    abs_sums,
    rows_at,
    rows_written,
    squared_norms,
    with_fast_pooling,
)
from spfl.simulator.models import build_model

SETTINGS = [(k, s, p, d, ceil) for k, s, p, d, ceil in itertools.product([2, 3], [None, 1, 2], [0, 1], [1, 2],
                                                                          [False, True])]


def _hard_input(shape, seed):
    """Many ties (zeros after clamping, repeated integers) and every special value in some window."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=gen).round().clamp_min(0)
    flat = x.view(-1)
    pick = torch.randperm(flat.numel(), generator=gen)
    flat[pick[:20]] = float("nan")
    flat[pick[20:40]] = -0.0
    flat[pick[40:60]] = float("inf")
    flat[pick[60:80]] = -float("inf")
    return x


def _bits(t):
    return t.contiguous().view(torch.int32)  # compares NaN, -0.0 and every payload exactly


@pytest.mark.parametrize("k, s, p, d, ceil", SETTINGS)
def test_channels_last_pool_is_bitwise_nn_maxpool(k, s, p, d, ceil):
    stock = nn.MaxPool2d(k, s, p, d, ceil_mode=ceil)
    fast = ChannelsLastMaxPool2d(k, s, p, d, ceil_mode=ceil)
    for shape in ((2, 3, 9, 8), (3, 20, 12, 12)):
        x = _hard_input(shape, seed=k + 10 * p + 100 * d)
        a, b = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
        out_a, out_b = stock(a), fast(b)
        assert torch.equal(_bits(out_a), _bits(out_b))
        grad = torch.randn(out_a.shape, generator=torch.Generator().manual_seed(1))
        grad.view(-1)[:7] = -0.0
        out_a.backward(grad)
        out_b.backward(grad)
        assert torch.equal(_bits(a.grad), _bits(b.grad))
        assert b.grad.is_contiguous() and out_b.is_contiguous()


def test_fast_pooling_cifar_cnn_gradients_are_bitwise_the_stock_ones():
    model = build_model("cifar_cnn", (3, 32, 32), 10, generator=torch.Generator().manual_seed(0))
    fast = with_fast_pooling(copy.deepcopy(model))
    assert [type(m) for m in fast.modules()].count(ChannelsLastMaxPool2d) == 2
    assert not any(isinstance(m, ChannelsLastMaxPool2d) for m in model.modules())  # the original is untouched
    gen = torch.Generator().manual_seed(2)
    x, y = torch.randn(16, 3, 32, 32, generator=gen), torch.randint(0, 10, (16,), generator=gen)
    grads = []
    for module in (model, fast):
        module.zero_grad(set_to_none=True)
        loss = F.cross_entropy(module(x), y)
        loss.backward()
        bits = [_bits(q.grad).reshape(-1) for q in module.parameters()]
        grads.append(torch.cat(bits + [_bits(loss.detach()).reshape(1)]))
    assert torch.equal(*grads)


def test_fast_pooling_falls_back_where_it_does_not_apply():
    fast = ChannelsLastMaxPool2d(2)
    x = torch.randn(2, 3, 8, 8)
    strided = x.transpose(2, 3)  # not contiguous: the stock path
    assert torch.equal(fast(strided), F.max_pool2d(strided, 2))
    assert torch.equal(fast(x[0]), F.max_pool2d(x[0], 2))  # 3-d input
    indexed = ChannelsLastMaxPool2d(2, return_indices=True)
    assert all(torch.equal(a, b) for a, b in zip(indexed(x), F.max_pool2d(x, 2, return_indices=True)))
    assert torch.equal(fast(x.bfloat16()), F.max_pool2d(x.bfloat16(), 2))


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("name, shape", [("cifar_cnn", (3, 32, 32)), ("mlp", (1, 8, 8))])
def test_evaluation_in_small_cpu_batches_gives_the_same_bits(name, shape, threads):
    """evaluate() forwards 64 samples at a time on CPU: the same loss and accuracy bits as whole chunks."""
    from spfl.simulator.training import FlatModel, evaluate

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        model = FlatModel.wrap(build_model(name, shape, 10, generator=torch.Generator().manual_seed(4)))
        gen = torch.Generator().manual_seed(5)
        x, y = torch.randn(600, *shape, generator=gen), torch.randint(0, 10, (600,), generator=gen)
        w = model.initial_vector()
        small = evaluate(model, w, x, y, chunk=256)
        whole = evaluate(model, w, x, y, chunk=256, cpu_batch=256)
        assert small == whole  # Python floats: bit for bit
    finally:
        torch.set_num_threads(before)


# -- the aggregation's reductions in a reused workspace -------------------------------------------------
def _uploads(num, d, seed):
    """Rows of very different scales, with +0, -0 and a piece boundary (2^18 entries) inside a row."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(num, d, generator=gen) * torch.logspace(-5, 1, d)
    x[:, :3] = 0.0
    x[:, 3:6] = -0.0
    return x


@pytest.mark.parametrize("num", [0, 1, 4, 7])
def test_workspace_reductions_are_the_plain_expressions_bit_for_bit(num):
    workspace = Workspace()
    x = _uploads(num, 150_001, num)
    c = _uploads(1, 150_001, 99)[0].abs()
    for _ in range(2):  # the second round reuses the buffer the first one left
        assert torch.equal(squared_norms(x, workspace), x.double().square().sum(dim=1))
        assert torch.equal(abs_sums(x, workspace), x.double().abs().sum(dim=1))
        assert torch.equal(abs_dot(x, c, workspace), x.abs().double() @ c.double())
        assert torch.equal(abs_means(x, workspace), x.abs().mean(dim=1, keepdim=True))


def test_workspace_rows_are_torch_where_and_boolean_indexing():
    workspace = Workspace()
    x = _uploads(5, 1031, 1)
    mask = np.array([True, False, True, True, False])
    assert torch.equal(rows_at(x, mask, workspace), x[torch.from_numpy(mask)])
    scale = torch.rand(5, 1, generator=torch.Generator().manual_seed(2))
    written = rows_written(x, np.flatnonzero(mask), lambda k, row: torch.mul(x[k].sign(), scale[k], out=row),
                           workspace, base=x * 3)
    expected = torch.where(torch.from_numpy(mask)[:, None], x.sign() * scale, x * 3)
    assert torch.equal(written, expected) and torch.equal(written.signbit(), expected.signbit())


def test_workspace_is_one_buffer_reused_and_grown_when_needed():
    workspace = Workspace()
    first = workspace.take((4, 10), torch.float64, "cpu")
    smaller = workspace.take((3, 7), torch.float32, "cpu")
    assert smaller.data_ptr() == first.data_ptr() and smaller.shape == (3, 7) and smaller.dtype == torch.float32
    larger = workspace.take((5, 10), torch.float64, "cpu")
    assert larger.shape == (5, 10) and larger.untyped_storage().nbytes() == 400
    assert workspace.take((2, 2), torch.float64, "cpu").data_ptr() == larger.data_ptr()
