"""The run lifecycle: what a run does around its rounds, as hooks.

One round's algorithm is ``Simulation.finish_round``.  Everything else a run does -- evaluate the model,
record the allocation, log, checkpoint, write its records -- is a :class:`Callback` with three hooks, in
the manner of pfl-research's callbacks: ``begin`` on the initial model (round 0 of a fresh run),
``after_round`` after every round and ``end`` once the run has stopped.  A hook sees a narrow read-only
context (:class:`RoundView`, :class:`RunEnd`), never the simulation, and returns what it adds to the
records (:class:`RoundRecords`) instead of changing them; :func:`begin`, :func:`after_round` and :func:`end`
call the hooks in list order and merge what they return into the run state, so a later callback sees the
fields of an earlier one.  A new measurement or output is one class, and the round never changes for it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence, Set
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from spfl import records
from spfl.configuration.settings import RunSpec
from spfl.provenance import code_version, package_versions
from spfl.simulator import checkpoint as checkpoints
from spfl.simulator.training import FlatModel, evaluate

if TYPE_CHECKING:  # only for annotations: spfl.simulator.simulation imports this module
    from spfl.simulator.simulation import RoundOutcome, RunState

log = logging.getLogger("spfl")


@dataclass(frozen=True)
class RoundView:
    """What a ``begin`` or ``after_round`` hook sees of the run: read it, never change it."""

    spec: RunSpec
    round: int                      # rounds completed: 0 is the initial model
    row: Mapping[str, Any]          # the round's metrics row, with the fields of the callbacks before this one
    weights: torch.Tensor           # the model after the round
    status: str                     # records.OK or records.DIVERGED
    snapshot: Callable[[], dict[str, Any]] = field(repr=False)  # the run state as a checkpoint holds it
    outcome: RoundOutcome | None = None  # what the round did; None for round 0


@dataclass(frozen=True)
class RunEnd:
    """What an ``end`` hook sees: the run's settings and its records, read-only."""

    spec: RunSpec
    status: str
    diverged_round: int | None
    rounds_completed: int
    metric_rows: Sequence[Mapping[str, Any]]
    allocation_rows: Sequence[Mapping[str, Any]]
    trace_rows: Sequence[Mapping[str, Any]]
    num_params: int
    wall_time_s: float              # the run's own work, in seconds

    @cached_property
    def summary(self) -> records.Summary:
        evaluated = [r for r in self.metric_rows if r.get("test_accuracy") is not None]
        finite = [r["test_accuracy"] for r in evaluated if math.isfinite(r["test_accuracy"])]
        trained = [r for r in self.metric_rows if r["round"] > 0]
        diverged = self.status == records.DIVERGED
        return records.Summary(
            method=self.spec.method,
            status=self.status,
            diverged_round=self.diverged_round,
            final_accuracy=None if diverged else _finite_or_none(evaluated[-1]["test_accuracy"]),
            best_accuracy=max(finite) if finite else None,
            final_test_loss=None if diverged else _finite_or_none(evaluated[-1].get("test_loss")),
            rounds_completed=self.rounds_completed,
            mean_sign_error=_mean(r.get("sign_error_rate") for r in trained),
            mean_modulus_error=_mean(r.get("modulus_error_rate") for r in trained),
            run_hash=self.spec.run_hash,
            code_version=code_version(),
            num_params=self.num_params,
            versions=package_versions(),
        )


@dataclass
class RoundRecords:
    """What a hook adds to the run's records: fields of the round's metrics row (columns of
    ``records.METRIC_COLUMNS`` that the row does not hold yet) and rows of allocation.csv and solver_trace.csv."""

    metrics: dict[str, Any] = field(default_factory=dict)
    allocation: list[dict[str, Any]] = field(default_factory=list)
    trace: list[dict[str, Any]] = field(default_factory=list)


