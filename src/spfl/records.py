"""Run records on disk: tidy CSVs and JSON, always written atomically.

Layout of one `spfl run --out OUT` (one folder per method, so a cell of methods that share
common random numbers lives side by side):

    OUT/devices.csv              device, distance_m, gain, num_samples, alpha
    OUT/partition.csv            device, label, count
    OUT/<method>/spec.json       the resolved run spec (all settings)
    OUT/<method>/metrics.csv     one row per round (METRIC_COLUMNS); round 0 is the initial model
    OUT/<method>/allocation.csv  per-device allocation snapshots (ALLOCATION_COLUMNS)
    OUT/<method>/solver_trace.csv  Phi per alternating-optimization iteration at snapshot rounds
    OUT/<method>/summary.json    written last: its presence means the run finished
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

METRIC_COLUMNS = (
    "round",                  # rounds completed (0 = initial model)
    "train_loss",             # alpha-weighted mean of the devices' mini-batch losses this round
    "test_loss",              # at evaluation rounds, else empty
    "test_accuracy",          # fraction in [0, 1] at evaluation rounds, else empty
    "sign_error_rate",        # realized fraction of transmitted sign (or whole) packets lost
    "modulus_error_rate",     # realized fraction of transmitted modulus packets lost (empty if none sent)
    "devices_transmitting",   # devices given bandwidth this round
    "devices_sign_received",  # devices whose sign (or whole) packet arrived
    "devices_both_received",  # devices whose full gradient arrived
    "uplink_bits",            # payload bits sent by all devices this round
    "objective",              # the allocation's one-step objective Phi (empty for fixed policies)
    "expected_sign_error",    # mean closed-form q of the sent sign (or whole) packets
    "expected_modulus_error", # mean closed-form q of the sent modulus packets
    "update_norm",            # ||g_hat|| of the applied update (0 when nothing arrived)
)
ALLOCATION_COLUMNS = (
    "round", "device", "bandwidth_hz", "power_sign_w", "power_modulus_w", "slot_share",
    "q_sign", "q_modulus", "u_sign", "u_modulus",
)
TRACE_COLUMNS = ("round", "iteration", "objective")  # allocation objective Phi per AO iteration


def _format(value: Any) -> str:
    """Deterministic text: repr for floats (shortest round-trip), empty for missing/NaN."""
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if math.isnan(value) else repr(value)
    return str(value)


def write_atomic(path: str | Path, text: str) -> Path:
    """Write text to a temporary file in the same folder, then rename over the target."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


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
    return write_atomic(path, json.dumps(payload, indent=2, sort_keys=True, allow_nan=False) + "\n")


def read_json(path: str | Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())
