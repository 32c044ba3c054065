"""The records contract and how records are written: tidy CSVs and JSON, always atomically.

Every record a run writes is declared here once -- its file name, its CSV columns or JSON keys, and the
evaluation schedule that says which rounds carry a test accuracy -- and the simulator's writers, the
readers and the test fixtures use these names.  Layout of one `spfl run --out OUT` (one folder per
method, so a cell of methods that share common random numbers lives side by side):

    OUT/devices.csv              DEVICE_COLUMNS, one row per device
    OUT/partition.csv            PARTITION_COLUMNS, one row per device and label
    OUT/<method>/spec.json       the resolved run spec (all settings)
    OUT/<method>/metrics.csv     METRIC_COLUMNS, one row per round; round 0 is the initial model
    OUT/<method>/allocation.csv  ALLOCATION_COLUMNS: per-device allocation at the scheduled rounds
    OUT/<method>/solver_trace.csv  TRACE_COLUMNS: Phi per alternating-optimization iteration, same rounds
    OUT/<method>/timing.json     wall time of the run (the one record that differs between identical runs)
    OUT/<method>/checksums.json  the run's identity (cell, seed, method, run hash) and the sha256 of each
                                 record above but timing.json, and of devices.csv and partition.csv
    OUT/<method>/summary.json    :class:`Summary`, written last: its presence means the run finished
    OUT/<method>/checkpoint.pt   the state to resume from while the run is unfinished (spfl.simulator.checkpoint);
                                 one that cannot be read is set aside as checkpoint.pt.damaged
    OUT/run.json                 the folder's owner (the cell), written before any record (spfl.simulator.run_folder)

The tables read a run's records only after :func:`verify_run` has checked them against its checksums.json
and the cell, seed and method the table expects: a hand-edited value, a damaged file or a folder copied from
another cell is one error naming the file, never a number in a table.  This module imports neither torch nor
pandas, so every wing can use it.
"""

from __future__ import annotations

import csv
import errno
import hashlib
import io
import json
import math
import operator
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence, Set
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, BinaryIO

# ---------------------------------------------------------------------------------------------------
# The records contract
# ---------------------------------------------------------------------------------------------------

RUN_SETTINGS_JSON = "spec.json"  # the resolved run settings
METRICS_CSV = "metrics.csv"
ALLOCATION_CSV = "allocation.csv"
TRACE_CSV = "solver_trace.csv"
SUMMARY_JSON = "summary.json"
TIMING_JSON = "timing.json"
CHECKSUMS = "checksums.json"
DEVICES_CSV = "devices.csv"
PARTITION_CSV = "partition.csv"
CHECKPOINT = "checkpoint.pt"
DAMAGED_SUFFIX = ".damaged"  # appended to the name of a checkpoint that cannot be read
RUN_RECORDS = (RUN_SETTINGS_JSON, METRICS_CSV, ALLOCATION_CSV, TRACE_CSV, SUMMARY_JSON)  # checksummed, per method
CELL_RECORDS = (DEVICES_CSV, PARTITION_CSV)  # shared by the methods of a cell, in the cell's folder

METRIC_COLUMNS = (
    "round",                  # rounds completed (0 = initial model)
    "train_loss",             # alpha-weighted mean of the devices' mini-batch losses this round
    "test_loss",              # at evaluated rounds (evaluation_schedule, and a diverging round), else empty
    "test_accuracy",          # fraction in [0, 1] at evaluated rounds, else empty
    "sign_error_rate",        # realized fraction of transmitted sign (or whole) packets lost
    "modulus_error_rate",     # realized fraction of transmitted modulus packets lost (empty if none sent)
    "devices_transmitting",   # devices given bandwidth this round
    "devices_sign_received",  # devices whose sign (or whole) packet arrived
    "devices_both_received",  # devices whose full gradient arrived
    "uplink_bits",            # payload bits sent by all devices this round
    "control_bits",           # bits of the devices' reports to the allocator (sketches; 0 if none needed)
    "objective",              # the one-step objective Phi of the round's allocation (empty for ideal)
    "expected_sign_error",    # mean closed-form q of the sent sign (or whole) packets
    "expected_modulus_error", # mean closed-form q of the sent modulus packets
    "update_norm",            # ||g_hat|| of the applied update (0 when nothing arrived)
)
ALLOCATION_COLUMNS = (
    "round", "device", "bandwidth_hz", "power_sign_w", "power_modulus_w", "slot_share",
    "q_sign", "q_modulus", "u_sign", "u_modulus",
)
TRACE_COLUMNS = ("round", "iteration", "objective")  # allocation objective Phi per AO iteration
DEVICE_COLUMNS = ("device", "distance_m", "gain", "num_samples", "alpha")  # alpha: the device's data share
PARTITION_COLUMNS = ("device", "label", "count")  # training samples of each label on each device
CSV_COLUMNS = {METRICS_CSV: METRIC_COLUMNS, ALLOCATION_CSV: ALLOCATION_COLUMNS, TRACE_CSV: TRACE_COLUMNS,
               DEVICES_CSV: DEVICE_COLUMNS, PARTITION_CSV: PARTITION_COLUMNS}

