"""Peak memory of simulating K = 100 devices with the CIFAR CNN (goal: under 4 GiB of RAM).

Why: a round holds every device's upload at once (K x d float32: 351 MB at K = 100), and the
allocation and aggregation make temporaries of that size; plus the whole training set lives in
memory as one tensor.  The measurement runs in a fresh child process (so nothing else of the
benchmark suite counts) on CIFAR-shaped synthetic data of the real size (50,000 + 10,000 images),
runs the first round (which also evaluates the test set) and ``--rounds - 1`` more, and reports the
child's own peak RSS (``ru_maxrss``) with the resident size after each stage for a breakdown.

Run alone:  python bench/bench_memory.py [--devices 100] [--rounds 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
GIB = 1024**3
LIMIT_GIB = 4.0


def _rss_bytes() -> int:
    """Current resident set size of this process (Linux /proc)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


def _peak_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def child(devices: int, rounds: int, threads: int, train_size: int) -> dict:
    """Runs in the fresh process: build, run, report."""
    import torch

    torch.set_num_threads(threads)
    sys.path.insert(0, str(HERE))
    from bench_round import PAPER
    from spfl.configuration.settings import make_spec
    from spfl.simulator.simulation import Simulation, build_environment
    from synthetic import cifar_like

    stages = {"imports": _rss_bytes()}
    dataset = cifar_like(train=train_size, test=10_000)
    stages["data"] = _rss_bytes()
    env = build_environment(make_spec(PAPER, num_devices=devices, device="cpu"), dataset=dataset)
    sim = Simulation(env, "spfl")
    state = sim.initial_state()
    stages["environment"] = _rss_bytes()
    round_s = []
    for _ in range(rounds):
        start = time.perf_counter()
        sim.step(state)
        round_s.append(time.perf_counter() - start)
    stages["after_rounds"] = _rss_bytes()
    peak = _peak_bytes()
    return {
        "num_devices": devices, "rounds": rounds, "threads": threads, "num_params": env.num_params,
        "train_samples": train_size, "uploads_bytes": devices * env.num_params * 4,
        "rss_after_stage_bytes": stages, "peak_rss_bytes": peak, "peak_rss_gib": peak / GIB,
        "limit_gib": LIMIT_GIB, "under_limit": peak < LIMIT_GIB * GIB, "round_s": round_s,
    }


def measure(devices: int = 100, rounds: int = 3, threads: int = 2, train_size: int = 50_000) -> dict:
    """Runs ``child`` in a new interpreter and returns its report."""
    command = [sys.executable, str(Path(__file__).resolve()), "--child", "--devices", str(devices),
               "--rounds", str(rounds), "--threads", str(threads), "--train-size", str(train_size)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"memory benchmark child failed ({done.returncode}): {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def table(result: dict) -> str:
    stages = ", ".join(f"{k} {v / GIB:.2f}" for k, v in result["rss_after_stage_bytes"].items())
    return (f"memory benchmark: K = {result['num_devices']}, CIFAR CNN, {result['train_samples']:,} train images, "
            f"{result['rounds']} rounds\n"
            f"  peak RSS {result['peak_rss_gib']:.2f} GiB (limit {result['limit_gib']:.0f} GiB: "
            f"{'ok' if result['under_limit'] else 'OVER'}); uploads alone {result['uploads_bytes'] / GIB:.2f} GiB\n"
            f"  RSS after stage (GiB): {stages}\n"
            f"  round times (s): {', '.join(f'{t:.2f}' for t in result['round_s'])} (the first evaluates the "
            f"test set)")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--train-size", type=int, default=50_000)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.devices, args.rounds, args.threads, args.train_size)))
        return {}
    result = measure(args.devices, args.rounds, args.threads, args.train_size)
    print(table(result))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
