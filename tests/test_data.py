"""spfl.simulator.data: the offline digits split, the CIFAR-10 loader on tiny real-format archives, prepared files."""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from cifar_archive import ARCHIVE, FOLDER, cifar_arrays, write_cifar_archive
from spfl.configuration.datasets import DATASET, DATASET_ROWS, DATASETS
from spfl.simulator import data
from spfl.simulator.data import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    Dataset,
    DatasetError,
    dataset_fingerprint,
    load_dataset,
    load_prepared,
    prepare_dataset,
)


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_dataset("digits", "unused")


def _one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


# ------------------------------------------------------------------------------------------------ digits

def test_digits_shapes_and_types(digits: Dataset) -> None:
    assert DATASETS == ("digits", "cifar10")
    assert digits.train_x.shape == (1437, 1, 8, 8) and digits.test_x.shape == (360, 1, 8, 8)
    assert digits.train_x.dtype == torch.float32 and digits.train_y.dtype == torch.int64
    assert digits.input_shape == (1, 8, 8) and digits.num_classes == 10
    assert set(digits.train_y.tolist()) == set(range(10)) == set(digits.test_y.tolist())


def test_digits_normalized_with_train_stats(digits: Dataset) -> None:
    assert abs(digits.train_x.mean().item()) < 1e-5
    assert abs(digits.train_x.std(unbiased=False).item() - 1.0) < 1e-5
    assert abs(digits.test_x.mean().item()) < 0.1  # same distribution, not re-centred


def test_digits_split_is_stratified_disjoint_and_complete(digits: Dataset) -> None:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    test_counts = np.bincount(digits.test_y.numpy(), minlength=10)
    expected = np.bincount(y, minlength=10) * 360 / len(y)
    assert np.all(np.abs(test_counts - expected) < 1)
    # un-normalize and check train + test is exactly the original set of images, each once
    both = torch.cat([digits.train_x, digits.test_x]).reshape(-1, 64).double()
    mean, std = _digits_stats()
    pixels = np.rint((both.numpy() * std + mean) * 16).astype(int)
    labels = np.concatenate([digits.train_y.numpy(), digits.test_y.numpy()])
    got = sorted(map(tuple, np.column_stack([pixels, labels])))
    want = sorted(map(tuple, np.column_stack([x.astype(int), y])))
    assert got == want


def _digits_stats() -> tuple[float, float]:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    test = data._stratified_test_indices(y, 360, data.DIGITS_SPLIT_SEED)
    train = np.delete(x / 16.0, test, axis=0).astype(np.float32)
    return float(train.mean(dtype=np.float64)), float(train.std(dtype=np.float64))


def test_digits_deterministic(digits: Dataset) -> None:
    again = load_dataset("digits", "elsewhere")
    assert torch.equal(again.train_x, digits.train_x) and torch.equal(again.test_y, digits.test_y)
    assert dataset_fingerprint(again) == dataset_fingerprint(digits)


def test_unknown_dataset() -> None:
    with pytest.raises(DatasetError, match="mnist") as exc:
        load_dataset("mnist", ".")
    assert "digits, cifar10" in _one_line(exc)


# ---------------------------------------------------------------------------------------------- cifar10

def test_helper_writes_python2_style_pickles(tmp_path: Path) -> None:
    write_cifar_archive(tmp_path, as_tar=False)
    path = tmp_path / FOLDER / "data_batch_1"
    as_bytes = pickle.loads(path.read_bytes(), encoding="bytes")
    as_latin1 = pickle.loads(path.read_bytes(), encoding="latin1")
    assert set(as_bytes) == {b"batch_label", b"labels", b"data", b"filenames"}
    assert set(as_latin1) == {"batch_label", "labels", "data", "filenames"}
    assert as_bytes[b"data"].dtype == np.uint8 and as_bytes[b"data"].shape == (4, 3072)
    np.testing.assert_array_equal(as_bytes[b"data"], as_latin1["data"])
    meta = pickle.loads((tmp_path / FOLDER / "batches.meta").read_bytes(), encoding="bytes")
    assert meta[b"label_names"][0] == b"airplane"


def _unnormalize_to_uint8(x: torch.Tensor) -> np.ndarray:
    mean = torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR10_STD).view(1, 3, 1, 1)
    return torch.round((x * std + mean) * 255).to(torch.int64).numpy()


