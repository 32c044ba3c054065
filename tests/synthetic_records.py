"""Synthetic run records written to the records contract, for the table and figure tests.

Two kinds:

* ``write_cell`` writes every record of one cell of a real plan (``load_plan(config())``) with known
  numbers: devices.csv, metrics.csv, allocation.csv, solver_trace.csv, spec.json, summary.json;
* ``write_run`` writes the three records the comparison tables read (spec.json, summary.json,
  metrics.csv) for one run given its final accuracy, so a test chooses every number by hand.

No simulator is involved, so the aggregates can be checked against hand-computed values; the files, columns,
summary keys and evaluated rounds are those of the records contract (``spfl.records``), so the fixtures have
the shape of a real run's records.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from spfl import records as contract
from spfl.configuration import load_plan
from spfl.configuration.settings import make_spec
from spfl.records import Summary, evaluation_schedule, write_atomic, write_csv, write_json

ROUNDS, EVAL = 6, 3
K = 4
MAIN = ["ideal", "digital", "digital_reuse", "scheduling", "signsgd", "spfl", "spfl_uniform"]
# Final accuracy of each method: a per-method level, a per-seed offset shared by all methods, and for
# SP-FL an extra per-seed spread, so the paired differences vary over seeds (0, 1 and 3 points).
LEVEL = {"ideal": 0.9, "digital": 0.5, "digital_reuse": 0.55, "scheduling": 0.6, "signsgd": 0.62,
         "spfl": 0.7, "spfl_uniform": 0.4, "spfl_power": 0.5, "spfl_bandwidth": 0.6, "spfl_noreuse": 0.65}
SPFL_SPREAD = {0: 0.0, 1: 0.01, 2: 0.03, 3: 0.0, 4: 0.02}
OPTIMIZED = {"spfl", "spfl_power", "spfl_bandwidth", "spfl_noreuse"}


def config() -> dict:
    return {
        "name": "synthetic",
        "base": {"dataset": "digits", "rounds": ROUNDS, "eval_every": EVAL, "num_devices": K},
        "seeds": [0, 1, 2],
        "experiments": {
            "bandwidth": {"grid": {"total_bandwidth_mhz": [1, 2], "method": MAIN}},
            "power": {"grid": {"max_power_dbm": [10, 23], "method": MAIN}},
            "devices": {"grid": {"num_devices": [4, 8], "method": MAIN}},
            "noniid": {"grid": {"dirichlet_beta": [0.1, 0.5], "method": MAIN}},
            "ablation": {"grid": {"method": ["spfl", "spfl_uniform", "spfl_power", "spfl_bandwidth",
                                             "spfl_noreuse"]}},
        },
        "figures": {**{name: {"experiment": exp} for name, exp in (
            ("accuracy_vs_round", "bandwidth"), ("accuracy_vs_bandwidth", "bandwidth"),
            ("accuracy_vs_power", "power"), ("accuracy_vs_devices", "devices"), ("allocation", "bandwidth"),
            ("packet_errors", "bandwidth"), ("ablation", "ablation"), ("solver_convergence", "bandwidth"),
            ("noniid", "noniid"))}, "gain": {}},
        "headline": {"experiments": ["bandwidth", "power"]},
    }


def accuracy(method: str, seed: int, bandwidth: float) -> float:
    """Known final accuracy: SP-FL's lead over the best baseline (signsgd) shrinks with bandwidth."""
    gain = 0.04 / bandwidth + SPFL_SPREAD[seed % 5] if method == "spfl" else 0.0
    return LEVEL[method] + gain + 0.01 * (seed % 5)


