"""The run lifecycle: hooks around an unchanged round, read-only views, the fields a callback returns, the
records writer as the end hook, the evaluation schedule, and the allocation-record and progress-log hooks."""

from __future__ import annotations

import dataclasses
import json
import logging
from types import SimpleNamespace

import numpy as np
import pytest

from core_helpers import Recorder, round_view
from spfl import records
from spfl.configuration.settings import make_spec
from spfl.records import evaluation_schedule
from spfl.simulator.lifecycle import AllocationRecord, Callback, ProgressLog, RoundRecords, RunRecords
from spfl.simulator.simulation import RoundOutcome, Simulation, build_environment, run_cell

# Scarce enough that something is allocated (allocation rows, solver traces) and packets are lost.
TINY = dict(num_devices=3, batch_size=8, rounds=4, eval_every=2, learning_rate=0.1, partition="iid",
            total_bandwidth_mhz=0.5, deadline_ms=60.0)


@pytest.fixture(scope="module")
def env():
    return build_environment(make_spec(TINY))


def test_begin_once_on_the_initial_model_after_every_round_and_end_once(env):
    """The default callbacks come first, so the recorder sees their fields: the test accuracy at the
    scheduled rounds 0, 1, 2 and 4 only; the end hook sees every row of the run."""
    recorder = Recorder()
    sim = Simulation(env, "spfl")
    state = sim.train(callbacks=sim.callbacks() + [recorder])
    assert [call[:2] for call in recorder.calls] == [("begin", 0), ("after_round", 1), ("after_round", 2),
                                                     ("after_round", 3), ("after_round", 4), ("end", 4)]
    assert [("test_accuracy" in call[2]) for call in recorder.calls[:-1]] == [True, True, True, False, True]
    assert recorder.calls[0][2] == state.metric_rows[0]
    assert recorder.calls[-1][2] == state.metric_rows


def test_a_callback_sees_a_read_only_view(env):
    class Overwrite(Callback):
        def after_round(self, view):
            view.row["test_accuracy"] = 1.0

    class Renumber(Callback):
        def begin(self, view):
            view.round = 5

    with pytest.raises(TypeError):
        Simulation(env, "ideal").train(callbacks=[Overwrite()])
    with pytest.raises(dataclasses.FrozenInstanceError):
        Simulation(env, "ideal").train(callbacks=[Renumber()])


def test_returned_fields_join_the_rounds_row_and_its_records(env, tmp_path):
    """A callback's fields go into the round's row, where the callbacks after it see them, and into
    metrics.csv; its allocation and trace rows into allocation.csv and solver_trace.csv."""

    class Measure(Callback):
        def begin(self, view):
            return RoundRecords({"test_accuracy": 0.125})

        def after_round(self, view):
            return RoundRecords({"test_accuracy": 0.25 * view.round},
                                trace=[{"round": view.round, "iteration": 0, "objective": -1.0}])

    seen = []

    class Reader(Callback):
        def after_round(self, view):
            seen.append(view.row["test_accuracy"])

    out = tmp_path / "ideal"
    state = Simulation(env, "ideal").train(callbacks=[Measure(), Reader(), RunRecords(out)])
    assert seen == [0.25, 0.5, 0.75, 1.0]
    assert [row.get("test_accuracy") for row in state.metric_rows] == [0.125, 0.25, 0.5, 0.75, 1.0]
    column = records.METRIC_COLUMNS.index("test_accuracy")
    lines = (out / records.METRICS_CSV).read_text().splitlines()[1:]
    assert [line.split(",")[column] for line in lines] == ["0.125", "0.25", "0.5", "0.75", "1.0"]
    assert (out / records.TRACE_CSV).read_text().splitlines()[1:] == [f"{r},0,-1.0" for r in range(1, 5)]


@pytest.mark.parametrize("added, message", [
    (RoundRecords({"sign_only_devices": 3}), "callback Bad returned metrics field 'sign_only_devices', which is no "
                                             "column of metrics.csv: allowed round, train_loss, "),
    (RoundRecords({"train_loss": 0.0}), "callback Bad returned metrics field 'train_loss' for round 1, which that "
                                        "round's row already holds"),
    (RoundRecords(allocation=[{"round": 1, "device": 0, "bandwidth": 1.0}]),
     "callback Bad returned a row of allocation.csv with 'bandwidth', which is no column of allocation.csv"),
])
def test_a_field_outside_the_contract_or_already_measured_is_refused(env, added, message):
    """A CSV writer would drop the one silently and the other would overwrite a measurement."""

    class Bad(Callback):
        def after_round(self, view):
            return added

    with pytest.raises(ValueError) as raised:
        Simulation(env, "ideal").train(callbacks=[Bad()])
    assert str(raised.value).startswith(message)


