"""Resumable checkpoints of one method's run: written atomically, never trusted blindly.

A checkpoint holds the run's whole changing state (weights, random generators, records so far) with
the run's identity (``run_hash``) and the simulation code's version: it resumes only the same spec
under the same code.  Writing goes through :func:`spfl.records.write_atomic` (temporary file, fsync,
rename, folder fsync), so a kill or a full disk leaves the previous checkpoint whole.  A checkpoint
that cannot be read (a damaged disk, a copy cut short) is renamed to ``<name>.damaged`` and the run
starts again from round 0, with a warning naming the file, instead of failing on every retry.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

import torch

from spfl.provenance import code_version
from spfl.records import DAMAGED_SUFFIX, write_atomic

log = logging.getLogger("spfl")

_KEYS = ("run_hash", "code_version", "state")


class Resumable(Protocol):
    round: int

    def restore(self, saved: dict[str, Any]) -> None: ...


State = TypeVar("State", bound=Resumable)


def save(path: str | Path, run_hash: str, state: dict[str, Any]) -> None:
    """Write ``state`` (a ``RunState.to_checkpoint()`` mapping) for the run ``run_hash``.

    Raises :class:`spfl.records.WriteError` (one line naming the file) when it cannot be written."""
    payload = {"run_hash": run_hash, "code_version": code_version(), "state": state}
    write_atomic(path, lambda handle: torch.save(payload, handle))


def resume(path: str | Path, run_hash: str, fresh: Callable[[], State], map_location: Any = None,
           label: str = "run") -> State:
    """The state to start from: ``fresh()`` restored from the checkpoint at ``path`` when it belongs to
    this run and code, else ``fresh()`` as it is (round 0).  A damaged checkpoint is set aside."""
    path = Path(path)
    for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left by a kill during a save: never complete
        stale.unlink(missing_ok=True)
    state = fresh()
    if not path.exists():
        return state
    try:
        saved = torch.load(path, weights_only=False, map_location=map_location)
        if not isinstance(saved, dict) or any(key not in saved for key in _KEYS):
            raise ValueError("not an spfl checkpoint")
    except Exception as exc:  # any unreadable file: unpickling, zip, truncation, wrong content
        return _set_aside(path, exc, fresh, label)
    if (saved["run_hash"], saved["code_version"]) != (run_hash, code_version()):
        log.info("%s: checkpoint %s belongs to another run spec or code version: ignored, starting from round 0",
                 label, path)
        return state
    try:
        state.restore(saved["state"])
    except Exception as exc:  # readable, but not the state this code writes
        return _set_aside(path, exc, fresh, label)
    log.info("%s: resumed from checkpoint %s at round %d", label, path, state.round)
    return state


def _set_aside(path: Path, exc: Exception, fresh: Callable[[], State], label: str) -> State:
    aside = path.with_name(path.name + DAMAGED_SUFFIX)
    path.replace(aside)
    reason = (str(exc).splitlines() or [""])[0]
    log.warning("%s: checkpoint %s is damaged (%s%s): set aside as %s; starting again from round 0", label,
                path, type(exc).__name__, f": {reason}" if reason else "", aside.name)
    return fresh()