def write_cell(folder: Path, cell, methods) -> None:
    params = cell.params
    num_devices = params["num_devices"]
    gains = [10 ** (-(9 + d)) for d in range(num_devices)]  # device 0 strongest
    write_csv(folder / contract.DEVICES_CSV, contract.DEVICE_COLUMNS,
              [{"device": d, "distance_m": 100.0 + d, "gain": g, "num_samples": 10, "alpha": 1 / num_devices}
               for d, g in enumerate(gains)])
    write_csv(folder / contract.PARTITION_CSV, contract.PARTITION_COLUMNS,
              [{"device": d, "label": 0, "count": 10} for d in range(num_devices)])
    bandwidth = params["total_bandwidth_mhz"]
    for method in methods:
        out = folder / method
        final = accuracy(method, params["seed"], bandwidth)
        served = served_devices(method, num_devices, bandwidth)
        metrics = []
        schedule = evaluation_schedule(ROUNDS, EVAL)
        for r in range(ROUNDS + 1):
            evaluated = r in schedule
            metrics.append({"round": r, "train_loss": 1.0 / (r + 1),
                            "test_accuracy": final * r / ROUNDS if evaluated else None,
                            "test_loss": 1.0 if evaluated else None,
                            "sign_error_rate": None if r == 0 else 0.1 / bandwidth,
                            "modulus_error_rate": None if r == 0 or method == "signsgd" else 0.4 / bandwidth,
                            **({} if r == 0 else {"devices_transmitting": num_devices,
                                                  "devices_sign_received": served[0] + r % 2,
                                                  "devices_both_received": served[1]})})
        write_csv(out / contract.METRICS_CSV, contract.METRIC_COLUMNS, metrics)
        snapshots = [r for r in schedule if r > 0]
        write_csv(out / contract.ALLOCATION_CSV, contract.ALLOCATION_COLUMNS, [
            {"round": r, "device": d, "bandwidth_hz": bandwidth * 1e6 * d / sum(range(num_devices)),
             "power_sign_w": 0.2 * 32, "power_modulus_w": 0.0 if d == num_devices - 1 else 0.1,
             "slot_share": 1 / 32 if method.startswith("spfl") else 1.0,
             "q_sign": 0.1, "q_modulus": 0.3, "u_sign": 1.0, "u_modulus": 2.0 * (d + 1) ** 2}
            for r in snapshots for d in range(num_devices)])
        trace = [{"round": r, "iteration": i, "objective": (1 + r) * (1 - 0.5 ** (i + 1))}
                 for r in snapshots for i in range(4)] if method in OPTIMIZED else []
        write_csv(out / contract.TRACE_CSV, contract.TRACE_COLUMNS, trace)
        spec = make_spec({**params, "method": method}).to_dict()
        write_json(out / contract.RUN_SETTINGS_JSON, spec)
        write_atomic(out / contract.SUMMARY_JSON, Summary(
            method=method, status=contract.OK, diverged_round=None, final_accuracy=final,
            best_accuracy=final, final_test_loss=1.0, rounds_completed=ROUNDS,
            mean_sign_error=0.1 / bandwidth, mean_modulus_error=None if method == "signsgd" else 0.4 / bandwidth,
            run_hash="x", code_version="y", num_params=310, versions={}).text())


def served_devices(method: str, num_devices: int, bandwidth: float) -> tuple[int, int]:
    """Known devices served per round (sign arrived, full gradient arrived), rounds 1.. (odd rounds one more
    sign): more with bandwidth, signSGD sends signs only."""
    sign = min(num_devices - 1, int(round(bandwidth * (2 if method == "spfl" else 1))))
    return sign, 0 if method == "signsgd" else sign // 2


def make_plan(root: Path, cfg: dict | None = None):
    """A plan whose run records exist (synthetic) under ``root``; ``plan.root`` says where."""
    plan = load_plan(cfg or config())
    for cell in plan.cells.values():
        write_cell(root / "results" / "runs" / cell.hash, cell, cell.methods)
    plan.root = root
    return plan


def records(plan, runs) -> list[dict]:
    return [{**r.record(), "dir": str(plan.root / "results" / "runs" / r.cell)} for r in runs]


def table(plan, figure):
    from spfl.reporting.render import build_table

    return build_table(figure, records(plan, plan.figure_runs(figure)), plan.figures[figure])


# --- hand-made runs for the comparison tables ------------------------------------------------------