OK, DIVERGED = "ok", "diverged"  # a run's status
WALL_TIME = "wall_time_s"  # timing.json's one key: seconds of the run's own work


@dataclass(frozen=True)
class Summary:
    """summary.json: a finished run in a few numbers, and what produced it."""

    method: str
    status: str                     # OK or DIVERGED (the loss or the weights became non-finite)
    diverged_round: int | None      # the round it diverged in, else None
    final_accuracy: float | None    # at the last evaluated round; None when diverged (chance-level noise)
    best_accuracy: float | None     # the best finite accuracy over the evaluated rounds
    final_test_loss: float | None   # at the last evaluated round; None when diverged
    rounds_completed: int
    mean_sign_error: float | None   # mean of metrics.csv's sign_error_rate over rounds 1..R
    mean_modulus_error: float | None
    run_hash: str                   # the run's identity (spfl.configuration.settings.RunSpec.run_hash)
    code_version: str               # spfl.provenance.code_version
    num_params: int                 # parameters of the model
    versions: dict[str, str]        # python and package versions

    def text(self) -> str:
        """The bytes of summary.json."""
        return json_text(asdict(self))


SUMMARY_KEYS = tuple(f.name for f in fields(Summary))


class EvaluationSchedule(Set):
    """The rounds 0 (the initial model), 1, every ``every``-th and the last (``rounds``), as a set that
    stores none of them: a membership test is arithmetic, so the memory of a run never depends on its
    number of rounds."""

    def __init__(self, rounds: int, every: int):
        self.rounds, self.every = int(rounds), int(every)

    def __contains__(self, round_index: object) -> bool:
        try:
            round_index = operator.index(round_index)  # numpy integers too
        except TypeError:
            return False
        if not 0 <= round_index <= self.rounds:
            return False
        return round_index in (1, self.rounds) or round_index % self.every == 0

    def __iter__(self) -> Iterator[int]:
        yield 0
        if self.rounds >= 1:
            yield 1
        yield from range(max(self.every, 2), self.rounds, self.every)  # the multiples in [2, rounds - 1]
        if self.rounds > 1:
            yield self.rounds

    def __len__(self) -> int:
        multiples = (self.rounds - 1) // self.every - 1 // self.every  # the multiples in [2, rounds - 1]
        return 1 + (self.rounds >= 1) + max(multiples, 0) + (self.rounds > 1)

    def __repr__(self) -> str:
        return f"EvaluationSchedule(rounds={self.rounds}, every={self.every})"


def evaluation_schedule(rounds: int, every: int) -> EvaluationSchedule:
    """The rounds of a run of ``rounds`` rounds evaluated every ``every`` (the ``eval_every`` setting): their
    metrics.csv rows hold the test loss and accuracy, and allocation.csv and solver_trace.csv snapshot their
    allocation.  A run also evaluates the round in which it diverges, whatever the schedule."""
    return EvaluationSchedule(rounds, every)


def _format(value: Any) -> str:
    """Deterministic text: repr for floats (shortest round-trip), empty for missing/NaN."""
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if math.isnan(value) else repr(value)
    return str(value)


class WriteError(OSError):
    """A file could not be written (full disk, read-only folder ...): one line naming the file."""

    def __str__(self) -> str:
        return str(self.strerror)


def _umask() -> int:
    mask = os.umask(0o022)  # the only portable way to read the umask is to set it, so set it back at once
    os.umask(mask)
    return mask


