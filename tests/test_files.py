"""Writing files: spfl.records.write_atomic writes every record, table, prepared dataset and checkpoint all or
nothing, with the permissions the umask gives (mkstemp alone would make them 0600)."""

from __future__ import annotations

import errno
import os
import re
import stat
from pathlib import Path

import pytest

from spfl.records import WriteError, write_atomic, write_csv, write_json

# --- write_atomic --------------------------------------------------------------------------------

@pytest.fixture
def umask():
    """Set a umask for one test, give the old one back."""
    old = os.umask(0o022)
    os.umask(old)
    yield lambda mask: os.umask(mask)
    os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077])
def test_records_are_readable_per_the_umask(tmp_path, umask, mask):
    umask(mask)
    written = [write_atomic(tmp_path / "a.txt", "text"), write_atomic(tmp_path / "b.bin", b"\x00\x01"),
               write_atomic(tmp_path / "c.bin", lambda handle: handle.write(b"by a writer")),
               write_csv(tmp_path / "d.csv", ("x",), [{"x": 1.5}]), write_json(tmp_path / "e.json", {"x": 1})]
    assert [mode(path) for path in written] == [0o666 & ~mask] * len(written)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.bin", "c.bin", "d.csv", "e.json"]
    assert (tmp_path / "c.bin").read_bytes() == b"by a writer" and (tmp_path / "d.csv").read_text() == "x\n1.5\n"


def test_prepared_dataset_is_readable_per_the_umask(tmp_path, umask):
    from spfl.simulator.data import load_prepared, prepare_dataset

    umask(0o022)
    path = prepare_dataset("digits", tmp_path, tmp_path / "digits.pt")
    assert mode(path) == 0o644 and [p.name for p in tmp_path.iterdir()] == ["digits.pt"]
    assert load_prepared(path).train_x.shape[0] == 1437


def test_a_full_disk_leaves_the_old_file_whole_and_no_temporary_file(tmp_path):
    target = write_atomic(tmp_path / "table.csv", "old\n")

    def fill_up(handle):
        handle.write(b"new, half")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(WriteError) as error:
        write_atomic(target, fill_up)
    assert str(error.value) == f"cannot write '{target}': No space left on device; free some space and run again"
    assert error.value.errno == errno.ENOSPC
    assert target.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["table.csv"]


def test_a_folder_that_cannot_exist_is_named(tmp_path):
    (tmp_path / "blocker").write_text("a file, not a folder")
    with pytest.raises(WriteError, match="^" + re.escape(f"cannot write '{tmp_path}/blocker/x.csv': ")):
        write_atomic(tmp_path / "blocker" / "x.csv", "x\n")


def test_other_failures_are_not_disguised(tmp_path):
    def broken(handle):
        raise KeyError("a bug, not the disk")

    with pytest.raises(KeyError):
        write_atomic(tmp_path / "x.bin", broken)
    assert list(tmp_path.iterdir()) == []