@pytest.mark.parametrize("as_tar", [False, True])
def test_cifar_pixels_round_trip(tmp_path: Path, as_tar: bool) -> None:
    md5s = write_cifar_archive(tmp_path, n_train_per_batch=4, n_test=6, seed=3, as_tar=as_tar)
    assert (tmp_path / ARCHIVE).exists() == as_tar
    ds = load_dataset("cifar10", tmp_path, checksums=md5s)
    train, train_labels, test, test_labels = cifar_arrays(4, 6, seed=3)
    assert ds.train_x.shape == (20, 3, 32, 32) and ds.test_x.shape == (6, 3, 32, 32)
    assert ds.input_shape == (3, 32, 32) and ds.num_classes == 10 and ds.train_x.dtype == torch.float32
    # CIFAR rows are 1024 R, 1024 G, 1024 B, each row-major 32x32: exactly a C x H x W reshape
    np.testing.assert_array_equal(_unnormalize_to_uint8(ds.train_x), train.reshape(-1, 3, 32, 32))
    np.testing.assert_array_equal(_unnormalize_to_uint8(ds.test_x), test.reshape(-1, 3, 32, 32))
    assert ds.train_x[0, 0, 0, 0].item() == pytest.approx(-CIFAR10_MEAN[0] / CIFAR10_STD[0])  # pixel 0
    assert ds.train_x[0, 0, 0, 1].item() == pytest.approx((1 - CIFAR10_MEAN[0]) / CIFAR10_STD[0])  # 255
    assert ds.train_y.tolist() == train_labels and ds.test_y.tolist() == test_labels
    if as_tar:
        assert (tmp_path / FOLDER / "test_batch").is_file()  # extracted once; a second load reuses it
        assert torch.equal(load_dataset("cifar10", tmp_path, checksums=md5s).train_x, ds.train_x)