class Callback:
    """Run bookkeeping: override the hooks it needs."""

    def begin(self, view: RoundView) -> RoundRecords | None:
        """Before round 1 of a fresh run, on the initial model (not when the run resumes from a checkpoint)."""
        return None

    def after_round(self, view: RoundView) -> RoundRecords | None:
        """After every round."""
        return None

    def end(self, run: RunEnd) -> None:
        """Once, when the run has stopped (all rounds done, or diverged)."""
        return None


def begin(spec: RunSpec, state: RunState, callbacks: Sequence[Callback]) -> None:
    """Round 0 of a fresh run: its metrics row, then every callback's ``begin``."""
    state.metric_rows.append({"round": 0})
    _hooks(spec, state, callbacks, "begin", None)


def after_round(spec: RunSpec, state: RunState, outcome: RoundOutcome, callbacks: Sequence[Callback]) -> None:
    """Every callback's ``after_round``, after the round's own metrics row is in the state."""
    _hooks(spec, state, callbacks, "after_round", outcome)


def end(spec: RunSpec, state: RunState, callbacks: Sequence[Callback], num_params: int, wall_time: float) -> RunEnd:
    """Every callback's ``end``; returns what they saw."""
    run = RunEnd(spec, state.status, state.diverged_round, state.round,
                 tuple(MappingProxyType(r) for r in state.metric_rows),
                 tuple(MappingProxyType(r) for r in state.allocation_rows),
                 tuple(MappingProxyType(r) for r in state.trace_rows), num_params, wall_time)
    for callback in callbacks:
        callback.end(run)
    return run


def _hooks(spec: RunSpec, state: RunState, callbacks: Sequence[Callback], hook: str,
           outcome: RoundOutcome | None) -> None:
    row = state.metric_rows[-1]
    view = RoundView(spec, state.round, MappingProxyType(row), state.weights, state.status, state.to_checkpoint,
                     outcome)
    for callback in callbacks:
        added = getattr(callback, hook)(view)
        if added is not None:
            _merge(state, row, added, callback)


_TABLES = ((records.ALLOCATION_CSV, records.ALLOCATION_COLUMNS, frozenset(records.ALLOCATION_COLUMNS)),
           (records.TRACE_CSV, records.TRACE_COLUMNS, frozenset(records.TRACE_COLUMNS)))


def _merge(state: RunState, row: dict[str, Any], added: RoundRecords, callback: Callback) -> None:
    """Add a hook's records to the state; a field outside the records contract, or one the row already holds,
    is an error (a CSV writer would drop the one silently and the other would overwrite a measurement)."""
    name = type(callback).__name__
    for column, value in added.metrics.items():
        if column not in records.METRIC_COLUMNS:
            raise ValueError(f"callback {name} returned metrics field '{column}', which is no column of "
                             f"{records.METRICS_CSV}: allowed {', '.join(records.METRIC_COLUMNS)}")
        if column in row:
            raise ValueError(f"callback {name} returned metrics field '{column}' for round {row['round']}, "
                             f"which that round's row already holds")
        row[column] = value
    for (file, columns, allowed), rows in zip(_TABLES, (added.allocation, added.trace)):
        for added_row in rows:
            if not added_row.keys() <= allowed:
                unknown = sorted(added_row.keys() - allowed)[0]
                raise ValueError(f"callback {name} returned a row of {file} with '{unknown}', which is no column of "
                                 f"{file}: allowed {', '.join(columns)}")
    state.allocation_rows.extend(added.allocation)
    state.trace_rows.extend(added.trace)


# ---------------------------------------------------------------------------------------------------
# The default callbacks (Simulation.callbacks)
# ---------------------------------------------------------------------------------------------------

class Evaluation(Callback):
    """Test loss and accuracy of the model at the scheduled rounds (``records.evaluation_schedule``: round 0
    included) and at abnormal rounds."""

    def __init__(self, model: FlatModel, test_x: torch.Tensor, test_y: torch.Tensor, rounds: Set[int]):
        self.model, self.test_x, self.test_y, self.rounds = model, test_x, test_y, rounds

    def begin(self, view):
        return self._measure(view) if view.round in self.rounds else None

    def after_round(self, view):
        return self._measure(view) if view.round in self.rounds or view.outcome.abnormal else None

    def _measure(self, view: RoundView) -> RoundRecords:
        loss, accuracy = evaluate(self.model, view.weights, self.test_x, self.test_y)
        return RoundRecords({"test_loss": loss, "test_accuracy": accuracy})


