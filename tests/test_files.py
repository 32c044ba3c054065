"""Reading and writing files: YAML/JSON without silent surprises, and records written whole and readable.

spfl.configuration.reading.load_yaml reads run specs and pipeline configs alike: repeated keys and syntax errors are
one-line SpecErrors naming the file and line, and floats follow YAML 1.2 (as JSON writes them).
spfl.records.write_atomic writes every record, table, prepared dataset and checkpoint: all or nothing,
with the permissions the umask gives (mkstemp alone would make them 0600).
"""

from __future__ import annotations

import errno
import os
import re
import stat
from pathlib import Path

import pytest
import yaml

from spfl.configuration.reading import load_yaml
from spfl.configuration.settings import SpecError
from spfl.records import WriteError, write_atomic, write_csv, write_json

ROOT = Path(__file__).resolve().parents[1]


# --- load_yaml -----------------------------------------------------------------------------------

def test_a_pipeline_config_with_a_repeated_experiment_is_refused_naming_file_key_and_line(tmp_path):
    config = (ROOT / "config" / "test.yaml").read_text()
    lines = config.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("experiments:")) + 2  # 1-based, next line
    name = lines[first - 1].strip().rstrip(":")
    repeated = "\n".join([*lines[:first - 1], f"  {name}: {{grid: {{seed: [0]}}}}", *lines[first - 1:]]) + "\n"
    path = tmp_path / "repeated.yaml"
    path.write_text(repeated)
    with pytest.raises(SpecError) as error:
        load_yaml(path)
    assert str(error.value) == (f"'{path}' line {first + 1} repeats key '{name}' (first at line {first}): "
                                f"allowed each key once")
    with pytest.raises(SpecError, match=rf"^config file 'x.yaml' line {first + 1} repeats key '{name}'"):
        load_yaml(repeated, source="config file 'x.yaml'")


def test_every_committed_config_loads_as_before():
    for path in sorted((ROOT / "config").glob("*.yaml")):
        assert load_yaml(path) == yaml.safe_load(path.read_text()), path


@pytest.mark.parametrize("text, expected", [
    # YAML 1.2 core: no underscores in numbers (YAML 1.1 read 1_000 as 1000), so a string
    ("a: 1e-05\nb: 1e+30\nc: 2.5\nd: 1_000\n", {"a": 1e-05, "b": 1e30, "c": 2.5, "d": "1_000"}),
    ('{"a": 1e-05, "b": [1, 2]}', {"a": 1e-05, "b": [1, 2]}),
    ("base: &b {x: 1, y: 2}\nover:\n  <<: *b\n  x: 3\n", {"base": {"x": 1, "y": 2}, "over": {"x": 3, "y": 2}}),
    ("", None),
])
def test_yaml_12_floats_and_merge_keys_still_load(text, expected):
    assert load_yaml(text) == expected


@pytest.mark.parametrize("text, message", [
    ("a:\n  b: 1\n  b: 2\n", "'f' line 3 repeats key 'b' (first at line 2): allowed each key once"),
    ("x: [1,\n", "'f' is not valid YAML/JSON: line 2, column 1: expected the node content"),
    ("a: 1\n b: 2\n", "'f' is not valid YAML/JSON: line 2, column 3: mapping values are not allowed here"),
    ("a: \x07\n", "'f' is not a text file (character #x0007 at position 3)"),
])
def test_yaml_text_errors_name_the_source_and_line(text, message):
    with pytest.raises(SpecError) as error:
        load_yaml(text, source="'f'")
    assert str(error.value).startswith(message), str(error.value)


def test_yaml_file_errors_name_the_file(tmp_path):
    (tmp_path / "folder.yaml").mkdir()
    (tmp_path / "binary.yaml").write_bytes(b"\xff\xfe\x00")
    for name, message in (("missing.yaml", "not found"), ("folder.yaml", "is a folder"),
                          ("binary.yaml", "is not a text file (byte 0 is not UTF-8)")):
        with pytest.raises(SpecError, match="^" + re.escape(f"'{tmp_path / name}' {message}")):
            load_yaml(tmp_path / name)


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