def test_cifar_missing_names_the_archive(tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as exc:
        load_dataset("cifar10", tmp_path / "nowhere")
    msg = _one_line(exc)
    assert str(tmp_path / "nowhere" / ARCHIVE) in msg and "cifar-10-python.tar.gz" in msg
    assert "download: true" in msg


def test_cifar_official_checksums_reject_tiny_archive(tmp_path: Path) -> None:
    write_cifar_archive(tmp_path, as_tar=True)
    with pytest.raises(DatasetError, match="md5") as exc:
        load_dataset("cifar10", tmp_path)  # checksums=None: torchvision's official md5s
    assert str(tmp_path / ARCHIVE) in _one_line(exc)
    assert not (tmp_path / FOLDER).exists()  # nothing extracted from an unverified archive


def _flip_byte(path: Path, offset: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0xFF
    path.write_bytes(bytes(raw))


def test_cifar_corrupt_batch_named(tmp_path: Path) -> None:
    md5s = write_cifar_archive(tmp_path, as_tar=False)
    _flip_byte(tmp_path / FOLDER / "data_batch_3", 200)
    with pytest.raises(DatasetError, match="md5") as exc:
        load_dataset("cifar10", tmp_path, checksums=md5s)
    assert str(tmp_path / FOLDER / "data_batch_3") in _one_line(exc)


def test_cifar_corrupt_archive_named(tmp_path: Path) -> None:
    md5s = write_cifar_archive(tmp_path, as_tar=True)
    _flip_byte(tmp_path / ARCHIVE, 100)
    with pytest.raises(DatasetError, match="md5") as exc:
        load_dataset("cifar10", tmp_path, checksums=md5s)
    assert str(tmp_path / ARCHIVE) in _one_line(exc)


def test_cifar_truncated_pickle_named_even_with_matching_md5(tmp_path: Path) -> None:
    md5s = write_cifar_archive(tmp_path, as_tar=False)
    path = tmp_path / FOLDER / "test_batch"
    path.write_bytes(path.read_bytes()[:1000])
    md5s["test_batch"] = hashlib.md5(path.read_bytes()).hexdigest()
    with pytest.raises(DatasetError, match="not a readable") as exc:
        load_dataset("cifar10", tmp_path, checksums=md5s)
    assert str(path) in _one_line(exc)


def test_cifar_download_failure_is_dataset_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision.datasets.cifar as tv_cifar

    def offline(*args: object, **kwargs: object) -> None:
        raise OSError("[Errno 101] Network is unreachable\nsecond line")

    monkeypatch.setattr(tv_cifar, "download_and_extract_archive", offline)
    with pytest.raises(DatasetError, match="download") as exc:
        load_dataset("cifar10", tmp_path, download=True)
    assert "Network is unreachable" in _one_line(exc)


def test_unknown_checksum_key(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="data_batch_9"):
        load_dataset("cifar10", tmp_path, checksums={"data_batch_9": "0" * 32})


# --------------------------------------------------------------------------------------- prepared files

def test_prepare_and_load_round_trip(tmp_path: Path) -> None:
    md5s = write_cifar_archive(tmp_path / "raw", as_tar=True)
    out = prepare_dataset("cifar10", tmp_path / "raw", tmp_path / "prep" / "cifar10.pt", checksums=md5s)
    assert out == tmp_path / "prep" / "cifar10.pt"
    assert [p.name for p in out.parent.iterdir()] == ["cifar10.pt"]  # no temporary left behind
    direct = load_dataset("cifar10", tmp_path / "raw", checksums=md5s)
    loaded = load_prepared(out)
    assert loaded.name == "cifar10" and loaded.num_classes == 10
    for field in ("train_x", "train_y", "test_x", "test_y"):
        assert torch.equal(getattr(loaded, field), getattr(direct, field))
    assert dataset_fingerprint(loaded) == dataset_fingerprint(direct)


def test_prepare_digits(tmp_path: Path, digits: Dataset) -> None:
    out = prepare_dataset("digits", tmp_path, tmp_path / "digits.pt")
    assert dataset_fingerprint(load_prepared(out)) == dataset_fingerprint(digits)


def test_load_prepared_missing_or_corrupt(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="not found") as exc:
        load_prepared(tmp_path / "absent.pt")
    assert str(tmp_path / "absent.pt") in _one_line(exc)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"this is not a torch file")
    with pytest.raises(DatasetError, match="corrupt") as exc:
        load_prepared(bad)
    assert str(bad) in _one_line(exc)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    with pytest.raises(DatasetError, match="format"):
        load_prepared(other)


def test_fingerprint_sees_one_value(digits: Dataset) -> None:
    changed_x = digits.test_x.clone()
    changed_x[5, 0, 3, 3] += 1e-3
    changed = Dataset("digits", digits.train_x, digits.train_y, changed_x, digits.test_y, 10)
    fp = dataset_fingerprint(digits)
    assert len(fp) == 16 and dataset_fingerprint(changed) != fp


def test_dataset_validates_tensors() -> None:
    x = torch.zeros(4, 1, 8, 8)
    with pytest.raises(DatasetError, match="train_y"):
        Dataset("t", x, torch.zeros(4), x, torch.zeros(4, dtype=torch.int64), 10)


def test_every_dataset_of_the_registry_has_a_loader_that_loads_what_its_row_says(digits: Dataset, tmp_path):
    """The rows are the facts settings and prepared files are checked against: the loaders must agree."""
    assert set(data.LOADERS) == set(DATASETS)
    md5s = write_cifar_archive(tmp_path, n_train_per_batch=3, n_test=4)
    # each dataset as loaded, with the split sizes of a smaller archive in its format (None: the row's own)
    loaded = {"digits": (digits, None), "cifar10": (load_dataset("cifar10", tmp_path, checksums=md5s), (15, 4))}
    assert set(loaded) == set(DATASETS), "load the new dataset here"
    for row in DATASET_ROWS:
        ds, smaller = loaded[row.name]
        assert (ds.name, ds.input_shape, ds.num_classes) == (row.name, row.input_shape, row.num_classes)
        assert ds.train_x.shape[1:] == ds.test_x.shape[1:] == row.input_shape
        assert (len(ds.train_y), len(ds.test_y)) == (smaller or (row.train_size, row.test_size)), row.name
        assert smaller is None or row.smaller_allowed, row.name
    # the standard CIFAR-10 archive: 5 training batches and one test batch of 10,000 images each
    assert (DATASET["cifar10"].train_size, DATASET["cifar10"].test_size) == (50_000, 10_000)


def test_check_dataset_source_names_missing_and_corrupt_archives(tmp_path):
    from spfl.simulator.data import check_dataset_source

    check_dataset_source("digits", tmp_path)  # nothing to check
    with pytest.raises(DatasetError, match="unknown name 'mnist'"):
        check_dataset_source("mnist", tmp_path)
    check_dataset_source("cifar10", tmp_path, download=True)  # the download will verify
    with pytest.raises(DatasetError, match="cifar-10-python.tar.gz not found"):
        check_dataset_source("cifar10", tmp_path)
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(b"truncated")
    with pytest.raises(DatasetError, match=r"cifar-10-python.tar.gz failed its md5 check"):
        check_dataset_source("cifar10", tmp_path)


def test_tiny_cifar_archive_end_to_end_through_spfl_run(tmp_path: Path, capsys) -> None:
    """What CI can show of the paper configuration without the real archive: an archive in the exact
    CIFAR-10 format, prepared once, then `spfl run` with the paper's CNN (878,538 parameters) and the
    paper config's methods on it, every record written and sane."""
    import json

    from spfl.cli import main

    md5s = write_cifar_archive(tmp_path / "raw", n_train_per_batch=8, n_test=12, seed=5, as_tar=True)
    prepared = prepare_dataset("cifar10", tmp_path / "raw", tmp_path / "cifar10.pt", checksums=md5s)
    spec = tmp_path / "spec.yaml"
    spec.write_text("dataset: cifar10\nmodel: cifar_cnn\nnum_devices: 2\npartition: iid\nbatch_size: 8\n"
                    "rounds: 2\neval_every: 1\ntotal_bandwidth_mhz: 20.0\ndeadline_ms: 12570.0\n"
                    f"data_file: {prepared}\n")
    out = tmp_path / "out"
    assert main(["run", str(spec), "--methods", "ideal,digital,scheduling,signsgd,spfl", "--out", str(out)]) == 0
    for method in ("ideal", "digital", "scheduling", "signsgd", "spfl"):
        summary = json.loads((out / method / "summary.json").read_text())
        assert summary["status"] == "ok" and summary["rounds_completed"] == 2, method
        assert summary["num_params"] == 878_538
        rows = (out / method / "metrics.csv").read_text().splitlines()
        assert len(rows) == 1 + 3  # header, round 0 and two rounds
    assert "spfl: status ok" in capsys.readouterr().out
