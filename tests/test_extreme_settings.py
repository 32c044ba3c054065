"""Every numeric setting has finite bounds: a spec at their corners runs every method without overflowing, and
`spfl run` accepts each maximum and refuses just above it."""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
import tracemalloc
import warnings

import pytest

from spfl.configuration.methods import METHODS
from spfl.configuration.settings import SETTINGS, SpecError, make_spec
from spfl.records import evaluation_schedule
from spfl.simulator.simulation import build_environment, run_cell

# Every setting is drawn at its minimum or maximum (the rules between settings respected), and each method of a
# cell runs two rounds through `spfl run`'s own path (spfl.simulator.simulation.run_cell): no warning (numpy's
# overflow warnings are errors here), no exception, and records that are numbers (a run whose model blows up
# is recorded as diverged, which is a result).

NUMERIC = {s.name: s for s in SETTINGS if s.kind in (int, float)}
# Settings held fixed here: the data's size and the cost of a test run, not overflow, bound these.
FIXED = {"rounds": 2, "eval_every": 1, "threads": 1, "checkpoint_every": 0, "num_devices": 2,
         "min_samples_per_device": 1, "shards_per_device": 1, "batch_size": 64, "local_steps": 1}
TRAIN = 1437  # digits


def corner(choose) -> dict:
    """A spec with every free numeric setting at its minimum or maximum (``choose(name)`` says which),
    adjusted only where a rule between settings requires it."""
    values = {name: (s.maximum if choose(name) else s.minimum) for name, s in NUMERIC.items() if name not in FIXED}
    values.update(FIXED)
    if values["learning_rate"] * values["smoothness"] >= 2:  # learning_rate * smoothness < 2
        values["smoothness"] = NUMERIC["smoothness"].minimum
    if values["cell_outer_radius_m"] <= values["cell_inner_radius_m"]:  # outer > inner
        values["cell_outer_radius_m"] = NUMERIC["cell_outer_radius_m"].maximum
        if values["cell_inner_radius_m"] >= values["cell_outer_radius_m"]:
            values["cell_inner_radius_m"] = NUMERIC["cell_inner_radius_m"].minimum
    return values


HANDPICKED = {
    "largest step": {"learning_rate": NUMERIC["learning_rate"].maximum, "smoothness": 0.0, "server_momentum": 0.999},
    "largest cell": {"cell_inner_radius_m": 50_000.0, "cell_outer_radius_m": 100_000.0, "max_power_dbm": -50.0,
                     "noise_psd_dbm_hz": 0.0},
    "smallest cell": {"cell_inner_radius_m": 1.0, "cell_outer_radius_m": 1.001, "max_power_dbm": 60.0,
                      "noise_psd_dbm_hz": -250.0},
    "widest band, shortest deadline": {"total_bandwidth_mhz": 10_000.0, "deadline_ms": 0.001, "slot_share": 0.001},
    "narrowest band, longest deadline": {"total_bandwidth_mhz": 0.001, "deadline_ms": 1e6, "slot_share": 0.999},
    "waterfall extremes": {"per_model": "waterfall", "waterfall_m": 1000.0, "total_bandwidth_mhz": 10_000.0},
    "one-bit moduli, sum power": {"modulus_bits": 1, "power_constraint": "sum", "slot_share": "optimized"},
    "most local steps": {"local_steps": 1000, "batch_size": 50_000, "learning_rate": 1.0, "smoothness": 0.0},
    "one device with all the data": {"num_devices": 1, "min_samples_per_device": TRAIN, "dirichlet_beta": 0.001},
    "smallest Dirichlet beta": {"num_devices": 5, "dirichlet_beta": 0.001, "partition": "dirichlet"},
    "shards": {"partition": "shards", "num_devices": 2, "shards_per_device": 700},
    "largest seed": {"seed": 2**32 - 1, "eval_every": 100_000, "checkpoint_every": 100_000},
}


def cases() -> list[tuple[str, dict]]:
    rng = random.Random(22)
    drawn = [(f"corner {i}", corner(lambda name: rng.random() < 0.5)) for i in range(6)]
    return ([("all minima", corner(lambda name: False)), ("all maxima", corner(lambda name: True))] + drawn
            + [(name, {**FIXED, "partition": "iid", **values}) for name, values in HANDPICKED.items()])


def finite_or_empty(text: str) -> bool:
    return text == "" or math.isfinite(float(text))


@pytest.mark.parametrize("name, settings", cases(), ids=[name for name, _ in cases()])
def test_a_spec_at_the_corners_of_the_bounds_runs_every_method_without_overflow(tmp_path, name, settings):
    spec = make_spec({"dataset": "digits", "model": "mlp", **settings})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's overflow, divide and invalid warnings included
        env = build_environment(spec)
        summaries = run_cell(spec, list(METHODS), tmp_path, env=env)
    for method, summary in summaries.items():
        assert summary["status"] in ("ok", "diverged"), (method, summary)
        assert summary["rounds_completed"] >= 1
        json.dumps(summary, allow_nan=False)
        rows = (tmp_path / method / "metrics.csv").read_text().splitlines()
        for row in rows[1:]:
            fields = row.split(",")
            if summary["status"] == "ok":
                assert all(finite_or_empty(f) for f in fields), (method, row)


