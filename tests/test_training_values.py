"""spfl.training against hand-computed values: the evaluation's loss and accuracy on a model whose logits
are its inputs, and the one notice that bfloat16 on CPU is slow."""

from __future__ import annotations

import logging
import math

import pytest
import torch

from spfl.training import FlatModel, LocalTrainer, evaluate


def identity_model() -> FlatModel:
    """Linear(2, 2) with weight I and bias 0: the logits of a sample are the sample itself."""
    module = torch.nn.Linear(2, 2)
    with torch.no_grad():
        module.weight.copy_(torch.eye(2))
        module.bias.zero_()
    return FlatModel.wrap(module)


@pytest.mark.parametrize("chunk", [2048, 2, 1])
def test_evaluation_is_the_mean_cross_entropy_and_the_share_of_correct_argmaxes(chunk):
    """Five samples: cross-entropy log(1 + e^(other - own)) each; argmax right on samples 1, 3 and 4."""
    model = identity_model()
    x = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 2.0], [3.0, 0.0], [0.5, 0.0]])
    y = torch.tensor([0, 0, 1, 0, 1])
    margins = [0.0 - 2.0, 1.0 - 0.0, 1.0 - 2.0, 0.0 - 3.0, 0.5 - 0.0]  # other logit minus own
    expected_loss = sum(math.log1p(math.exp(m)) for m in margins) / 5
    loss, accuracy = evaluate(model, model.initial_vector(), x, y, chunk=chunk)
    assert loss == pytest.approx(expected_loss, rel=1e-6)
    assert accuracy == 3 / 5


def test_bfloat16_on_cpu_is_noted_once_per_trainer(caplog):
    model = identity_model()
    batches = [[(torch.tensor([[1.0, 0.0]]), torch.tensor([0]))]]
    trainer = LocalTrainer(model, 0.1, 1, batched=False, precision="bfloat16")
    with caplog.at_level(logging.INFO, logger="spfl"):
        trainer.uploads(model.initial_vector(), batches)
        trainer.uploads(model.initial_vector(), batches)
        LocalTrainer(model, 0.1, 1, batched=False).uploads(model.initial_vector(), batches)  # float32: no notice
    assert [(r.name, r.levelno, r.getMessage()) for r in caplog.records] == [
        ("spfl", logging.INFO, "precision bfloat16 on CPU: autocast runs, but it is slower than float32 there")]
