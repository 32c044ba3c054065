"""The `--out` folder of `spfl run`: one run at a time, and only files a run of this spec wrote.

A run claims its folder before writing anything (:func:`claim`): it takes an exclusive lock
(``OUT/.spfl-lock``, ``flock``: the kernel releases it when the process ends, kill -9 included) and writes
``OUT/run.json``, which names the cell (the spec's settings but the method) that owns the folder.  A second
`spfl run` into the same folder while the first runs fails at once, naming the folder; a folder owned by
another cell, or holding files no run of this spec wrote (a user's own ``devices.csv``, notes, another
tool's output) is refused before any work, unless ``--force`` is given for the latter.  What a run of the
same spec left there -- its records, a checkpoint to resume from, a temporary file of a killed write --
is its own, so rerunning, adding methods and resuming work as before.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from spfl.configuration.settings import SETTING, RunSpec
from spfl.records import (
    CELL_RECORDS,
    CHECKPOINT,
    CHECKSUMS,
    DAMAGED_SUFFIX,
    RUN_RECORDS,
    RUN_SETTINGS_JSON,
    TIMING_JSON,
    write_json,
)

LOCK_FILE = ".spfl-lock"
OWNER_FILE = "run.json"
OWNER_FORMAT = "spfl-run-folder-v1"
# Every file a run writes: in the folder, and in each method's subfolder.
FOLDER_FILES = (LOCK_FILE, OWNER_FILE, *CELL_RECORDS)
METHOD_FILES = (*RUN_RECORDS, TIMING_JSON, CHECKSUMS, CHECKPOINT, CHECKPOINT + DAMAGED_SUFFIX)
_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.[^.]+\.tmp$")  # spfl.records.write_atomic's temporary files


def run_outputs(out: Path, methods: Iterable[str]) -> list[Path]:
    """The files a run of ``methods`` writes into ``out``."""
    return [out / name for name in FOLDER_FILES] + [out / m / name for m in methods for name in METHOD_FILES]


def check(out: Path, spec: RunSpec, *, keep: Iterable[Path] = (), force: bool = False) -> None:
    """Raise ValueError (one line) unless ``out`` is new or holds only what runs of ``spec`` wrote.

    ``keep``: files that may be in the folder although no run wrote them (the run spec itself, the log).
    ``force``: write into a folder that holds other files (never into one owned by another cell)."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out '{out}' is a file: allowed a folder (new, or holding this spec's records)")
    existing = out
    while not existing.exists():  # the nearest existing folder is where the first folder gets created
        if existing.parent == existing:
            break
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        raise ValueError(f"--out '{out}' is inside '{existing}', which is a file: allowed a folder")
    if existing.exists() and not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"--out '{out}' cannot be written ('{existing}' is read-only for this user): choose "
                         f"another --out folder")
    if not out.is_dir():
        return
    other = _other_spec_records(out, spec)
    if other:
        raise ValueError(f"--out '{out}' holds records of another run spec ({other}): choose a new --out folder, "
                         f"or delete '{out}' to replace them")
    foreign = None if force else _foreign_file(out, spec, keep)
    if foreign is not None:
        raise ValueError(f"--out '{out}' holds '{foreign}', which no spfl run of this spec wrote: choose a new "
                         f"or empty --out folder, or add --force to write into it anyway")


def _other_spec_records(out: Path, spec: RunSpec) -> str | None:
    """Where ``out`` is owned by another cell or holds a run of different settings (the method aside)."""
    def identity(settings: dict) -> dict:
        return {k: v for k, v in settings.items() if k != "method" and (k not in SETTING or SETTING[k].science)}

    mine = identity(spec.to_dict())
    for path in sorted(out.glob(f"*/{RUN_SETTINGS_JSON}")):
        try:
            theirs = json.loads(path.read_text())
        except (OSError, ValueError):
            return f"'{path}' cannot be read"
        if not isinstance(theirs, dict):
            return f"'{path}' is not a run spec"
        theirs = identity(theirs)
        differ = sorted(k for k in mine.keys() | theirs.keys() if mine.get(k, ...) != theirs.get(k, ...))
        if differ:
            shown = ", ".join(differ[:4]) + (f" and {len(differ) - 4} more" if len(differ) > 4 else "")
            return f"'{path}' differs in {shown}"
    owner = out / OWNER_FILE
    if owner.is_file():
        try:
            cell = json.loads(owner.read_text()).get("cell")
        except (OSError, ValueError, AttributeError):
            return f"'{owner}' cannot be read"
        if cell != spec.cell_hash:
            return f"'{owner}' names cell {str(cell)[:40]}, this spec is cell {spec.cell_hash}"
    return None


