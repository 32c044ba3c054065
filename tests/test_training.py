"""spfl.simulator.training: the batched path agrees with the sequential one, float32 is bit-stable, bf16 is close.

Tolerances (stated once, used below):

- batched vs sequential, float32: per device ||g_batched - g_seq|| / ||g_seq|| <= 1e-5 and losses within
  1e-5.  Not bitwise: vmap reorders reductions (and can flip a max-pool tie), so the uploads differ in the
  last bits; measured 1e-7 (E = 1) to 1e-6 (E = 3).
- bfloat16 autocast vs float32: per device cosine similarity >= 0.95 and losses within 0.05 (bf16 keeps
  8 mantissa bits; measured cosine >= 0.98, relative error 3-17 %, loss error < 1e-3).
- CUDA (batched, exact float32) vs CPU (sequential): a float32 tolerance, per device relative error
  <= 1e-4 and losses within 1e-5: other kernels and summation orders, but no TF32 (with cuDNN's default
  TF32 the error was 0.074).
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

from spfl.simulator.models import build_model
from spfl.simulator.training import PRECISIONS, FlatModel, LocalTrainer, all_finite, evaluate, precision_mode

SHAPES = {"mlp": (1, 8, 8), "cifar_cnn": (3, 32, 32)}
BATCHED_RTOL, BATCHED_LOSS_ATOL = 1e-5, 1e-5
BF16_MIN_COSINE, BF16_LOSS_ATOL = 0.95, 0.05
CUDA_RTOL, CUDA_LOSS_ATOL = 1e-4, 1e-5


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


@pytest.mark.parametrize("batched", [False, True])
def test_reuse_output_writes_each_round_into_one_buffer(batched):
    """The default: no fresh K x d tensor per round, same values as fresh buffers."""
    model, w, batches = _setup("mlp", 1)
    _, _, other = _setup("mlp", 1, sizes=(8, 8, 3, 8))
    trainer = LocalTrainer(model, 0.05, 1, batched=batched)
    fresh = LocalTrainer(model, 0.05, 1, batched=batched, reuse_output=False)
    first, _ = trainer.uploads(w, batches)
    first_values = first.clone()
    assert torch.equal(first, fresh.uploads(w, batches)[0])
    second, _ = trainer.uploads(w, other)
    assert second.data_ptr() == first.data_ptr()
    assert torch.equal(second, fresh.uploads(w, other)[0])
    kept, _ = fresh.uploads(w, batches)  # reuse_output=False: a result survives the next call
    fresh.uploads(w, other)
    assert torch.equal(kept, first_values) and not torch.equal(first_values, second)


# Run in a child process: the tuning is process-wide and would change malloc for the rest of the session.
_ALLOCATOR_PROBE = """
import ctypes, json, torch
from spfl.simulator.models import build_model
from spfl.simulator.training import FlatModel, LocalTrainer, reuse_freed_memory

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

def heap_kept_after_a_large_free():
    block = libc.malloc(64 << 20)
    held = libc.mallinfo2().arena
    libc.free(block)
    return libc.mallinfo2().arena >= held  # not trimmed back to the system

model = FlatModel.wrap(build_model("mlp", (1, 8, 8), 10, generator=torch.Generator().manual_seed(1)))
gen = torch.Generator().manual_seed(2)
batches = [[(torch.randn(8, 1, 8, 8, generator=gen), torch.randint(0, 10, (8,), generator=gen))] for _ in range(3)]
w = model.initial_vector()
before, _ = LocalTrainer(model, 0.05, 1).uploads(w, batches)
untuned = mapped_by_a_large_malloc()
tuned = reuse_freed_memory()
after, _ = LocalTrainer(model, 0.05, 1).uploads(w, batches)
print(json.dumps({"untuned": untuned, "tuned": tuned, "tuned_mapped": mapped_by_a_large_malloc(),
                  "again": reuse_freed_memory(), "same_uploads": bool(torch.equal(before, after)),
                  "kept": heap_kept_after_a_large_free()}))
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the tuning is glibc's mallopt")
def test_allocator_tuning_keeps_large_blocks_in_the_heap_and_changes_no_value():
    """Untuned glibc serves a 64 MiB malloc by mmap; tuned, from the heap, which a free does not trim (kept
    for reuse); uploads unchanged."""
    result = subprocess.run([sys.executable, "-c", _ALLOCATOR_PROBE], capture_output=True, text=True, check=True,
                            timeout=300)
    probe = json.loads(result.stdout)
    assert probe["untuned"] >= 64 << 20
    assert probe["tuned"] is True and probe["again"] is True
    assert probe["tuned_mapped"] == 0 and probe["kept"] is True
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
    assert torch.backends.cudnn.allow_tf32  # PyTorch's default, which the trainer must override
    assert _relative_error(got.cpu(), ref).max() <= CUDA_RTOL
    np.testing.assert_allclose(got_loss, ref_loss, rtol=0, atol=CUDA_LOSS_ATOL)


