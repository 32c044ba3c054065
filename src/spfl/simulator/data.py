"""Loading the datasets of the registry (:mod:`spfl.configuration.datasets`), one loader per dataset.

A run keeps each split as ONE normalized float32 tensor (N x C x H x W) so it can be moved to the device
once and indexed per mini-batch; no DataLoader, no per-sample transforms. ``prepare_dataset`` writes the
tensors to a single file so that the many runs of a sweep skip decoding and normalizing.

CIFAR-10 goes through torchvision's own ``CIFAR10`` class, which verifies every batch file's md5. Tests
substitute the md5s of tiny archives through ``checksums=`` (a subclass with its own ``train_list`` /
``test_list`` / ``meta`` / ``tgz_md5``), so the verification really runs there too; ``checksums=None``
(the default) means torchvision's official values and nothing is relaxed in production.

A dataset's facts (sizes, sample shape, classes) are its registry row; its loader is registered in
``LOADERS`` under the row's name, and a prepared file is checked against the row.
"""

from __future__ import annotations

import hashlib
import pickle
import tarfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from spfl.configuration.datasets import DATASET, DATASETS
from spfl.records import write_atomic

# digits: a fixed stratified split so every run, seed and machine sees the same samples (the registry's
# sizes).  The split is done with numpy's PCG64 generator seeded with this constant (not with
# scikit-learn's splitters, whose algorithm may change between versions).
DIGITS_SPLIT_SEED = 20250

# Per-channel mean / std of the CIFAR-10 training set on [0, 1] pixels (the std of the pixels themselves,
# not the frequently copied 0.2023/0.1994/0.2010, which is the mean of per-image stds).
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_FILES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch", "batches.meta")

PREPARED_FORMAT = "spfl-dataset-v2"  # v2: the file records its facts (sizes, sample shape, classes)


class DatasetError(ValueError):
    """A dataset could not be loaded; the message is one line naming the file and what to do."""


