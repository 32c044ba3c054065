"""One whole paper cell through `spfl run`, and what it says about the full paper configuration.

The cell is the `bandwidth` experiment's default-budget cell of config/config.yaml (its `base` settings,
its 7 methods, seed 0) on CIFAR-shaped synthetic data (bench/synthetic.py), so that a machine without
the CIFAR-10 archive and without a network runs exactly the paper's model, K, batch and rounds.

    python bench/paper_cell.py prepare DIR [--data FILE --train N --test N --rounds R --devices K --device D]
        writes FILE (default DIR/data.pt: the synthetic data as a prepared dataset, 0.7 GB at full
        size), DIR/cell.yaml (the run spec)
        and DIR/methods.txt (comma-separated methods); then run, per precision P,
        spfl run DIR/cell.yaml --methods $(cat DIR/methods.txt) --set precision=P --out DIR/cell_P
        and write its wall seconds to DIR/cell_P.seconds (bench/gpu_check.sh does all of this);
    python bench/paper_cell.py summarize DIR
        prints and writes DIR/paper_cell.json: per precision the wall time, seconds per method-round,
        the projected time of the full paper configuration, and each method's final and best accuracy
        next to float32's;
    python bench/paper_cell.py overlap DIR [--rounds N]
        times the cell's methods for N rounds one after another and in lockstep with overlap (each
        method on its own CUDA stream: the GPU default) and checks their records are identical;
        writes DIR/overlap.json.

Projection (one cell at a time, as measured):
    projected_s = cell_wall_s / (methods x rounds) x (paper runs x paper rounds)
with paper runs x rounds from config/config.yaml's plan (980 runs x 500 rounds = 490,000 method-rounds today).
It counts every paper run as a K = 20 run (the `devices` experiment's K = 10 and 40 cells roughly
cancel) and charges each method-round its share of the cell's process start, data loading and
evaluations.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
PRECISIONS = ("float32", "tf32", "bfloat16")
PAPER_RUNS, PAPER_ROUNDS = 267, 500  # fallback when the plan cannot be read


def paper_config() -> dict:
    return yaml.safe_load((ROOT / "config" / "config.yaml").read_text())


def cell_settings(config: dict, budget_mhz: float = 5.0) -> tuple[dict, list[str]]:
    """The `bandwidth` experiment's cell at ``budget_mhz``: run settings and methods."""
    settings = dict(config["base"])
    settings.update(total_bandwidth_mhz=budget_mhz, seed=int(config["seeds"][0]))
    return settings, list(config["experiments"]["bandwidth"]["grid"]["method"])


def paper_method_rounds(config: dict) -> tuple[int, int, str]:
    """(runs, rounds per run, where the numbers come from) of the full paper configuration."""
    try:
        from spfl.configuration import load_config_file, load_plan

        plan = load_plan(load_config_file(str(ROOT / "config" / "config.yaml")))
        runs = len({(r.cell, r.method) for r in plan.all_runs()})
        return runs, int(config["base"]["rounds"]), "config/config.yaml plan"
    except Exception as exc:  # the plan API is being reworked; the numbers are documented
        return PAPER_RUNS, PAPER_ROUNDS, f"documented constants ({type(exc).__name__} reading the plan)"