# --- precision modes --------------------------------------------------------------------------------

_FP32_OWNERS = ("backends", "backends.cuda.matmul", "backends.cudnn", "backends.cudnn.conv", "backends.cudnn.rnn",
                "backends.mkldnn", "backends.mkldnn.matmul", "backends.mkldnn.conv", "backends.mkldnn.rnn")


def _owner(path: str):
    obj = torch
    for name in path.split("."):
        obj = getattr(obj, name)
    return obj


def _tf32_state() -> dict:
    """Every global setting precision_mode touches, as plain values (None where PyTorch refuses to read)."""
    def read(getter):
        try:
            return getter()
        except RuntimeError:  # PyTorch refuses to read a legacy setting once the per-operator ones disagree
            return None
    state = {"matmul.allow_tf32": read(lambda: torch.backends.cuda.matmul.allow_tf32),
             "cudnn.allow_tf32": read(lambda: torch.backends.cudnn.allow_tf32),
             "float32_matmul_precision": read(torch.get_float32_matmul_precision)}
    if hasattr(torch.backends, "fp32_precision"):
        state.update({path: _owner(path).fp32_precision for path in _FP32_OWNERS})
    return state


def _set_legacy(tf32: bool, matmul_precision: str) -> None:
    torch.set_float32_matmul_precision(matmul_precision)
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32


@pytest.fixture
def restore_tf32_state():
    """Whatever a test does to the global TF32 settings, the next test starts from PyTorch's defaults."""
    _set_legacy(False, "highest")
    torch.backends.cudnn.allow_tf32 = True  # PyTorch's default
    before = _tf32_state()
    yield
    _set_legacy(False, "highest")
    torch.backends.cudnn.allow_tf32 = True
    assert _tf32_state() == before


def _expect_inside(precision: str) -> dict:
    tf32 = precision == "tf32"
    return {"matmul.allow_tf32": tf32, "cudnn.allow_tf32": tf32,
            "float32_matmul_precision": "high" if tf32 else "highest"}


def _starting_states():
    yield "defaults", lambda: None
    yield "all tf32 (legacy API)", lambda: _set_legacy(True, "high")
    yield "all exact (legacy API)", lambda: _set_legacy(False, "highest")
    yield "medium", lambda: _set_legacy(True, "medium")
    if hasattr(torch.backends, "fp32_precision"):
        def mixed():  # conv and rnn disagree: PyTorch then refuses to read the legacy cuDNN flag
            torch.backends.cudnn.conv.fp32_precision = "tf32"
            torch.backends.cudnn.rnn.fp32_precision = "ieee"
        yield "mixed legacy and per-operator APIs", mixed


@pytest.mark.parametrize("precision", PRECISIONS)
def test_precision_mode_sets_the_flags_inside_and_restores_them_after(precision, restore_tf32_state):
    for name, arrange in _starting_states():
        arrange()
        before = _tf32_state()
        with precision_mode(precision):
            inside = _tf32_state()
        assert _tf32_state() == before, name
        assert {k: inside[k] for k in _expect_inside(precision)} == _expect_inside(precision), name
        if precision != "tf32" and "backends.cudnn.conv" in inside:  # every operator pinned to IEEE
            assert all(inside[f"backends.{op}"] == "ieee" for op in
                       ("cuda.matmul", "cudnn.conv", "cudnn.rnn", "mkldnn.matmul", "mkldnn.conv", "mkldnn.rnn")), name
        with pytest.raises(KeyError, match="inside"):
            with precision_mode(precision):
                raise KeyError("inside")
        assert _tf32_state() == before, f"{name}, after an exception"