@dataclass(frozen=True, eq=False)
class Dataset:
    """Both splits of a dataset as whole tensors (inputs normalized float32 N x C x H x W, labels int64)."""

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int

    def __post_init__(self) -> None:
        for split in ("train", "test"):
            x, y = getattr(self, f"{split}_x"), getattr(self, f"{split}_y")
            if x.dtype != torch.float32 or x.dim() != 4:
                raise DatasetError(f"{self.name}: {split}_x must be float32 N x C x H x W, got {x.dtype} "
                                   f"{tuple(x.shape)}")
            if y.dtype != torch.int64 or y.shape != (x.shape[0],):
                raise DatasetError(f"{self.name}: {split}_y must be int64 of shape ({x.shape[0]},), got "
                                   f"{y.dtype} {tuple(y.shape)}")
        if self.train_x.shape[1:] != self.test_x.shape[1:]:
            raise DatasetError(f"{self.name}: train and test inputs differ in shape: "
                               f"{tuple(self.train_x.shape[1:])} vs {tuple(self.test_x.shape[1:])}")

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one sample, what ``spfl.simulator.models.build_model`` needs."""
        c, h, w = self.train_x.shape[1:]
        return int(c), int(h), int(w)


@dataclass(frozen=True)
class Loader:
    """How one dataset of the registry is read: ``load(data_dir, download, checksums)`` returns it whole,
    ``check_source(data_dir)``, where the dataset has files to find, checks them without loading."""

    load: Callable[[Path, bool, Mapping[str, str] | None], Dataset]
    check_source: Callable[[Path], None] | None = None


def load_dataset(name: str, data_dir: str | Path, download: bool = False, *,
                 checksums: Mapping[str, str] | None = None) -> Dataset:
    """Load ``name`` (one of DATASETS) as normalized tensors.

    ``data_dir`` is where the CIFAR-10 archive lives (digits ship with scikit-learn and ignore it).
    ``checksums`` maps CIFAR-10 file names (``data_batch_1`` .. ``test_batch``, ``batches.meta``,
    ``cifar-10-python.tar.gz``) to md5s replacing torchvision's official ones; meant for tests only.
    """
    return _loader(name).load(Path(data_dir), download, checksums)


def _loader(name: str) -> Loader:
    if name not in LOADERS:
        raise DatasetError(f"dataset: unknown name {name!r}; allowed: {', '.join(DATASETS)}")
    return LOADERS[name]


# ------------------------------------------------------------------------------------------------ digits

def _stratified_test_indices(y: np.ndarray, test_size: int, seed: int) -> np.ndarray:
    """Pick test indices so each class keeps its share (largest-remainder rounding to hit test_size)."""
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(y, return_counts=True)
    quota = counts * test_size / len(y)
    n_test = np.floor(quota).astype(int)
    shortfall = test_size - n_test.sum()
    n_test[np.argsort(-(quota - n_test), kind="stable")[:shortfall]] += 1
    picked = [rng.permutation(np.flatnonzero(y == c))[:k] for c, k in zip(classes, n_test, strict=True)]
    return np.sort(np.concatenate(picked))


def _load_digits(root: Path, download: bool, checksums: Mapping[str, str] | None) -> Dataset:
    """scikit-learn's bundled 8x8 digits (no files, so the arguments are unused), [0,1]-scaled then
    standardized with the train split's stats.

    The statistics are scalar (over all train pixels): per-pixel ones would divide by zero on the
    always-blank border pixels.
    """
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    y = y.astype(np.int64)
    test_idx = _stratified_test_indices(y, DATASET["digits"].test_size, DIGITS_SPLIT_SEED)
    train_mask = np.ones(len(y), dtype=bool)
    train_mask[test_idx] = False
    train_x, test_x = x[train_mask], x[test_idx]
    mean, std = train_x.mean(dtype=np.float64), train_x.std(dtype=np.float64)

    def norm(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(((a - mean) / std).astype(np.float32))

    return Dataset("digits", norm(train_x), torch.from_numpy(y[train_mask]), norm(test_x),
                   torch.from_numpy(y[test_idx]), num_classes=10)


# ---------------------------------------------------------------------------------------------- cifar10

def _cifar_class(checksums: Mapping[str, str] | None) -> type:
    """torchvision's CIFAR10, or a subclass whose md5 table is ``checksums`` (official values elsewhere)."""
    from torchvision.datasets import CIFAR10

    if checksums is None:
        return CIFAR10
    allowed = CIFAR10_FILES + (CIFAR10_ARCHIVE,)
    unknown = sorted(set(checksums) - set(allowed))
    if unknown:
        raise DatasetError(f"cifar10: checksums has unknown file {unknown[0]!r}; allowed: "
                           f"{', '.join(allowed)}")

    def md5(fname: str, official: str) -> str:
        return checksums.get(fname, official)

    attrs = {
        "train_list": [[f, md5(f, m)] for f, m in CIFAR10.train_list],
        "test_list": [[f, md5(f, m)] for f, m in CIFAR10.test_list],
        "meta": {**CIFAR10.meta, "md5": md5(CIFAR10.meta["filename"], CIFAR10.meta["md5"])},
        "tgz_md5": md5(CIFAR10.filename, CIFAR10.tgz_md5),
    }
    return type("CIFAR10WithChecksums", (CIFAR10,), attrs)


def _expected_md5s(cls: Any) -> dict[str, str]:
    table = {f: m for f, m in cls.train_list + cls.test_list}
    table[cls.meta["filename"]] = cls.meta["md5"]
    return table