def fsync_folder(folder: str | Path) -> None:
    """Make a rename inside ``folder`` durable (POSIX: the entry lives in the folder, not the file)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:  # platforms that cannot open a folder have no folder fsync either
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: str | Path, data: str | bytes | Callable[[BinaryIO], Any]) -> Path:
    """Write a file all at once or not at all: a temporary file in the same folder, fsynced, renamed
    over the target, then the folder fsynced.  ``data`` is text (UTF-8), bytes, or a function that
    writes to a binary handle (``torch.save``), so large payloads are never held twice in memory.

    The file gets the permissions a plain ``open`` would (0666 less the umask; mkstemp alone gives
    0600, which collaborators on a shared cluster cannot read).  On any failure the temporary file is
    removed and a :class:`WriteError` names the target (a kill -9 can still leave a ``.NAME.*.tmp``).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise _write_error(path, exc) from exc
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), 0o666 & ~_umask())
            if callable(data):
                data(handle)
            else:
                handle.write(data.encode() if isinstance(data, str) else data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        cause = _os_error_in(exc)
        if cause is not None:
            raise _write_error(path, cause) from exc
        raise
    fsync_folder(path.parent)
    return path


def _os_error_in(exc: BaseException | None) -> OSError | None:
    """The OSError behind a failure: torch.save, for one, turns a full disk into a RuntimeError whose
    context is the OSError that the handle's write raised."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, WriteError):
            return None  # already one line naming its file
        if isinstance(exc, OSError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def _write_error(path: Path, exc: OSError) -> WriteError:
    reason = exc.strerror or str(exc) or type(exc).__name__
    hint = "; free some space and run again" if exc.errno == errno.ENOSPC else ""
    return WriteError(exc.errno, f"cannot write '{path}': {reason}{hint}")


def csv_text(columns: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_format(row.get(c)) for c in columns])
    return buffer.getvalue()


def write_csv(path: str | Path, columns: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> Path:
    return write_atomic(path, csv_text(columns, rows))


def write_json(path: str | Path, payload: Mapping[str, Any]) -> Path:
    return write_atomic(path, json_text(payload))


def read_json(path: str | Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def json_text(payload: Mapping[str, Any]) -> str:
    """The text :func:`write_json` writes."""
    return json.dumps(payload, indent=2, sort_keys=True, allow_nan=False) + "\n"


# ---------------------------------------------------------------------------------------------------
# Integrity of a run's records: identity and checksums
# ---------------------------------------------------------------------------------------------------

CHECKSUMS_FORMAT = "spfl-checksums-v1"


class RecordError(ValueError):
    """A run record is missing, damaged, changed after its run, or of another run (one line naming the file)."""


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def checksums(folder: str | Path, identity: Mapping[str, Any], summary_text: str) -> dict[str, Any]:
    """The checksums.json of the run in ``folder`` (OUT/<method>), its summary.json not yet written."""
    folder = Path(folder)
    files = {name: sha256_of(folder / name) for name in RUN_RECORDS if name != SUMMARY_JSON}
    files[SUMMARY_JSON] = hashlib.sha256(summary_text.encode()).hexdigest()
    # the cell's files, where the run is part of a cell (spfl.simulator.simulation.run_cell writes them first)
    shared = {name: sha256_of(folder.parent / name) for name in CELL_RECORDS if (folder.parent / name).is_file()}
    return {"format": CHECKSUMS_FORMAT, **identity, "files": files, "cell_files": shared}


def verify_run(cell_folder: str | Path, method: str, cell: str, seed: int) -> None:
    """Check that the records of ``method`` in ``cell_folder`` are those its run wrote, and that the run is the
    one expected there (``cell``, ``seed``, ``method``); raise RecordError naming the file otherwise."""
    folder = Path(cell_folder) / method
    path = folder / CHECKSUMS
    rerun = "rerun its cell (delete the cell's cell.json)"
    try:
        saved = json.loads(path.read_text())
    except FileNotFoundError:
        raise RecordError(f"run record '{path}' is missing (records of an unfinished run, or written before runs "
                          f"recorded their checksums): {rerun}") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise RecordError(f"run record '{path}' cannot be read ({type(exc).__name__}): {rerun}") from None
    if not isinstance(saved, dict) or saved.get("format") != CHECKSUMS_FORMAT or not all(
            isinstance(saved.get(key), dict) for key in ("files", "cell_files")):
        raise RecordError(f"run record '{path}' is not an spfl checksums file ({CHECKSUMS_FORMAT}): {rerun}")
    expected = {"cell": cell, "seed": seed, "method": method}
    found = {key: saved.get(key) for key in expected}
    if found != expected:
        raise RecordError(
            f"run records in '{folder}' are of another run ({_identity(found)} in '{path}', expected "
            f"{_identity(expected)}): copied from another cell? {rerun}")
    for names, base in ((RUN_RECORDS, folder), (CELL_RECORDS, folder.parent)):
        recorded = saved["files"] if base == folder else saved["cell_files"]
        for name in names:
            record = base / name
            try:
                actual = sha256_of(record)
            except FileNotFoundError:
                raise RecordError(f"run record '{record}' is missing: {rerun}") from None
            except OSError as exc:
                raise RecordError(f"run record '{record}' cannot be read: {exc.strerror or exc}") from None
            if name not in recorded:
                raise RecordError(f"run record '{record}' has no checksum in '{path}' (a run written outside a "
                                  f"cell): {rerun}")
            if recorded.get(name) != actual:
                raise RecordError(f"run record '{record}' does not match its checksum in '{path}' (changed or "
                                  f"damaged after its run): {rerun}")


def _identity(values: Mapping[str, Any]) -> str:
    return ", ".join(f"{key} {str(value)[:40]}" for key, value in values.items())