def prepare(out: Path, data: Path | None, train: int, test: int, rounds: int | None, devices: int | None,
            device: str) -> None:
    import torch

    from spfl.configuration.settings import make_spec
    from spfl.simulator.data import PREPARED_FORMAT
    from synthetic import cifar_like

    out.mkdir(parents=True, exist_ok=True)
    data = (out / "data.pt" if data is None else data).resolve()
    data.parent.mkdir(parents=True, exist_ok=True)
    settings, methods = cell_settings(paper_config())
    settings.update(data_file=str(data), device=device, download=False)
    if rounds is not None:
        settings["rounds"] = rounds
    if devices is not None:
        settings["num_devices"] = devices
    make_spec(settings)  # bad settings fail here, before any data is written
    ds = cifar_like(train=train, test=test)
    payload = {"format": PREPARED_FORMAT, "name": ds.name, "num_classes": ds.num_classes,
               "train_x": ds.train_x, "train_y": ds.train_y, "test_x": ds.test_x, "test_y": ds.test_y}
    fd, tmp = tempfile.mkstemp(prefix=f".{data.name}.", suffix=".tmp", dir=data.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(payload, fh)
        os.replace(tmp, data)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    (out / "cell.yaml").write_text(yaml.safe_dump(settings, sort_keys=False))
    (out / "methods.txt").write_text(",".join(methods) + "\n")
    print(f"cell: {len(methods)} methods ({', '.join(methods)}), K = {settings['num_devices']}, "
          f"{settings['rounds']} rounds, {train:,} + {test:,} synthetic CIFAR-shaped images, device "
          f"{device} -> {out}")


def _summary(folder: Path, method: str) -> dict | None:
    """A finished method's summary.json, with its round loop's wall time (timing.json, or the summary's
    own ``wall_time_s`` in older records)."""
    from spfl.records import SUMMARY_JSON, TIMING_JSON, WALL_TIME

    path = folder / method / SUMMARY_JSON
    if not path.is_file():
        return None
    summary = json.loads(path.read_text())
    timing = folder / method / TIMING_JSON
    if WALL_TIME not in summary:
        summary[WALL_TIME] = json.loads(timing.read_text())[WALL_TIME] if timing.is_file() else 0.0
    return summary


def summarize(out: Path) -> dict:
    config = paper_config()
    spec = yaml.safe_load((out / "cell.yaml").read_text())
    methods = (out / "methods.txt").read_text().strip().split(",")
    runs, rounds_per_run, source = paper_method_rounds(config)
    paper_method_rounds_total = runs * rounds_per_run
    result = {"methods": methods, "rounds": spec["rounds"], "num_devices": spec["num_devices"],
              "device": spec["device"], "paper_runs": runs, "paper_rounds_per_run": rounds_per_run,
              "paper_counts_from": source,
              "projection_formula": "cell_wall_s / (methods x rounds) x paper_runs x paper_rounds_per_run",
              "precisions": {}}
    lines = [f"paper cell: {len(methods)} methods x {spec['rounds']} rounds, K = {spec['num_devices']}, "
             f"device {spec['device']}; full paper config = {runs} runs x {rounds_per_run} rounds ({source})"]
    for precision in PRECISIONS:
        seconds_file = out / f"cell_{precision}.seconds"
        if not seconds_file.is_file():
            continue
        folder = out / f"cell_{precision}"
        summaries = {m: _summary(folder, m) for m in methods}
        wall = float(seconds_file.read_text().split()[0])
        note = seconds_file.read_text().split(None, 1)[1].strip() if len(seconds_file.read_text().split()) > 1 else ""
        done = [s for s in summaries.values() if s is not None]
        method_rounds = sum(s["rounds_completed"] for s in done)
        entry = {"wall_s": wall, "note": note, "methods_done": len(done), "method_rounds": method_rounds,
                 "train_s": sum(s["wall_time_s"] for s in done),
                 "accuracy": {m: None if s is None else {"final": s["final_accuracy"], "best": s["best_accuracy"],
                                                         "status": s["status"]} for m, s in summaries.items()}}
        if method_rounds:
            per = wall / method_rounds
            entry.update(ms_per_method_round=1000 * per, projected_paper_s=per * paper_method_rounds_total,
                         projected_paper_train_only_s=entry["train_s"] / method_rounds * paper_method_rounds_total)
            lines.append(f"  {precision:8s}: {wall:7.1f} s for {len(done)} methods, "
                         f"{entry['ms_per_method_round']:.1f} ms per method-round -> full paper config "
                         f"{entry['projected_paper_s'] / 60:.1f} min one cell at a time "
                         f"({entry['projected_paper_train_only_s'] / 60:.1f} min counting only the round "
                         f"loops){' [' + note + ']' if note else ''}")
        else:
            lines.append(f"  {precision:8s}: no method finished ({wall:.0f} s){' [' + note + ']' if note else ''}")
        result["precisions"][precision] = entry
    reference = result["precisions"].get("float32", {}).get("accuracy", {})
    if reference:
        lines.append("  final test accuracy per method (best in brackets); tf32 / bfloat16 minus float32:")
        for m in methods:
            base = reference.get(m)
            cells = []
            for precision, entry in result["precisions"].items():
                acc = entry["accuracy"].get(m)
                if acc is None or acc["final"] is None:
                    cells.append(f"{precision} -")
                    continue
                text = f"{precision} {acc['final']:.4f} ({acc['best']:.4f})"
                if precision != "float32" and base and base["final"] is not None:
                    text += f" {acc['final'] - base['final']:+.4f}"
                cells.append(text)
            lines.append(f"    {m:14s} " + "   ".join(cells))
    print("\n".join(lines))
    (out / "paper_cell.json").write_text(json.dumps(result, indent=2))
    return result


def overlap(out: Path, rounds: int) -> dict:
    """The prepared cell's methods for ``rounds`` rounds, one method after another and in lockstep with
    overlap (the GPU default, spfl.simulator.simulation.run_methods): wall time of each and whether every record
    but the wall times is byte-identical.  A 2-round run first warms up the kernels (not timed)."""
    import time

    from compare_outputs import compare
    from spfl.configuration.settings import make_spec
    from spfl.simulator.simulation import run_cell

    settings = yaml.safe_load((out / "cell.yaml").read_text())
    methods = (out / "methods.txt").read_text().strip().split(",")
    run_cell(make_spec(dict(settings, rounds=2)), methods, out / "overlap_warmup", overlap=True)
    spec = make_spec(dict(settings, rounds=rounds))
    result = {"methods": len(methods), "rounds": rounds, "device": settings["device"]}
    for mode, flag in (("one_after_another", False), ("lockstep_overlap", True)):
        started = time.perf_counter()
        run_cell(spec, methods, out / f"overlap_{mode}", overlap=flag)
        result[f"{mode}_s"] = time.perf_counter() - started

    result["records_identical"] = not compare(out / "overlap_one_after_another", out / "overlap_lockstep_overlap")
    result["speedup"] = result["one_after_another_s"] / result["lockstep_overlap_s"]
    print(f"overlap: {len(methods)} methods x {rounds} rounds on {settings['device']}: one after another "
          f"{result['one_after_another_s']:.1f} s, lockstep with overlap {result['lockstep_overlap_s']:.1f} s "
          f"({result['speedup']:.2f}x); records identical: {result['records_identical']}")
    (out / "overlap.json").write_text(json.dumps(result, indent=2))
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("out", type=Path)
    p.add_argument("--data", type=Path, help="where to write the prepared data (default DIR/data.pt)")
    p.add_argument("--train", type=int, default=50_000)
    p.add_argument("--test", type=int, default=10_000)
    p.add_argument("--rounds", type=int, help="instead of the paper's rounds (dry runs)")
    p.add_argument("--devices", type=int, help="instead of the paper's K (dry runs)")
    p.add_argument("--device", default="cuda", choices=("cpu", "cuda", "auto"))
    s = sub.add_parser("summarize")
    s.add_argument("out", type=Path)
    o = sub.add_parser("overlap", help="time the cell's methods one after another and in lockstep")
    o.add_argument("out", type=Path)
    o.add_argument("--rounds", type=int, default=100)
    args = parser.parse_args(argv)
    if args.command == "prepare":
        prepare(args.out, args.data, args.train, args.test, args.rounds, args.devices, args.device)
    elif args.command == "overlap":
        overlap(args.out, args.rounds)
    else:
        summarize(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