def _brief(exc: BaseException) -> str:
    """Exception type and the first line of its message, to keep error messages on one line."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _missing_message(root: Path) -> str:
    return (f"cifar10: {root / CIFAR10_ARCHIVE} not found (or not extracted to {root / CIFAR10_FOLDER}); "
            f"place the standard archive from {CIFAR10_URL} there or set download: true on a machine "
            f"with network")


def _ensure_cifar_files(root: Path, cls: Any, download: bool) -> None:
    """Make the batch files exist: use them, else extract a verified local archive, else download."""
    from torchvision.datasets.utils import calculate_md5, check_integrity, extract_archive

    folder = root / CIFAR10_FOLDER
    if all((folder / f).is_file() for f in CIFAR10_FILES):
        return
    archive = root / CIFAR10_ARCHIVE
    if archive.is_file():
        if not check_integrity(str(archive), cls.tgz_md5):
            raise DatasetError(f"cifar10: {archive} failed its md5 check (expected {cls.tgz_md5}, got "
                               f"{calculate_md5(str(archive))}); replace it with the archive from "
                               f"{CIFAR10_URL}")
        try:
            extract_archive(str(archive), str(root))
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise DatasetError(f"cifar10: {archive} could not be extracted ({_brief(exc)}); replace it "
                               f"with the archive from {CIFAR10_URL}") from exc
    elif download:
        try:
            cls(root=str(root), train=True, download=True)
        except Exception as exc:  # network errors come as URLError, OSError, RuntimeError, ...
            raise DatasetError(f"cifar10: download of {CIFAR10_URL} into {root} failed ({_brief(exc)}); "
                               f"place the archive there by hand") from exc
    else:
        raise DatasetError(_missing_message(root))
    absent = [f for f in CIFAR10_FILES if not (folder / f).is_file()]
    if absent:
        raise DatasetError(f"cifar10: {folder / absent[0]} still missing after extracting {archive}; "
                           f"the archive is not the standard one from {CIFAR10_URL}")


def _verify_cifar_files(root: Path, cls: Any) -> None:
    """Check each file's md5 up front so the error names the culprit (torchvision's says only 'corrupted')."""
    from torchvision.datasets.utils import calculate_md5

    for fname, expected in _expected_md5s(cls).items():
        path = root / CIFAR10_FOLDER / fname
        got = calculate_md5(str(path))
        if got != expected:
            raise DatasetError(f"cifar10: {path} failed its md5 check (expected {expected}, got {got}); "
                               f"delete {root / CIFAR10_FOLDER} and re-extract the archive from "
                               f"{CIFAR10_URL}")


def _unreadable_file(folder: Path) -> Path | None:
    """The first batch file that does not unpickle (used only to name the file after a load failure)."""
    for fname in CIFAR10_FILES:
        try:
            with open(folder / fname, "rb") as fh:
                pickle.load(fh, encoding="latin1")
        except Exception:
            return folder / fname
    return None


def _cifar_to_tensors(data: np.ndarray, targets: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 N x H x W x C (torchvision's layout) -> normalized float32 N x C x H x W, int64 labels."""
    x = torch.from_numpy(np.ascontiguousarray(data.transpose(0, 3, 1, 2))).to(torch.float32).div_(255.0)
    mean = torch.tensor(CIFAR10_MEAN, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR10_STD, dtype=torch.float32).view(1, 3, 1, 1)
    return x.sub_(mean).div_(std), torch.tensor(targets, dtype=torch.int64)


def _load_cifar10(root: Path, download: bool, checksums: Mapping[str, str] | None) -> Dataset:
    cls = _cifar_class(checksums)
    _ensure_cifar_files(root, cls, download)
    _verify_cifar_files(root, cls)
    try:
        train = cls(root=str(root), train=True, download=False)
        test = cls(root=str(root), train=False, download=False)
    except Exception as exc:  # truncated / foreign pickles with matching md5s (custom checksums)
        bad = _unreadable_file(root / CIFAR10_FOLDER) or root / CIFAR10_FOLDER
        raise DatasetError(f"cifar10: {bad} is not a readable CIFAR-10 batch ({_brief(exc)}); "
                           f"replace it from the archive at {CIFAR10_URL}") from exc
    train_x, train_y = _cifar_to_tensors(train.data, train.targets)
    test_x, test_y = _cifar_to_tensors(test.data, test.targets)
    return Dataset("cifar10", train_x, train_y, test_x, test_y, num_classes=len(train.classes))


def _check_cifar10_source(root: Path) -> None:
    """The batch files are there with their official md5s, or the archive is."""
    from torchvision.datasets import CIFAR10
    from torchvision.datasets.utils import calculate_md5, check_integrity

    if all((root / CIFAR10_FOLDER / f).is_file() for f in CIFAR10_FILES):
        _verify_cifar_files(root, CIFAR10)
        return
    archive = root / CIFAR10_ARCHIVE
    if not archive.is_file():
        raise DatasetError(_missing_message(root))
    if not check_integrity(str(archive), CIFAR10.tgz_md5):
        raise DatasetError(f"cifar10: {archive} failed its md5 check (expected {CIFAR10.tgz_md5}, got "
                           f"{calculate_md5(str(archive))}); replace it with the archive from {CIFAR10_URL}")


# One loader per row of the registry (spfl.configuration.datasets), under the row's name.
LOADERS: dict[str, Loader] = {
    "digits": Loader(_load_digits),
    "cifar10": Loader(_load_cifar10, _check_cifar10_source),
}


# --------------------------------------------------------------------------------------- prepared files

def dataset_facts(ds: Dataset) -> dict[str, Any]:
    """What a prepared file records about the data it holds (checked against the tensors on loading)."""
    return {"name": ds.name, "train_size": int(ds.train_x.shape[0]), "test_size": int(ds.test_x.shape[0]),
            "input_shape": list(ds.input_shape), "num_classes": int(ds.num_classes)}


