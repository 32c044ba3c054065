"""Digest of a few rounds of every method, to check that a speed change leaves results bit-identical.

Runs every method of ``spfl.configuration.methods`` for ``--rounds`` rounds (evaluation and allocation snapshot every
round) on the CIFAR CNN with CIFAR-shaped synthetic data (K = 20, the paper's settings, and half the slot
for the signs so that many signs arrive without their moduli) and on the digits MLP (the quick
configuration's settings, plus the aggregation options: other compensations, quantized moduli, majority
vote, normalize all, momentum),
and writes per run the SHA-256 of the final weights, of the aggregator's state and of every metric,
allocation and solver-trace row, with counts of the aggregation paths the rounds went through.

Run it on two code versions and compare (same thread count):

    PYTHONPATH=OLD/src python bench/round_digest.py --json /tmp/old.json
    PYTHONPATH=NEW/src python bench/round_digest.py --json /tmp/new.json --compare /tmp/old.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import spfl.simulator.simulation as simulation  # noqa: E402
from spfl.configuration.methods import METHOD  # noqa: E402
from spfl.configuration.settings import make_spec  # noqa: E402
from synthetic import cifar_like  # noqa: E402

CIFAR = dict(dataset="cifar10", model="cifar_cnn", num_devices=20, batch_size=64, partition="dirichlet",
             learning_rate=0.05, total_bandwidth_mhz=5.0, max_power_dbm=23.0, deadline_ms=20000.0)
DIGITS = dict(dataset="digits", model="mlp", num_devices=20, batch_size=64, partition="dirichlet",
              learning_rate=0.05, total_bandwidth_mhz=1.0, max_power_dbm=23.0, deadline_ms=100.0)
# (name, base settings, overrides, methods); None = every method.
SPLIT = {"slot_share": 0.5}  # half the slot for the signs: many rounds where signs arrive without their moduli
SETUPS = (
    ("cifar", CIFAR, {}, None),
    ("cifar_split", CIFAR, SPLIT, None),
    ("digits", DIGITS, {}, None),
    ("digits_split", DIGITS, SPLIT, None),
    ("digits_previous_update", DIGITS, {**SPLIT, "compensation": "previous_update"}, ("spfl_uniform", "spfl_power")),
    ("digits_scalar", DIGITS, {**SPLIT, "compensation": "scalar"}, ("spfl_uniform", "spfl_power")),
    ("digits_bits15", DIGITS, {**SPLIT, "modulus_bits": 15}, ("spfl_uniform", "digital", "spfl_noreuse")),
    ("digits_bits7", DIGITS, {**SPLIT, "modulus_bits": 7}, ("spfl_uniform", "digital_reuse")),
    ("digits_majority", DIGITS, {"signsgd_aggregation": "majority"}, ("signsgd",)),
    ("digits_normalize_all", DIGITS, {**SPLIT, "normalize": "all"}, ("spfl_uniform", "digital", "signsgd")),
    ("digits_momentum_local", DIGITS, {**SPLIT, "server_momentum": 0.9, "local_steps": 2},
     ("spfl_uniform", "digital_reuse")),
)


def _hash_tensor(t) -> str | None:
    if t is None:
        return None
    t = torch.as_tensor(t).detach().cpu().contiguous()
    return hashlib.sha256(t.numpy().tobytes()).hexdigest()[:16] + f":{t.dtype}:{tuple(t.shape)}"


def _hash_rows(rows) -> str:
    return hashlib.sha256(json.dumps(rows, sort_keys=True, default=repr).encode()).hexdigest()[:16]


def digest_run(env, method: str) -> dict:
    sim = simulation.Simulation(env, method)
    paths = {"sign_only_rounds": 0, "lost_rounds": 0, "nothing_rounds": 0}
    state = sim.train()
    for row in state.metric_rows[1:]:
        sign, both = row.get("devices_sign_received"), row.get("devices_both_received")
        if sign is None:
            continue
        paths["sign_only_rounds"] += sign > both
        paths["lost_rounds"] += sign < env.spec.num_devices
        paths["nothing_rounds"] += sign == 0
    aggregator = state.aggregator.state_dict()
    return {
        "status": state.status, "rounds": state.round,
        "weights": _hash_tensor(state.weights), "momentum": _hash_tensor(state.momentum),
        "aggregator": {k: _hash_tensor(v) for k, v in aggregator.items()},
        "metric_rows": _hash_rows(state.metric_rows), "allocation_rows": _hash_rows(state.allocation_rows),
        "trace_rows": _hash_rows(state.trace_rows), "final_train_loss": state.metric_rows[-1].get("train_loss"),
        "paths": paths,
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--setups", default=",".join(s[0] for s in SETUPS))
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--compare", type=Path, help="a digest from another code version: exit 1 on any difference")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    wanted = args.setups.split(",")
    result, cifar = {}, None
    for name, base, overrides, methods in SETUPS:
        if name not in wanted:
            continue
        started = time.perf_counter()
        spec = make_spec(base, **overrides, rounds=args.rounds, eval_every=1, device="cpu")
        if base is CIFAR and cifar is None:
            cifar = cifar_like(train=10_000, test=500)
        env = simulation.build_environment(spec, dataset=cifar if base is CIFAR else None)
        for method in methods or tuple(METHOD):
            result[f"{name}/{method}"] = digest_run(env, method)
        print(f"{name}: {time.perf_counter() - started:.1f} s", flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1, sort_keys=True))
    if args.compare:
        old = json.loads(args.compare.read_text())
        differ = sorted(k for k in set(old) | set(result) if old.get(k) != result.get(k))
        for key in differ:
            print(f"DIFFERS {key}:\n  old {old.get(key)}\n  new {result.get(key)}")
        covered = {p: sum(r["paths"][p] > 0 for r in result.values()) for p in ("sign_only_rounds", "lost_rounds",
                                                                              "nothing_rounds")}
        print(f"{len(result)} runs compared, {len(differ)} differ; runs with sign-only / lost / nothing-received "
              f"rounds: {covered}")
        return {"differ": differ, **result} if differ else result
    return result


if __name__ == "__main__":
    out = main()
    sys.exit(1 if isinstance(out, dict) and out.get("differ") else 0)
