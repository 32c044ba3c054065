"""Wall time and peak memory of the quick replication (``snakemake --cores 2 --configfile config/quick.yaml``).

Why: the quick configuration is the promise that the whole pipeline (every figure and table, on the
offline digits data) runs on a 2-core machine in minutes; this measures that promise end to end.

It runs in a temporary copy of the repository (Snakefile, workflow/, config/ and whatever else is
small; no results/, .snakemake/ or .venv/), so it never touches or reuses the working tree's results,
with the ``snakemake`` of the running interpreter's environment.  Peak memory is of the whole process
tree (Snakemake and every job it starts): the tree's summed RSS sampled every ``--interval`` seconds
(psutil), plus the largest single process from ``getrusage(RUSAGE_CHILDREN)``.

Run alone:  python bench/bench_quick.py [--configfile config/quick.yaml] [--cores 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
GIB = 1024**3
# Generated or heavy paths that a fresh checkout does not have.
SKIP = {".git", ".venv", ".snakemake", "results", "figures", "logs", "data", "out", "__pycache__",
        ".pytest_cache", ".ruff_cache", ".hypothesis", "report.html"}


def _tree_rss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:  # a job that ended between listing and reading
            pass
    return total


def measure(configfile: str = "config/quick.yaml", cores: int = 2, interval: float = 0.2,
            timeout_s: float = 1800.0, keep: bool = False) -> dict:
    config = ROOT / configfile
    if not config.exists():
        return {"status": "skipped", "reason": f"{configfile} does not exist yet"}
    snakemake = Path(sys.executable).parent / "snakemake"
    workdir = Path(tempfile.mkdtemp(prefix="spfl-quick-"))
    try:
        shutil.copytree(ROOT, workdir, dirs_exist_ok=True, ignore=lambda _d, names: [n for n in names if n in SKIP])
        command = [str(snakemake), "--cores", str(cores), "--configfile", configfile]
        log = (workdir / "snakemake.log").open("w")
        start = time.perf_counter()
        proc = subprocess.Popen(command, cwd=workdir, stdout=log, stderr=subprocess.STDOUT)
        watcher, peak_tree = psutil.Process(proc.pid), 0
        while proc.poll() is None:
            try:
                peak_tree = max(peak_tree, _tree_rss(watcher))
            except psutil.Error:
                pass
            if time.perf_counter() - start > timeout_s:
                proc.kill()
                break
            time.sleep(interval)
        wall = time.perf_counter() - start
        returncode = proc.wait()
        log.close()
        largest = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
        tail = (workdir / "snakemake.log").read_text().splitlines()[-15:]
        return {
            "status": "ok" if returncode == 0 else "failed", "returncode": returncode,
            "command": " ".join(["snakemake", *command[1:]]), "cores": cores, "wall_s": wall,
            "peak_tree_rss_bytes": peak_tree, "peak_tree_rss_gib": peak_tree / GIB,
            "largest_process_rss_bytes": largest, "largest_process_rss_gib": largest / GIB,
            "workdir": str(workdir) if keep else None, "log_tail": tail,
        }
    finally:
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)


def table(result: dict) -> str:
    if result["status"] == "skipped":
        return f"quick replication: skipped ({result['reason']})"
    return (f"quick replication ({result['command']}): {result['status']}, wall {result['wall_s'] / 60:.1f} min, "
            f"peak tree RSS {result['peak_tree_rss_gib']:.2f} GiB, largest process "
            f"{result['largest_process_rss_gib']:.2f} GiB")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configfile", default="config/quick.yaml")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--interval", type=float, default=0.2, help="RSS sampling period (s)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="kill the run after this many seconds")
    parser.add_argument("--keep", action="store_true", help="keep the temporary copy (its path is reported)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    result = measure(args.configfile, args.cores, args.interval, args.timeout, args.keep)
    print(table(result))
    if result.get("status") == "failed":
        print("\n".join(result["log_tail"]))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
