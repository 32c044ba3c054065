"""The allocation's share of one quick-configuration simulation cell, today's solver and the old one.

    python bench/bench_cell_allocation.py [--rounds 60] [--repeats 3] [--json bench/out/cell_allocation.json]

Runs whole cells of config/quick.yaml's base (digits MLP, K = 20, 0.4 MHz, ``surrogate: descent`` with the
sketched Gram, 1 thread for torch and BLAS, as the pipeline runs them) through ``Simulation.train`` for
the settings below, times every ``allocate`` call and keeps its problem, then solves the same problems
with the solver before issue #21 (src/spfl/allocation at main f3914d3, bench/solver_at_revision.py) and
again with today's, interleaved, fastest of ``--repeats`` each.  Reported per setting: the cell's wall
time, today's allocation time within it, both solvers' time on the cell's problems and the Phi
difference; "cell before" is the cell's time with the old solver's allocation time in place of today's
(the old solver's answers would steer the training a little differently; its share is what matters).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import spfl.simulator.simulation as simulation  # noqa: E402
from check_allocation_phi import timed_pair  # noqa: E402
from solver_at_revision import DEFAULT_REVISION, load_solver  # noqa: E402
from spfl.configuration.settings import make_spec  # noqa: E402

BASE = dict(dataset="digits", model="mlp", num_devices=20, partition="dirichlet", dirichlet_beta=0.5,
            batch_size=64, learning_rate=0.05, eval_every=5, total_bandwidth_mhz=0.4, max_power_dbm=23.0,
            deadline_ms=273.3, device="cpu")
# (label, settings, method): the quick configuration's experiments with an optimized policy
SETTINGS = (
    ("received, proportional (bandwidth)", {}, "spfl"),
    ("all, proportional (bandwidth_all)", {"normalize": "all"}, "spfl"),
    ("all, optimized share (bandwidth_all_share)", {"normalize": "all", "slot_share": "optimized"}, "spfl"),
    ("received, scheduling (bandwidth)", {}, "scheduling"),
)


def run_cell(settings: dict, method: str, rounds: int) -> tuple[float, float, list]:
    """(cell wall seconds, seconds inside allocate, the (problem, policy) of every call)."""
    spec = make_spec(BASE, **settings, rounds=rounds)
    env = simulation.build_environment(spec)
    calls, spent = [], [0.0]
    original = simulation.allocate

    def timed(problem, policy="spfl"):
        start = time.perf_counter()
        result = original(problem, policy=policy)
        spent[0] += time.perf_counter() - start
        calls.append((problem, policy))
        return result

    simulation.allocate = timed
    try:
        start = time.perf_counter()
        simulation.Simulation(env, method).train()
        wall = time.perf_counter() - start
    finally:
        simulation.allocate = original
    return wall, spent[0], calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", default=str(ROOT / "bench" / "out" / "cell_allocation.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    from threadpoolctl import threadpool_limits
    threadpool_limits(limits=1, user_api="blas")
    old = load_solver(DEFAULT_REVISION)
    load_before = os.getloadavg()
    print(f"load average before: {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}")
    rows = []
    for label, settings, method in SETTINGS:
        wall, inside, calls = run_cell(settings, method, args.rounds)
        old_seconds = new_seconds = 0.0
        differences = []
        for problem, policy in calls:
            old_s, new_s, before, after = timed_pair(old, problem, policy, args.repeats)
            old_seconds += old_s
            new_seconds += new_s
            differences.append((after.objective - before.objective) / max(abs(before.objective), 1e-300))
        before_cell = wall - inside + old_seconds
        row = {"setting": label, "method": method, "rounds": args.rounds, "calls": len(calls),
               "cell_s": wall, "allocation_in_cell_s": inside, "old_allocation_s": old_seconds,
               "new_allocation_s": new_seconds, "ratio": old_seconds / max(new_seconds, 1e-12),
               "cell_before_s": before_cell, "share_before": old_seconds / before_cell, "share_after": inside / wall,
               "phi_difference_median": float(np.median(differences)), "phi_difference_min": float(min(differences))}
        rows.append(row)
        print(f"{label} [{method}, {len(calls)} solves]: cell {wall:.2f} s (allocation {inside:.2f} s, "
              f"{100 * inside / wall:.0f} %); on its problems old {old_seconds:.2f} s, new {new_seconds:.2f} s "
              f"({row['ratio']:.1f}x); cell before ~{before_cell:.2f} s (allocation "
              f"{100 * row['share_before']:.0f} %); Phi (new - old) / |old| median {row['phi_difference_median']:.1e}, "
              f"min {row['phi_difference_min']:.1e}", flush=True)
    load_after = os.getloadavg()
    print(f"load average after: {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}")
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as handle:
        json.dump({"machine": platform.platform(), "cpus": os.cpu_count(), "revision": DEFAULT_REVISION,
                   "load_average_before": load_before, "load_average_after": load_after, "rows": rows}, handle,
                  indent=2)


if __name__ == "__main__":
    main()
