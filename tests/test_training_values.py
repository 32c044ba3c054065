"""spfl.simulator.training against hand-computed values and documented bounds: the evaluation's loss and accuracy on
a model whose logits are its inputs, the vmap chunk sizes, bfloat16's effect, the one notice that bfloat16
on CPU is slow, and the switch of the allocator tuning."""

from __future__ import annotations

import logging
import math

import pytest
import torch

from spfl.simulator import training
from spfl.simulator.models import build_model
from spfl.simulator.training import FlatModel, LocalTrainer, all_finite, evaluate


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
        assert [(r.name, r.levelno, r.getMessage()) for r in caplog.records] == [
            ("spfl", logging.INFO, "precision bfloat16 on CPU: autocast runs, but it is slower than float32 there")]
        caplog.clear()
        LocalTrainer(model, 0.1, 1, batched=False).uploads(model.initial_vector(), batches)
    assert caplog.records == []  # float32: no notice


@pytest.mark.parametrize("batch_size, max_samples, chunks", [
    (8, 8, [1, 1, 1, 1, 1]),  # one device's batch fills the bound: one device per vmap call
    (8, 20, [2, 2, 1]),       # 2 x 8 <= 20 < 3 x 8
    (1, 3, [3, 2]),           # single-sample batches: 3 devices per call
    (8, 4, [1, 1, 1, 1, 1]),  # a batch above the bound still goes, alone
])
def test_batched_path_keeps_each_vmap_call_within_the_sample_bound(batch_size, max_samples, chunks):
    model = identity_model()
    gen = torch.Generator().manual_seed(0)
    batches = [[(torch.randn(batch_size, 2, generator=gen), torch.randint(0, 2, (batch_size,), generator=gen))]
               for _ in range(5)]
    trainer = LocalTrainer(model, 0.1, 1, batched=True, max_batched_samples=max_samples)
    seen = []
    chunk_uploads = trainer._batched_chunk

    def recording(w, chunk_batches):
        seen.append(len(chunk_batches))
        return chunk_uploads(w, chunk_batches)

    trainer._batched_chunk = recording
    uploads, _ = trainer.uploads(model.initial_vector(), batches)
    assert seen == chunks
    reference, _ = LocalTrainer(model, 0.1, 1, batched=False).uploads(model.initial_vector(), batches)
    torch.testing.assert_close(uploads, reference, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("batched", [False, True])
def test_bfloat16_changes_the_uploads_by_more_than_float32_rounding_on_both_paths(batched):
    """bf16 keeps 8 mantissa bits: uploads move by ~1e-2 relative, float32 reorderings by ~1e-7."""
    model = FlatModel.wrap(build_model("mlp", (1, 8, 8), 10, generator=torch.Generator().manual_seed(1)))
    gen = torch.Generator().manual_seed(2)
    batches = [[(torch.randn(8, 1, 8, 8, generator=gen), torch.randint(0, 10, (8,), generator=gen))] for _ in range(3)]
    w = model.initial_vector()
    exact, _ = LocalTrainer(model, 0.05, 1, batched=batched).uploads(w, batches)
    bf16, _ = LocalTrainer(model, 0.05, 1, batched=batched, precision="bfloat16").uploads(w, batches)
    relative = ((bf16 - exact).norm(dim=1) / exact.norm(dim=1)).min().item()
    assert 1e-4 < relative < 0.3


@pytest.mark.parametrize("setting, tunes", [("1", True), ("0", False), (None, False)])
def test_allocator_tuning_is_switched_on_by_its_environment_variable_only(monkeypatch, setting, tunes):
    """Whether the trainer asks for the tuning (recorded, not applied: it is process-wide)."""
    calls = []
    monkeypatch.setattr(training, "reuse_freed_memory", lambda: calls.append(True) or True)
    if setting is None:
        monkeypatch.delenv("SPFL_MALLOC_TUNING", raising=False)
    else:
        monkeypatch.setenv("SPFL_MALLOC_TUNING", setting)
    LocalTrainer(identity_model(), 0.1, 1)
    assert calls == ([True] if tunes else [])


def test_the_trainer_never_changes_the_models_own_parameters():
    """The sequential path trains a private copy: the shared module keeps its initial weights."""
    model = identity_model()
    batches = [[(torch.tensor([[1.0, 2.0]]), torch.tensor([0]))], [(torch.tensor([[0.5, -1.0]]), torch.tensor([1]))]]
    trainer = LocalTrainer(model, 0.1, 2, batched=False)
    trainer.uploads(torch.tensor([2.0, 1.0, -1.0, 3.0, 0.5, 0.25]), [batches[0] * 2, batches[1] * 2])
    assert model.initial_vector().tolist() == [1.0, 0.0, 0.0, 1.0, 0.0, 0.0]


@pytest.mark.parametrize("values", [[1, 2, 3], [True, False]])
def test_integer_and_boolean_tensors_are_finite(values):
    assert all_finite(torch.tensor(values))


def test_default_trainer_on_cpu_uploads_the_cross_entropy_gradient():
    """Logits = x = (1, 2), label 0: dL/dlogits = softmax - onehot = (-s, s) with s = e / (1 + e), so
    dL/dW = (-s, s) x^T and dL/db = (-s, s); the upload (FedSGD) is that gradient, W row-major then b."""
    model = identity_model()
    uploads, losses = LocalTrainer(model, 0.1, 1).uploads(model.initial_vector(),
                                                          [[(torch.tensor([[1.0, 2.0]]), torch.tensor([0]))]])
    s = math.e / (1 + math.e)
    assert uploads[0].tolist() == pytest.approx([-s, -2 * s, s, 2 * s, -s, s], rel=1e-6)
    assert losses.tolist() == pytest.approx([math.log1p(math.e)], rel=1e-6)