def _foreign_file(out: Path, spec: RunSpec, keep: Iterable[Path]) -> Path | None:
    """The first file in ``out`` that no run of ``spec`` wrote, else None.

    A run's files are those of :func:`run_outputs` (any method) and their temporary files, in a folder that
    a run of this spec owns: its run.json names the spec's cell, or (records of runs older than run.json)
    a method's spec.json is this spec's."""
    from spfl.configuration.methods import METHODS

    kept = {_resolved(path) for path in keep}
    owned = (out / OWNER_FILE).is_file() or any((out / m / RUN_SETTINGS_JSON).is_file() for m in METHODS)
    for path in sorted(p for p in out.rglob("*") if not p.is_dir()):
        if _resolved(path) in kept:
            continue
        relative = path.relative_to(out)
        name = relative.name
        temporary = _TEMPORARY.match(name)
        if temporary:
            name = temporary.group("name")
        if len(relative.parts) == 1:
            ours = name in FOLDER_FILES
        else:
            ours = len(relative.parts) == 2 and relative.parts[0] in METHODS and name in METHOD_FILES
        if not ours or (not owned and name != LOCK_FILE):
            return path
    return None


def _resolved(path: Path) -> Path:
    try:
        return Path(path).resolve()
    except (OSError, RuntimeError):
        return Path(os.path.abspath(path))


def check_log(log: Path, spec_file: Path, out: Path, spec: RunSpec) -> None:
    """--log must be a new or existing file that is none of the run's inputs or outputs."""
    from spfl.configuration.methods import METHODS

    if log.is_dir():
        raise ValueError(f"--log '{log}' is a folder: allowed a file")
    target = _resolved(log)
    if target == _resolved(spec_file):
        raise ValueError(f"--log '{log}' is the run spec file: allowed a file that is none of the run's inputs "
                         f"or outputs")
    if spec.data_file is not None and target == _resolved(Path(spec.data_file)):
        raise ValueError(f"--log '{log}' is the run's prepared dataset (data_file): allowed a file that is none of "
                         f"the run's inputs or outputs")
    if target in {_resolved(path) for path in run_outputs(out, METHODS)} or target == _resolved(out):
        raise ValueError(f"--log '{log}' is an output of the run in --out '{out}': allowed a file that is none of "
                         f"the run's inputs or outputs")


@contextlib.contextmanager
def claim(out: Path, spec: RunSpec, *, keep: Iterable[Path] = (), force: bool = False) -> Iterator[None]:
    """Hold ``out`` for one run: lock it, check it again under the lock and write its run.json.

    Raises ValueError (one line) when another run holds the folder or when :func:`check` refuses it."""
    out.mkdir(parents=True, exist_ok=True)
    handle = _lock(out)
    try:
        check(out, spec, keep=keep, force=force)
        owner: dict[str, Any] = {"format": OWNER_FORMAT, "cell": spec.cell_hash}
        path = out / OWNER_FILE
        if not path.is_file() or path.read_text() != json.dumps(owner, indent=2, sort_keys=True) + "\n":
            write_json(path, owner)
        yield
    finally:
        handle.close()  # releases the lock; the lock file stays (removing it would race a run taking it)


def _lock(out: Path):
    path = out / LOCK_FILE
    while True:
        handle = open(path, "a+b")  # noqa: SIM115 - held until the run ends
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.ENOLCK, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOSYS):
                logging.getLogger("spfl").warning(
                    "--out '%s': its file system cannot lock files (%s): a second run into it at once would not be "
                    "detected", out, exc.strerror or exc)
                return handle
            handle.close()
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise ValueError(f"--out '{out}' is in use by another spfl run (it holds '{path}'): wait for it to "
                                 f"end, or choose another --out folder") from None
            raise
        try:  # the file locked must still be the one at the path (not one removed meanwhile)
            if os.fstat(handle.fileno()).st_ino == os.stat(path).st_ino:
                return handle
        except FileNotFoundError:
            pass
        handle.close()
