"""Run bookkeeping around the round loop: evaluation, allocation records, progress log, checkpoints.

One round's algorithm is ``Simulation.step``; it returns a ``RoundOutcome`` and appends the round's
own metrics row to the run state.  Everything else a run does hooks in here, after each round and in
list order (in the manner of pfl-research's callbacks), so a new measurement or output is one class
and the round itself never changes for it.  ``Simulation.callbacks`` lists the default ones.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Set
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from spfl import records
from spfl.simulator import checkpoint as checkpoints
from spfl.simulator.training import evaluate

if TYPE_CHECKING:  # only for annotations: spfl.simulator.simulation imports this module
    from spfl.simulator.allocation import Allocation, AllocationProblem
    from spfl.simulator.simulation import RunState, Simulation
    from spfl.simulator.transmission import Delivery, Resources

log = logging.getLogger("spfl")


@dataclass
class RoundOutcome:
    """What one round did.  ``row`` is the round's metrics row, already in the state's
    ``metric_rows``: a callback that measures something adds its fields to it."""

    round: int
    row: dict[str, Any]
    train_loss: float | None = None  # None before the first round
    sent: bool = True  # False: the run diverged before anything was sent
    resources: Resources | None = None
    delivery: Delivery | None = None
    allocation: Allocation | None = None  # None where nothing was allocated
    problem: AllocationProblem | None = None
    update: torch.Tensor | None = field(default=None, repr=False)

    @property
    def abnormal(self) -> bool:
        """A round whose model must be looked at whatever the schedule: non-finite loss, or diverged
        before sending."""
        return not self.sent or (self.train_loss is not None and not math.isfinite(self.train_loss))


class Callback:
    """A hook after every round (and once for round 0, the initial model, in a fresh run)."""

    def after_round(self, sim: Simulation, state: RunState, outcome: RoundOutcome) -> None:
        raise NotImplementedError


class Evaluation(Callback):
    """Test loss and accuracy of the model after the scheduled rounds (``records.evaluation_schedule``: round 0
    included) and abnormal rounds."""

    def __init__(self, rounds: Set[int]):
        self.rounds = rounds

    def after_round(self, sim, state, outcome):
        if outcome.round in self.rounds or outcome.abnormal:
            test = sim.env.dataset
            outcome.row["test_loss"], outcome.row["test_accuracy"] = evaluate(
                sim.env.model, state.weights, test.test_x, test.test_y)


class AllocationRecord(Callback):
    """Every device's resources, error probabilities and packet worths, and the solver's trace, in the
    scheduled (and abnormal) rounds where something was allocated."""

    def __init__(self, rounds: Set[int]):
        self.rounds = rounds

    def after_round(self, sim, state, outcome):
        if outcome.allocation is None or not (outcome.round in self.rounds or outcome.abnormal):
            return
        resources, delivery, problem = outcome.resources, outcome.delivery, outcome.problem
        for k in range(problem.num_devices):
            state.allocation_rows.append({
                "round": outcome.round, "device": k, "bandwidth_hz": float(resources.bandwidth[k]),
                "power_sign_w": float(resources.power_sign[k]), "power_modulus_w": float(resources.power_modulus[k]),
                "slot_share": float(resources.slot_share[k]),
                "q_sign": float(delivery.q_sign[k]), "q_modulus": float(delivery.q_modulus[k]),
                "u_sign": float(problem.u_sign[k]), "u_modulus": float(problem.u_modulus[k]),
            })
        for iteration, value in enumerate(outcome.allocation.trace):
            state.trace_rows.append({"round": outcome.round, "iteration": iteration, "objective": float(value)})


class ProgressLog(Callback):
    """One log line per evaluated round; a warning when the run diverges."""

    def after_round(self, sim, state, outcome):
        row, label, total = outcome.row, sim.spec.method, sim.spec.rounds
        if outcome.round > 0 and row.get("test_accuracy") is not None:
            log.info("%s round %d/%d: test accuracy %.4f, train loss %.4f, sign/modulus packet error %s/%s",
                     label, outcome.round, total, row["test_accuracy"], row["train_loss"],
                     _pct(row.get("sign_error_rate")), _pct(row.get("modulus_error_rate")))
        if state.status == records.DIVERGED:
            log.warning("%s diverged at round %d (non-finite loss or weights)", label, outcome.round)


class Checkpoints(Callback):
    """The whole state every ``every`` rounds (not after the last, nor once diverged): atomic and
    fsynced (spfl.simulator.checkpoint); it only resumes the same run spec under the same code."""

    def __init__(self, path: Path, every: int):
        self.path, self.every = path, every

    def after_round(self, sim, state, outcome):
        if (self.every and state.status == records.OK and 0 < outcome.round < sim.spec.rounds
                and outcome.round % self.every == 0):
            checkpoints.save(self.path, sim.spec.run_hash, state.to_checkpoint())


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"
