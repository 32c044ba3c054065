"""One simulated SP-FL round against its compute floor and against a simulator written the common way.

Why: the replication is hundreds of rounds x methods x budgets x seeds, and a round's unavoidable
cost is one forward/backward over its K x batch samples.  Everything the simulator adds (channel,
packets, allocation, aggregation, bookkeeping, Python) should be small next to that floor.

Measured in one process, interleaved (floor, round, reference, floor, ...), median of ``--repeats``
after a warm-up, so that other load on the machine hits all three alike (ratios of the fastest repeats,
``*_min``, are reported too: other load only adds time, so they are the least disturbed):

- floor:     the K x batch samples of one round concatenated, one forward + backward of the same
             model (cross-entropy mean) through plain autograd;
- per-device floor: the same K batches as K plain forward + backward passes (what the sequential
             gradient path and the reference both must do; reference / per-device floor is the most
             any round computing the same per-device gradients could gain on the reference);
- round:     ``Simulation.step(state)`` for method ``spfl`` (CIFAR CNN, K = 20, batch 64, synthetic
             CIFAR-shaped data), broken down by phase (uploads, allocation problem, allocation solve,
             transmission, aggregation, the rest);
- reference: ``reference_simulator.ReferenceSimulator.round()`` on the same environment.

``--paper-rounds N`` instead trains one paper-scale run (K = 20, N rounds, CIFAR-shaped synthetic
data) and reports its wall time, time per round and accuracy curve (the GPU check uses it).

Run alone:  python bench/bench_round.py [--device cuda] [--paths sequential,batched] [--json out.json]
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

import spfl.simulator.simulation as simulation  # noqa: E402
from reference_simulator import ReferenceSimulator  # noqa: E402
from spfl.configuration.settings import make_spec  # noqa: E402
from spfl.simulator.training import PRECISIONS  # noqa: E402
from synthetic import cifar_like  # noqa: E402

# Paper-scale CIFAR run settings (config/config.yaml base), one round never evaluates the test set.
PAPER = dict(dataset="cifar10", model="cifar_cnn", num_devices=20, batch_size=64, partition="dirichlet",
             learning_rate=0.05, total_bandwidth_mhz=5.0, max_power_dbm=23.0, deadline_ms=20000.0,
             rounds=1_000_000, eval_every=1_000_000, method="spfl")
# The quick configuration's setup (config/quick.yaml): digits MLP, where per-round overhead, not compute, dominates.
DIGITS = dict(PAPER, dataset="digits", model="mlp", total_bandwidth_mhz=1.0, deadline_ms=100.0)
PHASES = ("draw_batches", "uploads", "allocation_problem", "allocate", "transmit", "aggregate")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


_MISSING = object()


class PhaseClock:
    """Wraps the phases of ``Simulation.step`` so one step reports where its time went."""

    def __init__(self, sim: simulation.Simulation, device: torch.device):
        self.device, self.seconds = device, defaultdict(float)
        sim.draw_batches = self._wrap("draw_batches", sim.draw_batches)
        sim.trainer.launch = self._wrap("uploads", sim.trainer.launch)  # synchronized: the GPU time too
        sim.allocation_problem = self._wrap("allocation_problem", sim.allocation_problem)
        # Functions the step looks up at call time: the solver in the simulation module, and the packet
        # transmission either there (older layout) or on the method's transmission scheme object.
        self._lookups = [(simulation, "allocate")]
        if hasattr(simulation, "transmit"):
            self._lookups.append((simulation, "transmit"))
        elif hasattr(getattr(sim, "scheme", None), "transmit"):
            self._lookups.append((sim.scheme, "transmit"))

    def _wrap(self, name, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            sync(self.device)
            start = time.perf_counter()
            result = fn(*args, **kwargs)
            sync(self.device)
            self.seconds[name] += time.perf_counter() - start
            return result
        return wrapper

    def step(self, sim: simulation.Simulation, state: simulation.RunState) -> dict[str, float]:
        """One timed step; returns seconds per phase (``total`` and ``rest`` included)."""
        self.seconds.clear()
        state.aggregator.aggregate = self._wrap("aggregate", type(state.aggregator).aggregate.__get__(
            state.aggregator))
        saved = [(owner, name, vars(owner).get(name, _MISSING)) for owner, name in self._lookups]
        for owner, name in self._lookups:
            setattr(owner, name, self._wrap(name, getattr(owner, name)))
        try:
            total = timed(lambda: sim.step(state), self.device)
        finally:
            for owner, name, own in saved:  # put back what the owner itself held, or unshadow its class's
                if own is _MISSING:
                    delattr(owner, name)
                else:
                    setattr(owner, name, own)
        phases = {name: self.seconds.get(name, 0.0) for name in PHASES}
        phases["rest"] = total - sum(phases.values())
        phases["total"] = total
        return phases


def make_floor(env, batches, device: torch.device):
    """The compute floor: the round's K x batch samples as one centralized forward + backward."""
    module = env.model.module
    torch.nn.utils.vector_to_parameters(env.initial_weights.clone(), module.parameters())
    x = torch.cat([b[0][0] for b in batches])
    y = torch.cat([b[0][1] for b in batches])

    def floor():
        module.zero_grad(set_to_none=True)
        F.cross_entropy(module(x), y).backward()
    return floor