def test_precision_mode_refuses_an_unknown_precision():
    with pytest.raises(ValueError, match="precision 'float16' is invalid: allowed float32, tf32, bfloat16"):
        with precision_mode("float16"):
            pass


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("batched", [False, True])
def test_trainer_and_evaluation_compute_under_the_precision_mode(precision, batched, restore_tf32_state):
    """The flags seen by the forward pass itself, and the global state restored after each call."""
    model, w, batches = _setup("mlp", 1)
    seen = []
    model.module.register_forward_pre_hook(lambda *_: seen.append(
        {k: _tf32_state()[k] for k in ("matmul.allow_tf32", "cudnn.allow_tf32", "float32_matmul_precision")}))
    _set_legacy(precision != "tf32", "medium")  # the opposite of what the mode sets
    before = _tf32_state()
    try:
        LocalTrainer(model, 0.05, 1, batched=batched, precision=precision).uploads(w, batches)
        assert seen and all(s == _expect_inside(precision) for s in seen)
        assert _tf32_state() == before
        seen.clear()
        x, y = batches[0][0]
        evaluate(model, w, x, y)  # exact float32 by default, whatever the training used
        assert seen and all(s == _expect_inside("float32") for s in seen)
        seen.clear()
        evaluate(model, w, x, y, precision=precision)
        assert seen and all(s == _expect_inside(precision) for s in seen)
        assert _tf32_state() == before
        broken = [[(x, y[:2])]]  # 8 samples, 2 labels: the loss raises inside the trainer
        with pytest.raises((RuntimeError, ValueError)):
            LocalTrainer(model, 0.05, 1, batched=batched, precision=precision).uploads(w, broken)
        assert _tf32_state() == before
    finally:
        model.module._forward_pre_hooks.clear()


@pytest.mark.parametrize("name", ["mlp", "cifar_cnn"])
@pytest.mark.parametrize("batched", [False, True])
def test_float32_results_do_not_depend_on_global_tf32_settings(name, batched, restore_tf32_state):
    """precision float32 gives the same bits whether the process left TF32 on or off."""
    model, w, batches = _setup(name, 1)
    exact, exact_loss = LocalTrainer(model, 0.05, 1, batched=batched).uploads(w, batches)
    exact_eval = evaluate(model, w, *batches[0][0])
    _set_legacy(True, "medium")
    if hasattr(torch.backends, "fp32_precision"):
        torch.backends.mkldnn.matmul.fp32_precision = "bf16"  # oneDNN's reduced-precision float32 mode
    again, again_loss = LocalTrainer(model, 0.05, 1, batched=batched).uploads(w, batches)
    assert torch.equal(again, exact) and np.array_equal(again_loss, exact_loss)
    assert evaluate(model, w, *batches[0][0]) == exact_eval


@pytest.mark.parametrize("batched", [False, True])
def test_tf32_runs_and_stays_close_to_float32(batched, restore_tf32_state):
    """tf32 is an opt-in: same code path as float32 (no autocast), TF32 where the hardware has it."""
    model, w, batches = _setup("cifar_cnn", 1)
    ref, ref_loss = LocalTrainer(model, 0.05, 1, batched=False).uploads(w, batches)
    got, got_loss = LocalTrainer(model, 0.05, 1, batched=batched, precision="tf32").uploads(w, batches)
    assert got.dtype == torch.float32
    assert _relative_error(got, ref).max() <= 1e-2  # TF32 keeps 10 mantissa bits
    np.testing.assert_allclose(got_loss, ref_loss, rtol=0, atol=1e-3)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_all_finite_agrees_with_isfinite(dtype):
    """Every position class (first, vector body, last, an odd tail) and every non-finite kind."""
    base = torch.randn(5, 1037, generator=torch.Generator().manual_seed(3)).to(dtype)
    assert all_finite(base) and all_finite(base[:, :0]) and all_finite(base.t())
    for value in (float("nan"), float("inf"), -float("inf")):
        for index in ((0, 0), (2, 511), (4, 1036), (3, 1031)):
            bad = base.clone()
            bad[index] = value
            assert all_finite(bad) == bool(torch.isfinite(bad).all()) is False, (value, index)
            assert not all_finite(bad.t()) and not all_finite(bad[index[0]])
    assert all_finite(torch.full((3,), torch.finfo(dtype).max, dtype=dtype))
