"""Build tiny CIFAR-10 archives in the exact "python version" format, to exercise the real loader.

The real batches are Python 2 pickles (protocol 2) of dicts whose keys and raw pixel buffer are Python 2
``str`` objects. Loaded with ``encoding="latin1"`` (what torchvision does) they come back as ``str``;
with ``encoding="bytes"`` (the snippet on the CIFAR page) as ``bytes`` (``b"data"``, ``b"labels"``). A
Python 3 pickler would write ``bytes`` instead, which neither reading gives back as in the real files,
so ``_Py2Pickler`` writes every ``bytes`` object with the Python 2 string opcodes.

Layout (as in cifar-10-python.tar.gz): ``cifar-10-batches-py/data_batch_1..5``, ``test_batch``,
``batches.meta``; each data row is 3072 uint8: 1024 red, then 1024 green, then 1024 blue values, each
channel row-major 32 x 32.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import shutil
import struct
import tarfile
import tempfile
from pathlib import Path

import numpy as np

FOLDER = "cifar-10-batches-py"
ARCHIVE = "cifar-10-python.tar.gz"
LABEL_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


class _Py2Pickler(pickle._Pickler):  # the pure-Python pickler: its dispatch table can be extended
    dispatch = pickle._Pickler.dispatch.copy()

    def _save_py2_str(self, obj: bytes) -> None:
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = _save_py2_str


def py2_pickle(obj: object) -> bytes:
    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue()


def cifar_arrays(n_train_per_batch: int = 4, n_test: int = 6,
                 seed: int = 0) -> tuple[np.ndarray, list[int], np.ndarray, list[int]]:
    """The pixels (N x 3072 uint8, CIFAR row layout) and labels that ``write_cifar_archive`` writes."""
    rng = np.random.default_rng(seed)
    n_train = 5 * n_train_per_batch
    train = rng.integers(0, 256, size=(n_train, 3072), dtype=np.uint8)
    test = rng.integers(0, 256, size=(n_test, 3072), dtype=np.uint8)
    train[0, :2], test[0, :2] = (0, 255), (255, 0)  # make sure both extremes occur
    train_labels = [int(v) for v in rng.integers(0, 10, size=n_train)]
    test_labels = [int(v) for v in rng.integers(0, 10, size=n_test)]
    return train, train_labels, test, test_labels


def _batch(label: str, data: np.ndarray, labels: list[int], first: int) -> dict:
    names = [f"tiny_{first + i:05d}.png".encode() for i in range(len(labels))]
    return {b"batch_label": label.encode(), b"labels": labels, b"data": data, b"filenames": names}


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def write_cifar_archive(root: Path, n_train_per_batch: int = 4, n_test: int = 6, seed: int = 0,
                        as_tar: bool = True) -> dict[str, str]:
    """Write a tiny CIFAR-10 under ``root``; returns {file name: md5} usable as ``checksums=``.

    With ``as_tar`` only ``root/cifar-10-python.tar.gz`` is written (the loader must extract it) and its
    md5 is in the result too; otherwise the extracted ``root/cifar-10-batches-py`` folder.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    train, train_labels, test, test_labels = cifar_arrays(n_train_per_batch, n_test, seed)
    staging = Path(tempfile.mkdtemp(dir=root)) if as_tar else root
    folder = staging / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    files: dict[str, dict] = {}
    for b in range(5):
        rows = slice(b * n_train_per_batch, (b + 1) * n_train_per_batch)
        files[f"data_batch_{b + 1}"] = _batch(f"training batch {b + 1} of 5", train[rows],
                                              train_labels[rows], b * n_train_per_batch)
    files["test_batch"] = _batch("testing batch 1 of 1", test, test_labels, len(train_labels))
    files["batches.meta"] = {b"num_cases_per_batch": n_train_per_batch,
                             b"label_names": [n.encode() for n in LABEL_NAMES], b"num_vis": 3072}
    md5s = {}
    for name, content in files.items():
        (folder / name).write_bytes(py2_pickle(content))
        md5s[name] = _md5(folder / name)
    if as_tar:
        with tarfile.open(root / ARCHIVE, "w:gz") as tar:
            tar.add(folder, arcname=FOLDER)
        shutil.rmtree(staging)
        md5s[ARCHIVE] = _md5(root / ARCHIVE)
    return md5s