class AllocationRecord(Callback):
    """Every device's resources, error probabilities and packet worths, and the solver's trace, in the
    scheduled (and abnormal) rounds where something was allocated."""

    def __init__(self, rounds: Set[int]):
        self.rounds = rounds

    def after_round(self, view):
        outcome = view.outcome
        if outcome.allocation is None or not (view.round in self.rounds or outcome.abnormal):
            return None
        resources, delivery, problem = outcome.resources, outcome.delivery, outcome.problem
        allocation = [{
            "round": view.round, "device": k, "bandwidth_hz": float(resources.bandwidth[k]),
            "power_sign_w": float(resources.power_sign[k]), "power_modulus_w": float(resources.power_modulus[k]),
            "slot_share": float(resources.slot_share[k]),
            "q_sign": float(delivery.q_sign[k]), "q_modulus": float(delivery.q_modulus[k]),
            "u_sign": float(problem.u_sign[k]), "u_modulus": float(problem.u_modulus[k]),
        } for k in range(problem.num_devices)]
        trace = [{"round": view.round, "iteration": iteration, "objective": float(value)}
                 for iteration, value in enumerate(outcome.allocation.trace)]
        return RoundRecords(allocation=allocation, trace=trace)


class ProgressLog(Callback):
    """One log line per evaluated round after the first; a warning when the run diverges."""

    def after_round(self, view):
        row, label, total = view.row, view.spec.method, view.spec.rounds
        if row.get("test_accuracy") is not None:
            log.info("%s round %d/%d: test accuracy %.4f, train loss %.4f, sign/modulus packet error %s/%s",
                     label, view.round, total, row["test_accuracy"], row["train_loss"],
                     _pct(row.get("sign_error_rate")), _pct(row.get("modulus_error_rate")))
        if view.status == records.DIVERGED:
            log.warning("%s diverged at round %d (non-finite loss or weights)", label, view.round)
        return None


class Checkpoints(Callback):
    """The whole state every ``every`` rounds (not after the last, nor once diverged): atomic and
    fsynced (spfl.simulator.checkpoint); it only resumes the same run spec under the same code."""

    def __init__(self, path: Path, every: int):
        self.path, self.every = path, every

    def after_round(self, view):
        if (self.every and view.status == records.OK and view.round < view.spec.rounds
                and view.round % self.every == 0):
            checkpoints.save(self.path, view.spec.run_hash, view.snapshot())
        return None


class RunRecords(Callback):
    """The run's records in ``out`` (spfl.records), written when the run ends; summary.json last, so its
    presence means the run finished."""

    def __init__(self, out: Path):
        self.out = Path(out)

    def end(self, run):
        out = self.out
        records.write_json(out / records.RUN_SETTINGS_JSON, run.spec.to_dict())
        records.write_csv(out / records.METRICS_CSV, records.METRIC_COLUMNS, run.metric_rows)
        records.write_csv(out / records.ALLOCATION_CSV, records.ALLOCATION_COLUMNS, run.allocation_rows)
        records.write_csv(out / records.TRACE_CSV, records.TRACE_COLUMNS, run.trace_rows)
        # The one measurement that differs between identical runs lives apart, so every other record is
        # byte-identical across reruns, thread grants and executors.
        records.write_json(out / records.TIMING_JSON, {records.WALL_TIME: round(run.wall_time_s, 3)})
        identity = {"cell": run.spec.cell_hash, "seed": run.spec.seed, "method": run.spec.method,
                    "run_hash": run.spec.run_hash}
        summary_text = run.summary.text()
        records.write_json(out / records.CHECKSUMS, records.checksums(out, identity, summary_text))
        records.write_atomic(out / records.SUMMARY_JSON, summary_text)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _mean(values) -> float | None:
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else None


def _finite_or_none(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None
