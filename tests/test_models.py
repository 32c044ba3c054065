"""spfl.simulator.models: pinned parameter counts, forward shapes, generator-only initialization, no BN/Dropout."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from spfl.configuration.datasets import DATASET_ROWS
from spfl.configuration.settings import make_spec
from spfl.simulator.models import MODELS, build_model, count_parameters, reset_parameters


def test_cifar_cnn_has_exactly_878538_parameters() -> None:
    model = build_model("cifar_cnn", (3, 32, 32), 10)
    assert count_parameters(model) == 878_538
    assert [p.numel() for p in model.parameters()] == [2400, 32, 51200, 64, 819200, 512, 5120, 10]


def test_digit_model_sizes() -> None:
    assert count_parameters(build_model("mlp", (1, 8, 8), 10)) == 4_810
    assert count_parameters(build_model("cnn", (1, 8, 8), 10)) == 16 * 9 + 16 + 16 * 4 * 4 * 10 + 10


@pytest.mark.parametrize(("name", "shape"), [
    ("mlp", (1, 8, 8)), ("cnn", (1, 8, 8)), ("mlp", (3, 32, 32)), ("cnn", (3, 32, 32)),
    ("cifar_cnn", (3, 32, 32)), ("cifar_cnn", (1, 16, 16)),
])
def test_forward_shape(name: str, shape: tuple[int, int, int]) -> None:
    model = build_model(name, shape, 10)
    out = model(torch.randn(5, *shape))
    assert out.shape == (5, 10) and out.dtype == torch.float32


def test_no_batchnorm_or_dropout() -> None:
    for name in MODELS:
        model = build_model(name, (3, 32, 32), 10)
        banned = (nn.modules.batchnorm._BatchNorm, nn.modules.dropout._DropoutNd, nn.GroupNorm, nn.LayerNorm)
        assert not any(isinstance(m, banned) for m in model.modules()), name
        x = torch.randn(3, 3, 32, 32)
        model.train()
        a = model(x)
        model.eval()
        assert torch.equal(a, model(x))  # train/eval modes behave identically


@pytest.mark.parametrize("name", MODELS)
def test_generator_init_is_bit_identical_and_ignores_global_rng(name: str) -> None:
    shape = (3, 32, 32)
    torch.manual_seed(1)
    a = build_model(name, shape, 10, generator=torch.Generator().manual_seed(7))
    torch.manual_seed(999)
    torch.rand(123)
    b = build_model(name, shape, 10, generator=torch.Generator().manual_seed(7))
    c = build_model(name, shape, 10, generator=torch.Generator().manual_seed(8))
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
    assert not all(torch.equal(pa, pc) for pa, pc in zip(a.parameters(), c.parameters(), strict=True))


def test_generator_init_uses_default_bounds() -> None:
    model = build_model("cifar_cnn", (3, 32, 32), 10, generator=torch.Generator().manual_seed(0))
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            bound = 1 / math.sqrt(module.weight[0].numel())
            assert module.weight.abs().max() <= bound and module.bias.abs().max() <= bound
            assert module.weight.abs().max() > 0.9 * bound  # spread over the interval (>= 650 draws)
            assert module.bias.abs().min() < module.bias.abs().max()
    reset_parameters(model, torch.Generator().manual_seed(0))  # public helper, same draw again
    again = build_model("cifar_cnn", (3, 32, 32), 10, generator=torch.Generator().manual_seed(0))
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), again.parameters(), strict=True))


def test_defaults_and_errors() -> None:
    assert make_spec(dataset="digits").resolved_model == "mlp"
    assert make_spec(dataset="cifar10", model="auto").resolved_model == "cifar_cnn"
    assert make_spec(dataset="digits", model="cnn").resolved_model == "cnn"
    with pytest.raises(ValueError, match="'resnet'"):
        build_model("resnet", (3, 32, 32), 10)
    with pytest.raises(ValueError, match="at least 16x16"):
        build_model("cifar_cnn", (1, 8, 8), 10)


@pytest.mark.parametrize("row", DATASET_ROWS, ids=lambda row: row.name)
def test_a_dataset_allows_exactly_the_models_that_fit_its_samples(row) -> None:
    assert row.default_model in row.models
    for name in MODELS:
        if name in row.models:
            build_model(name, row.input_shape, row.num_classes)
            assert make_spec(dataset=row.name, model=name).resolved_model == name
        else:
            with pytest.raises(ValueError):
                build_model(name, row.input_shape, row.num_classes)
