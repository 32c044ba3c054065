"""spfl.training: the batched path agrees with the sequential one, float32 is bit-stable, bf16 is close.

Tolerances (stated once, used below):

- batched vs sequential, float32: per device ||g_batched - g_seq|| / ||g_seq|| <= 1e-5 and losses within
  1e-5.  Not bitwise: vmap reorders reductions (and can flip a max-pool tie), so the uploads differ in the
  last bits; measured 1e-7 (E = 1) to 1e-6 (E = 3).
- bfloat16 autocast vs float32: per device cosine similarity >= 0.95 and losses within 0.05 (bf16 keeps
  8 mantissa bits; measured cosine >= 0.98, relative error 3-17 %, loss error < 1e-3).
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from spfl.models import build_model
from spfl.training import FlatModel, LocalTrainer

SHAPES = {"mlp": (1, 8, 8), "cifar_cnn": (3, 32, 32)}
BATCHED_RTOL, BATCHED_LOSS_ATOL = 1e-5, 1e-5
BF16_MIN_COSINE, BF16_LOSS_ATOL = 0.95, 0.05


@pytest.fixture(autouse=True, scope="module")
def _two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def _setup(name: str, local_steps: int, sizes=(8, 5, 8, 8)):
    """A model, its flat weights, and per-device batches (device 1 smaller: unequal batch sizes)."""
    model = FlatModel.wrap(build_model(name, SHAPES[name], 10, generator=torch.Generator().manual_seed(1)))
    gen = torch.Generator().manual_seed(2)
    batches = [[(torch.randn(n, *SHAPES[name], generator=gen), torch.randint(0, 10, (n,), generator=gen))
                for _ in range(local_steps)] for n in sizes]
    return model, model.initial_vector(), batches


def _relative_error(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).norm(dim=1) / b.norm(dim=1)


@pytest.mark.parametrize("name", ["mlp", "cifar_cnn"])
@pytest.mark.parametrize("local_steps", [1, 3])
@pytest.mark.parametrize("max_batched_samples", [16384, 8])  # one vmap chunk, or one device per chunk
def test_batched_equals_sequential(name, local_steps, max_batched_samples):
    model, w, batches = _setup(name, local_steps)
    seq, seq_loss = LocalTrainer(model, 0.05, local_steps, batched=False).uploads(w, batches)
    bat, bat_loss = LocalTrainer(model, 0.05, local_steps, batched=True,
                                 max_batched_samples=max_batched_samples).uploads(w, batches)
    assert bat.shape == seq.shape == (len(batches), model.num_params)
    assert _relative_error(bat, seq).max() <= BATCHED_RTOL
    np.testing.assert_allclose(bat_loss, seq_loss, rtol=0, atol=BATCHED_LOSS_ATOL)


@pytest.mark.parametrize("name", ["mlp", "cifar_cnn"])
def test_float32_sequential_is_deterministic_and_plain_autograd(name):
    """Same inputs -> the same bits, and exactly what module.backward() gives (FedSGD, E = 1)."""
    model, w, batches = _setup(name, 1)
    first, first_loss = LocalTrainer(model, 0.05, 1, batched=False).uploads(w, batches)
    again, again_loss = LocalTrainer(model, 0.05, 1, batched=False).uploads(w, batches)
    assert torch.equal(first, again) and np.array_equal(first_loss, again_loss)
    module = model.module
    torch.nn.utils.vector_to_parameters(w, module.parameters())
    for k, [(x, y)] in enumerate(batches):
        module.zero_grad()
        loss = F.cross_entropy(module(x), y)
        loss.backward()
        assert torch.equal(first[k], torch.nn.utils.parameters_to_vector(p.grad for p in module.parameters()))
        assert first_loss[k] == loss.item()


def test_local_steps_upload_is_model_delta_over_learning_rate():
    model, w, batches = _setup("mlp", 3)
    uploads, _ = LocalTrainer(model, 0.1, 3, batched=False).uploads(w, batches)
    for k, device_batches in enumerate(batches):
        w_local = w.clone()
        for x, y in device_batches:
            w_local = w_local - 0.1 * torch.func.grad(model.loss)(w_local, x, y)
        assert torch.equal(uploads[k], (w - w_local) / 0.1)


@pytest.mark.parametrize("name", ["mlp", "cifar_cnn"])
@pytest.mark.parametrize("batched", [False, True])
@pytest.mark.parametrize("local_steps", [1, 2])
def test_bfloat16_runs_and_stays_close(name, batched, local_steps):
    model, w, batches = _setup(name, local_steps)
    ref, ref_loss = LocalTrainer(model, 0.05, local_steps, batched=False).uploads(w, batches)
    bf, bf_loss = LocalTrainer(model, 0.05, local_steps, batched=batched, precision="bfloat16").uploads(w, batches)
    assert bf.dtype == torch.float32 and bool(torch.isfinite(bf).all())
    assert not torch.equal(bf, ref)  # autocast really ran in bf16
    assert F.cosine_similarity(bf, ref, dim=1).min() >= BF16_MIN_COSINE
    np.testing.assert_allclose(bf_loss, ref_loss, rtol=0, atol=BF16_LOSS_ATOL)


def test_default_path_is_batched_on_cuda_only():
    model, _, _ = _setup("mlp", 1)
    auto = LocalTrainer(model, 0.05, 1)
    assert not auto.uses_batched(torch.device("cpu"))
    assert auto.uses_batched(torch.device("cuda"))
    assert LocalTrainer(model, 0.05, 1, batched=True).uses_batched(torch.device("cpu"))
    assert not LocalTrainer(model, 0.05, 1, batched=False).uses_batched(torch.device("cuda"))


def test_unknown_precision_is_refused():
    model, _, _ = _setup("mlp", 1)
    with pytest.raises(ValueError, match="precision 'float16' is invalid"):
        LocalTrainer(model, 0.05, 1, precision="float16")


def test_reuse_output_writes_each_round_into_one_buffer():
    model, w, batches = _setup("mlp", 1)
    _, _, other = _setup("mlp", 1, sizes=(8, 8, 3, 8))
    trainer = LocalTrainer(model, 0.05, 1, reuse_output=True)
    first, _ = trainer.uploads(w, batches)
    assert torch.equal(first, LocalTrainer(model, 0.05, 1).uploads(w, batches)[0])
    second, _ = trainer.uploads(w, other)
    assert second.data_ptr() == first.data_ptr()
    assert torch.equal(second, LocalTrainer(model, 0.05, 1).uploads(w, other)[0])


# Run in a child process: the tuning is process-wide and would change malloc for the rest of the session.
_ALLOCATOR_PROBE = """
import ctypes, json, torch
from spfl.models import build_model
from spfl.training import FlatModel, LocalTrainer, reuse_freed_memory

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]