def write_run(root: Path, experiment: str, method: str, seed: int, final_pct: float, budget_pct: float,
              *, rounds: int = ROUNDS, eval_every: int = EVAL, normalize: str = "received", status: str = "ok",
              dataset: str = "digits", **swept: Any) -> dict[str, Any]:
    """One run whose test accuracy is 10 % at rounds 0 and 1 (the initial model and one step), ``budget_pct``
    at the evaluated rounds up to ``rounds // 2`` (which must be one) and ``final_pct`` after; returns its run
    record (experiment, cell, dir, seed, method, swept settings)."""
    cell = f"{experiment}-{seed}-" + "-".join(f"{k}{v}" for k, v in swept.items())
    folder = root / cell / method
    evaluated = list(evaluation_schedule(rounds, eval_every))
    middle = rounds // 2
    assert middle in evaluated and middle > 1, "choose rounds and eval_every so that rounds // 2 > 1 is evaluated"
    metrics = [{"round": r, "train_loss": 1.0,
                "test_accuracy": (10.0 if r <= 1 else budget_pct if r <= middle else final_pct) / 100.0}
               for r in evaluated]
    write_csv(folder / contract.METRICS_CSV, contract.METRIC_COLUMNS, metrics)
    write_json(folder / contract.RUN_SETTINGS_JSON, {"dataset": dataset, "rounds": rounds, "eval_every": eval_every,
                                            "normalize": normalize, "method": method, "seed": seed})
    diverged = status == contract.DIVERGED
    write_atomic(folder / contract.SUMMARY_JSON, Summary(
        method=method, status=status, diverged_round=4 if diverged else None,
        final_accuracy=None if diverged else final_pct / 100.0, best_accuracy=final_pct / 100.0,
        final_test_loss=1.0, rounds_completed=rounds, mean_sign_error=0.1, mean_modulus_error=0.2,
        run_hash="x", code_version="y", num_params=310, versions={}).text())
    return {"experiment": experiment, "cell": cell, "dir": str(root / cell), "seed": seed, "method": method,
            **swept}


def quick_like_config() -> dict:
    """A config shaped like config/quick.yaml (six bandwidths, three labelled bandwidth experiments, the power
    sweep, confirmation seeds) for the figure tests and for looking at every figure without simulating."""
    main = ["ideal", "digital", "digital_reuse", "scheduling", "signsgd", "spfl"]
    bandwidths = [0.1, 0.2, 0.4, 0.7, 1.2, 2.5]
    compared = ["digital", "digital_reuse", "scheduling", "signsgd", "spfl"]
    return {
        "name": "synthetic-quick",
        "base": {"dataset": "digits", "rounds": ROUNDS, "eval_every": EVAL, "num_devices": 8},
        "seeds": [0, 1, 2],
        "confirmation": {"seeds": [5, 6, 7], "experiments": ["bandwidth", "bandwidth_all", "bandwidth_all_share"]},
        "experiments": {
            "bandwidth": {"label": "normalize: received (default)",
                          "grid": {"total_bandwidth_mhz": bandwidths, "method": [*main, "spfl_uniform"]}},
            "bandwidth_all": {"label": "normalize: all", "set": {"normalize": "all"},
                              "grid": {"total_bandwidth_mhz": bandwidths, "method": compared}},
            "bandwidth_all_share": {"label": "normalize: all + optimized sign share",
                                    "set": {"normalize": "all", "slot_share": "optimized"},
                                    "grid": {"total_bandwidth_mhz": bandwidths, "method": compared}},
            "power": {"label": "power sweep", "grid": {"max_power_dbm": [11, 17, 23], "method": main}},
            "ablation": {"grid": {"total_bandwidth_mhz": [0.2, 0.7],
                                  "method": ["spfl", "spfl_uniform", "spfl_power", "spfl_bandwidth", "spfl_noreuse"]}},
            "sensitivity": {"grid": {"total_bandwidth_mhz": [0.2, 0.7], "method": compared},
                            "variants": {"default": {}, "fading=per_packet": {"fading": "per_packet"}}},
        },
        "figures": {"accuracy_vs_round": {"experiment": "bandwidth",
                                          "select": {"total_bandwidth_mhz": [0.2, 0.7, 2.5]}},
                    "accuracy_vs_bandwidth": {"experiment": "bandwidth"},
                    "accuracy_vs_power": {"experiment": "power"},
                    "allocation": {"experiment": "bandwidth", "select": {"total_bandwidth_mhz": [0.2, 2.5]}},
                    "packet_errors": {"experiment": "bandwidth"},
                    "ablation": {"experiment": "ablation"},
                    "solver_convergence": {"experiment": "bandwidth", "select": {"total_bandwidth_mhz": [0.7]}},
                    "gain": {}, "devices_served": {},
                    "sensitivity": {"experiment": "sensitivity"}},
        "headline": {"experiments": ["bandwidth", "bandwidth_all", "bandwidth_all_share", "power"]},
    }