@pytest.mark.parametrize("setting", sorted(NUMERIC))
def test_just_outside_the_bounds_is_refused(setting):
    s = NUMERIC[setting]
    step = 1 if s.kind is int else max(abs(s.maximum), 1.0) * 1e-6
    for value in (s.minimum - (1 if s.kind is int else max(abs(s.minimum), 1.0) * 1e-6), s.maximum + step):
        with pytest.raises(SpecError, match=f"'{setting}'"):
            make_spec(**{setting: value})
    for value in (math.inf, -math.inf, math.nan, 1e308, -1e308):
        with pytest.raises(SpecError, match=f"'{setting}'"):
            make_spec(**{setting: value})


def test_the_evaluation_schedule_takes_no_memory_for_a_billion_rounds():
    tracemalloc.start()
    try:
        schedule = evaluation_schedule(10**9, 1)
        assert 10**9 in schedule and 1 in schedule and 123_456_789 in schedule and 0 in schedule
        assert -1 not in schedule and 10**9 + 1 not in schedule
        assert len(schedule) == 10**9 + 1
        assert tracemalloc.get_traced_memory()[1] < 1_000_000
    finally:
        tracemalloc.stop()
    schedule = evaluation_schedule(10, 3)
    assert set(schedule) == {0, 1, 3, 6, 9, 10} and len(schedule) == 6 and 4 not in schedule


def test_a_billion_rounds_is_refused_naming_the_bound():
    with pytest.raises(SpecError, match=r"'rounds' = 1000000000 is invalid: allowed an integer >= 1 and <= 100000"):
        make_spec(rounds=10**9)
    with pytest.raises(SpecError, match=r"'rounds' = 1000000000.0 is invalid"):
        make_spec(rounds=1e9)


# --- each maximum through `spfl run`: accepted at it, refused just above it ----------------------------

MAXIMA = {s.name: s for s in SETTINGS if s.maximum is not None}


# What a setting at its maximum needs of the others to pass the rules between settings.
PARTNERS = {
    "num_devices": {"dataset": "cifar10", "min_samples_per_device": 1},  # 10,000 x min_samples samples
    "min_samples_per_device": {"dataset": "cifar10", "num_devices": 1},  # 1 x 50,000 samples
    "learning_rate": {"smoothness": 0.0},  # learning_rate * smoothness < 2
    "smoothness": {"learning_rate": 1e-6},
    "cell_inner_radius_m": {"cell_outer_radius_m": 100_000.0},  # outer > inner
}


def cli_run(tmp_path, name, value):
    spec = {"num_devices": 2, "batch_size": 4, "rounds": 1, "eval_every": 1, "partition": "iid",
            "method": "spfl", name: value, **PARTNERS.get(name, {})}
    if spec.get("dataset") == "cifar10":  # no CIFAR-10 here: the run gets as far as looking for it
        spec.update(data_dir=str(tmp_path / "no-data"))
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(spec))
    return subprocess.run([sys.executable, "-m", "spfl.cli", "run", str(path), "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=300)


def test_every_setting_with_a_maximum_is_covered():
    """Every number has a finite maximum (issue #22: no accepted value may overflow the simulation)."""
    assert set(MAXIMA) == {s.name for s in SETTINGS if s.kind in (int, float)}


@pytest.mark.parametrize("name", sorted(MAXIMA))
def test_setting_at_its_maximum_runs_and_just_above_is_refused(tmp_path, name):
    setting = MAXIMA[name]
    top = setting.maximum
    at = top - (1e-3 if setting.exclusive_maximum else 0)
    above = top if setting.exclusive_maximum else (top + 1 if setting.kind is int else top + max(1e-3, top * 1e-9))
    if setting.kind is int:
        at, above = int(at), int(above)
    refused = cli_run(tmp_path, name, above)
    assert refused.returncode != 0
    assert f"'{name}' = {above!r}" in refused.stderr and "allowed" in refused.stderr, refused.stderr
    assert not (tmp_path / "out").exists(), "refused before any work"
    if name == "rounds":  # 100,000 rounds take an hour: accepted, and memory does not grow with them
        assert make_spec(rounds=at).rounds == at  # (the billion-round tests above)
        return
    accepted = cli_run(tmp_path, name, at)
    if PARTNERS.get(name, {}).get("dataset") == "cifar10":  # accepted: the run goes on to look for the data
        assert name not in accepted.stderr and "cifar" in accepted.stderr.lower(), accepted.stderr
        return
    assert accepted.returncode == 0, accepted.stderr
    summary = json.loads((tmp_path / "out" / "spfl" / "summary.json").read_text())
    assert summary["rounds_completed"] == 1
    assert json.loads((tmp_path / "out" / "spfl" / "spec.json").read_text())[name] == at