def test_the_records_writer_is_the_end_hook(env, tmp_path):
    """Without it a run writes nothing; with it the run's records are those of `spfl run`'s cell, and the
    summary it writes is the one the end hook computed."""
    sim = Simulation(env, "spfl")
    sim.train(callbacks=sim.callbacks())
    assert not list(tmp_path.iterdir())
    callbacks = sim.callbacks(out=tmp_path / "alone")
    state = sim.begin(None, callbacks)
    while sim.running(state):
        sim.advance(state, callbacks)
    run = sim.end(state, callbacks, 1.0)
    run_cell(env.spec, ["spfl"], tmp_path / "cell", env=env)
    for name in (records.RUN_SETTINGS_JSON, records.METRICS_CSV, records.ALLOCATION_CSV, records.TRACE_CSV):
        assert (tmp_path / "alone" / name).read_bytes() == (tmp_path / "cell" / "spfl" / name).read_bytes(), name
    summary = json.loads((tmp_path / "alone" / records.SUMMARY_JSON).read_text())
    assert summary == dataclasses.asdict(run.summary)
    assert summary == json.loads((tmp_path / "cell" / "spfl" / records.SUMMARY_JSON).read_text())
    assert json.loads((tmp_path / "alone" / records.TIMING_JSON).read_text()) == {records.WALL_TIME: 1.0}


@pytest.mark.parametrize("rounds, every", [(5, 2), (4, 4), (3, 5), (3, 1)])
def test_a_run_evaluates_and_snapshots_exactly_the_scheduled_rounds(rounds, every):
    """Round 1 included whatever eval_every; allocation.csv and solver_trace.csv at the same rounds but 0."""
    spec = make_spec(TINY, rounds=rounds, eval_every=every)
    state = Simulation(build_environment(spec), "spfl").train()
    schedule = evaluation_schedule(rounds, every)
    assert [r["round"] for r in state.metric_rows if "test_accuracy" in r] == list(schedule)
    assert sorted({r["round"] for r in state.allocation_rows}) == [r for r in schedule if r > 0]
    assert sorted({r["round"] for r in state.trace_rows}) == [r for r in schedule if r > 0]


@pytest.mark.parametrize("rounds, every, expected", [
    (10, 3, {0, 1, 3, 6, 9, 10}),   # the multiple just below the last round is kept
    (9, 3, {0, 1, 3, 6, 9}),        # the last round is a multiple
    (5, 3, {0, 1, 3, 5}),           # no multiple beyond the last round
    (1, 4, {0, 1}),
])
def test_the_evaluation_schedule_is_the_initial_model_the_first_every_multiple_and_the_last(rounds, every, expected):
    assert evaluation_schedule(rounds, every) == frozenset(expected)


# --- the allocation record and the progress log --------------------------------------------------------

def test_allocation_record_writes_one_trace_row_per_solver_iteration():
    two_devices = np.array([1.0, 2.0])
    outcome = RoundOutcome(
        round=5, train_loss=0.5,
        resources=SimpleNamespace(bandwidth=two_devices, power_sign=two_devices, power_modulus=two_devices,
                                  slot_share=two_devices),
        delivery=SimpleNamespace(q_sign=two_devices, q_modulus=two_devices),
        problem=SimpleNamespace(num_devices=2, u_sign=two_devices, u_modulus=two_devices),
        allocation=SimpleNamespace(trace=[3.0, 2.5]))
    added = AllocationRecord(frozenset({5})).after_round(round_view(5, outcome=outcome))
    assert added.trace == [{"round": 5, "iteration": 0, "objective": 3.0},
                           {"round": 5, "iteration": 1, "objective": 2.5}]
    assert [(r["round"], r["device"], r["bandwidth_hz"]) for r in added.allocation] == [(5, 0, 1.0), (5, 1, 2.0)]
    assert added.metrics == {}


def test_progress_line_shows_both_packet_error_rates(caplog):
    row = {"test_accuracy": 0.75, "train_loss": 1.25, "sign_error_rate": 0.125, "modulus_error_rate": 0.5}
    with caplog.at_level(logging.INFO, logger="spfl"):
        ProgressLog().after_round(round_view(3, row))
    assert [r.getMessage() for r in caplog.records] == [
        "spfl round 3/10: test accuracy 0.7500, train loss 1.2500, sign/modulus packet error 12.5%/50.0%"]


def test_progress_log_reports_round_one_and_a_missing_rate_as_a_dash(caplog):
    row = {"test_accuracy": 0.5, "train_loss": 2.0, "sign_error_rate": None, "modulus_error_rate": 0.25}
    with caplog.at_level(logging.INFO, logger="spfl"):
        ProgressLog().after_round(round_view(1, row))
    assert [r.getMessage() for r in caplog.records] == [
        "spfl round 1/10: test accuracy 0.5000, train loss 2.0000, sign/modulus packet error -/25.0%"]


def test_progress_log_warns_once_the_run_has_diverged(caplog):
    with caplog.at_level(logging.INFO, logger="spfl"):
        ProgressLog().after_round(round_view(4, {"train_loss": float("nan")}, status="diverged"))
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", "spfl diverged at round 4 (non-finite loss or weights)")]