def make_device_floor(env, batches, device: torch.device):
    """The per-device floor: the same K batches as K separate plain forward + backward passes of the
    model (no flat weights, no upload buffer): what the sequential uploads phase cannot go below
    without computing the gradients differently, and what the reference's loop also does."""
    module = env.model.module
    torch.nn.utils.vector_to_parameters(env.initial_weights.clone(), module.parameters())
    pairs = [b[0] for b in batches]

    def device_floor():
        for x, y in pairs:
            module.zero_grad(set_to_none=True)
            F.cross_entropy(module(x), y).backward()
    return device_floor


def measure(device: str = "cpu", paths: tuple[str, ...] = ("sequential",), repeats: int = 7, threads: int = 2,
            num_devices: int = 20, train_size: int = 50_000, reference: bool = True,
            precision: str = "float32", setup: str = "cifar") -> dict:
    """All round measurements for one device; a JSON-ready dict.  ``setup``: cifar (CIFAR CNN on
    synthetic CIFAR-shaped data) or digits (the quick configuration's MLP on the bundled digits)."""
    torch.set_num_threads(threads)
    settings = PAPER if setup == "cifar" else DIGITS
    spec = make_spec(settings, num_devices=num_devices, device=device, precision=precision)
    dataset = cifar_like(train=train_size, test=2_000) if setup == "cifar" else None
    env = simulation.build_environment(spec, dataset=dataset)
    dev = env.device
    sims = {path: simulation.Simulation(env, "spfl", batched=path == "batched") for path in paths}
    states = {path: sim.initial_state() for path, sim in sims.items()}
    clocks = {path: PhaseClock(sim, dev) for path, sim in sims.items()}
    first_batches = sims[paths[0]].draw_batches(sims[paths[0]].initial_state())
    floor = make_floor(env, first_batches, dev)
    device_floor = make_device_floor(env, first_batches, dev)
    ref = ReferenceSimulator(env) if reference else None
    # Warm-up: round 1 evaluates the test set and snapshots; kernels and allocator warm up too.  A path
    # that fails here (e.g. out of GPU memory) is reported as such and the others are still measured.
    errors = {}
    for path, sim in list(sims.items()):
        try:
            sim.step(states[path])
            clocks[path].step(sim, states[path])
        except (RuntimeError, ValueError) as exc:
            errors[path] = f"{type(exc).__name__}: {str(exc)[:500]}"
            del sims[path]
    floor()
    device_floor()
    if ref is not None:
        ref.round()
    floors, device_floors, refs = [], [], []
    rounds: dict[str, list[dict[str, float]]] = {path: [] for path in sims}
    for _ in range(repeats):
        floors.append(timed(floor, dev))
        device_floors.append(timed(device_floor, dev))
        for path, sim in sims.items():
            rounds[path].append(clocks[path].step(sim, states[path]))
        if ref is not None:
            refs.append(timed(ref.round, dev))
    floor_s = statistics.median(floors)
    out = {
        "setup": setup, "model": env.spec.model, "device": str(dev),
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "threads": threads, "num_devices": num_devices, "batch_size": spec.batch_size, "precision": precision,
        "num_params": env.num_params, "repeats": repeats, "floor_s": floor_s, "floor_all_s": floors,
        "device_floor_s": statistics.median(device_floors), "device_floor_all_s": device_floors,
        "paths": {path: {"error": message} for path, message in errors.items()},
    }
    for path in sims:
        phases = {name: statistics.median(r[name] for r in rounds[path]) for name in rounds[path][0]}
        out["paths"][path] = {
            "round_s": phases["total"], "round_all_s": [r["total"] for r in rounds[path]],
            "ratio_to_floor": phases["total"] / floor_s, "phases_s": phases,
            # Other load only ever adds time, so the fastest repeats are the least disturbed ones.
            "ratio_to_floor_min": min(r["total"] for r in rounds[path]) / min(floors),
            "ratio_to_device_floor": phases["total"] / statistics.median(device_floors),
            "allocation_share": phases["allocate"] / phases["total"],
        }
    if ref is not None:
        out["reference_s"] = statistics.median(refs)
        out["reference_all_s"] = refs
        # The most any round could gain on the reference while computing the same per-device gradients.
        out["reference_to_device_floor"] = out["reference_s"] / out["device_floor_s"]
        for path in sims:
            out["paths"][path]["speedup_vs_reference"] = out["reference_s"] / out["paths"][path]["round_s"]
            out["paths"][path]["speedup_vs_reference_min"] = min(refs) / min(r["total"] for r in rounds[path])
    return out