def prepare_dataset(name: str, data_dir: str | Path, out_path: str | Path, download: bool = False, *,
                    checksums: Mapping[str, str] | None = None) -> Path:
    """Load ``name`` and save its tensors to ``out_path`` (atomically) for fast loading by the runs, with
    the facts of what it holds (``dataset_facts``)."""
    ds = load_dataset(name, data_dir, download, checksums=checksums)
    out = Path(out_path)
    payload = {"format": PREPARED_FORMAT, "name": ds.name, "num_classes": ds.num_classes, "facts": dataset_facts(ds),
               "train_x": ds.train_x, "train_y": ds.train_y, "test_x": ds.test_x, "test_y": ds.test_y}
    return write_atomic(out, lambda handle: torch.save(payload, handle))


def load_prepared(path: str | Path, dataset: str | None = None) -> Dataset:
    """Read a file written by ``prepare_dataset``; a missing or damaged file, one whose tensors are not what it
    records or not what its dataset is (its registry row), and one of another dataset than ``dataset`` (the
    run spec's), are each a one-line DatasetError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"prepared dataset {path} not found; create it with prepare_dataset (the prepare "
                           f"step of the pipeline)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise DatasetError(f"prepared dataset {path} is corrupt or not a torch file ({type(exc).__name__}); "
                           f"delete it and prepare it again") from exc
    if not isinstance(payload, dict) or payload.get("format") != PREPARED_FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise DatasetError(f"prepared dataset {path} has format {str(found)[:40]!r}, expected {PREPARED_FORMAT!r}; "
                           f"delete it and prepare it again")
    try:
        ds = Dataset(payload["name"], payload["train_x"], payload["train_y"], payload["test_x"],
                     payload["test_y"], int(payload["num_classes"]))
        recorded = payload["facts"]
    except KeyError as exc:
        raise DatasetError(f"prepared dataset {path} lacks key {exc.args[0]!r}; delete it and prepare it "
                           f"again") from exc
    except (TypeError, ValueError, AttributeError) as exc:
        raise DatasetError(f"prepared dataset {path} holds malformed tensors ({_brief(exc)}); delete it and "
                           f"prepare it again") from exc
    _check_facts(path, ds, recorded)
    if dataset is not None and ds.name != dataset:
        raise DatasetError(f"prepared dataset {path} holds {ds.name}, but the run spec's dataset is {dataset}: "
                           f"allowed a file prepared from {dataset} (spfl prepare {dataset} --out FILE)")
    return ds


def _check_facts(path: Path, ds: Dataset, recorded: Any) -> None:
    """The tensors are what the file records, and what its dataset is."""
    actual = dataset_facts(ds)
    if recorded != actual:
        differ = sorted(k for k in actual if not isinstance(recorded, dict) or recorded.get(k) != actual[k])
        raise DatasetError(f"prepared dataset {path} does not hold what it records ({', '.join(differ)} differ); "
                           f"delete it and prepare it again")
    facts = DATASET.get(ds.name)
    if facts is None:
        raise DatasetError(f"prepared dataset {path} holds an unknown dataset {str(ds.name)[:40]!r}: allowed "
                           f"{', '.join(DATASETS)}")
    wrong = [f"input_shape {actual['input_shape']}"] if tuple(actual["input_shape"]) != facts.input_shape else []
    wrong += [f"num_classes {actual['num_classes']}"] if actual["num_classes"] != facts.num_classes else []
    for key in ("train_size", "test_size"):
        size = getattr(facts, key)
        if not (1 if facts.smaller_allowed else size) <= actual[key] <= size:
            wrong.append(f"{key} {actual[key]}")
    if wrong:
        raise DatasetError(f"prepared dataset {path} says it holds {ds.name}, but its data has {', '.join(wrong)} "
                           f"(not {ds.name}'s); delete it and prepare it again")


def dataset_fingerprint(ds: Dataset) -> str:
    """Short sha256 (16 hex digits) over name, shapes and tensor bytes: records exactly what a run saw."""
    h = hashlib.sha256(f"{ds.name}|{ds.num_classes}".encode())
    for t in (ds.train_x, ds.train_y, ds.test_x, ds.test_y):
        arr = t.detach().cpu().contiguous().numpy()
        h.update(f"|{arr.dtype}{arr.shape}|".encode())
        h.update(memoryview(arr).cast("B"))
    return h.hexdigest()[:16]


def check_dataset_source(name: str, data_dir: str | Path, download: bool = False) -> None:
    """Check, without loading, that ``load_dataset`` will find intact files (CIFAR-10 md5s).

    The workflow calls this before any job runs, so a missing or corrupt archive stops the run
    with one line naming the file instead of failing a job part way through.  Nothing to check for a
    dataset without files, or one that will be downloaded (the download verifies).
    """
    check = _loader(name).check_source
    if check is not None and not download:
        check(Path(data_dir))