def mapped_by_a_large_malloc():
    before = libc.mallinfo2().hblkhd
    block = libc.malloc(64 << 20)
    grown = libc.mallinfo2().hblkhd - before
    libc.free(block)
    return grown

model = FlatModel.wrap(build_model("mlp", (1, 8, 8), 10, generator=torch.Generator().manual_seed(1)))
gen = torch.Generator().manual_seed(2)
batches = [[(torch.randn(8, 1, 8, 8, generator=gen), torch.randint(0, 10, (8,), generator=gen))] for _ in range(3)]
w = model.initial_vector()
before, _ = LocalTrainer(model, 0.05, 1).uploads(w, batches)
untuned = mapped_by_a_large_malloc()
tuned = reuse_freed_memory()
after, _ = LocalTrainer(model, 0.05, 1).uploads(w, batches)
print(json.dumps({"untuned": untuned, "tuned": tuned, "tuned_mapped": mapped_by_a_large_malloc(),
                  "again": reuse_freed_memory(), "same_uploads": bool(torch.equal(before, after))}))
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the tuning is glibc's mallopt")
def test_allocator_tuning_keeps_large_blocks_in_the_heap_and_changes_no_value():
    """Untuned glibc serves a 64 MiB malloc by mmap; tuned, from the heap (kept for reuse); uploads unchanged."""
    result = subprocess.run([sys.executable, "-c", _ALLOCATOR_PROBE], capture_output=True, text=True, check=True,
                            timeout=300)
    probe = json.loads(result.stdout)
    assert probe["untuned"] >= 64 << 20
    assert probe["tuned"] is True and probe["again"] is True
    assert probe["tuned_mapped"] == 0
    assert probe["same_uploads"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("local_steps", [1, 2])
def test_cuda_batched_matches_cpu_sequential(local_steps):
    model, w, batches = _setup("cifar_cnn", local_steps)
    ref, ref_loss = LocalTrainer(model, 0.05, local_steps, batched=False).uploads(w, batches)
    model.module.to("cuda")
    on_gpu = [[(x.cuda(), y.cuda()) for x, y in device] for device in batches]
    try:
        got, got_loss = LocalTrainer(model, 0.05, local_steps).uploads(w.cuda(), on_gpu)
    finally:
        model.module.to("cpu")
    # TF32 may be on for cuDNN convolutions: a looser bound than the CPU one.
    assert _relative_error(got.cpu(), ref).max() <= 1e-2
    np.testing.assert_allclose(got_loss, ref_loss, rtol=0, atol=1e-3)