def paper_run(device: str = "auto", rounds: int = 300, threads: int = 2, precision: str = "float32",
              batched: bool | None = None) -> dict:
    """One whole ``spfl`` run at paper scale; the round loop's real cost including evaluations."""
    torch.set_num_threads(threads)
    spec = make_spec(PAPER, device=device, rounds=rounds, eval_every=25, precision=precision)
    env = simulation.build_environment(spec, dataset=cifar_like())
    sim = simulation.Simulation(env, "spfl", batched=batched)
    if env.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(env.device)
    start = time.perf_counter()
    state = sim.train()
    sync(env.device)
    wall = time.perf_counter() - start
    evaluated = [(r["round"], r["test_accuracy"]) for r in state.metric_rows if r.get("test_accuracy") is not None]
    return {
        "device": str(env.device), "rounds": state.round, "status": state.status, "precision": precision,
        "batched": sim.trainer.uses_batched(env.device), "wall_s": wall, "round_s": wall / max(state.round, 1),
        "accuracy": evaluated, "final_accuracy": evaluated[-1][1],
        "gpu_peak_bytes": torch.cuda.max_memory_allocated(env.device) if env.device.type == "cuda" else None,
    }


def table(result: dict) -> str:
    """Human-readable summary of ``measure``'s result."""
    lines = [f"round benchmark, {result['model']}, on {result['device_name']} ({result['threads']} threads), K = "
             f"{result['num_devices']}, batch {result['batch_size']}, {result['num_params']:,} params, "
             f"{result['precision']}, median of {result['repeats']}",
             f"  floor (one centralized fwd+bwd over K x batch samples): {result['floor_s'] * 1000:8.1f} ms"]
    if "device_floor_s" in result:
        lines.append(f"  per-device floor (K plain fwd+bwd of batch size each):  "
                     f"{result['device_floor_s'] * 1000:8.1f} ms")
    if "reference_s" in result:
        lines.append(f"  reference round (deep copies, state-dict average):      "
                     f"{result['reference_s'] * 1000:8.1f} ms   = "
                     f"{result['reference_to_device_floor']:.2f}x the per-device floor (the most a round "
                     f"computing the same gradients can gain on it)")
    for path, r in result["paths"].items():
        if "error" in r:
            lines.append(f"  spfl round, {path:<10}: FAILED {r['error']}")
            continue
        lines.append(f"  spfl round, {path:<10}: {r['round_s'] * 1000:8.1f} ms   ratio to floor "
                     f"{r['ratio_to_floor']:.2f}x (min/min {r['ratio_to_floor_min']:.2f}x), to per-device "
                     f"floor {r['ratio_to_device_floor']:.2f}x"
                     + (f"   speedup vs reference {r['speedup_vs_reference']:.2f}x (min/min "
                        f"{r['speedup_vs_reference_min']:.2f}x)" if "speedup_vs_reference" in r else "")
                     + f"   allocation share {100 * r['allocation_share']:.1f} %")
        lines.append("      phases (ms): " + ", ".join(f"{k} {v * 1000:.1f}" for k, v in r["phases_s"].items()
                                                      if k != "total"))
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"))
    parser.add_argument("--paths", default="sequential", help="comma list of sequential, batched")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--devices", type=int, default=20, help="number of FL devices K")
    parser.add_argument("--precision", default="float32", choices=PRECISIONS)
    parser.add_argument("--setup", default="cifar", choices=("cifar", "digits"),
                        help="CIFAR CNN on synthetic CIFAR-shaped data, or the quick config's digits MLP")
    parser.add_argument("--train-size", type=int, default=50_000, help="synthetic training images")
    parser.add_argument("--no-reference", action="store_true")
    parser.add_argument("--paper-rounds", type=int, help="instead: one paper-scale run of this many rounds")
    parser.add_argument("--json", type=Path, help="write the result here")
    args = parser.parse_args(argv)
    if args.paper_rounds:
        result = paper_run(args.device, args.paper_rounds, args.threads, args.precision)
        print(f"paper-scale run on {result['device']}: {result['rounds']} rounds in {result['wall_s']:.1f} s "
              f"({result['round_s'] * 1000:.1f} ms/round), final accuracy {result['final_accuracy']:.3f}")
        _write(args.json, result)
        return result
    result = measure(args.device, tuple(args.paths.split(",")), args.repeats, args.threads, args.devices,
                     args.train_size, reference=not args.no_reference, precision=args.precision,
                     setup=args.setup)
    print(table(result))
    _write(args.json, result)
    return result


def _write(path: Path | None, result: dict) -> None:
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
