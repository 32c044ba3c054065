"""Cancel the SLURM jobs of an interrupted Snakemake run, before running the workflow again.

    python workflow/scripts/cancel_slurm_run.py [--directory DIR] [--wait SECONDS] [--dry-run]

A Snakemake that is killed (kill -9, a dropped login connection, a crashed login node) cannot cancel the jobs
it submitted: they keep running, and a restarted workflow would submit their cells again (the same
cell computed twice, twice the GPU hours).  The SLURM executor plugin names every job of one run after
the run's ID (`slurm-jobname-prefix` of the profile + a UUID), and Snakemake writes that ID into its log
(`SLURM run ID: spfl_...` in `.snakemake/log/*.snakemake.log`).  This script finds the newest log that
names a run ID, cancels that run's jobs still in the queue (`scancel --name ID`), waits until the queue
no longer lists them, and prints what it cancelled.  Then `--unlock` and the usual command resume the
workflow (docs/cluster.md, "On a SLURM cluster").
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

RUN_ID = re.compile(r"SLURM run ID: (\S+)")


def latest_run_id(directory: Path) -> tuple[str, Path] | None:
    """The SLURM run ID of the newest Snakemake log that has one, and that log."""
    logs = sorted((directory / ".snakemake" / "log").glob("*.snakemake.log"), key=lambda p: p.stat().st_mtime,
                  reverse=True)
    for log in logs:
        found = RUN_ID.findall(log.read_text(errors="replace"))
        if found:
            return found[-1], log
    return None


def queued_jobs(run_id: str) -> list[str]:
    """IDs of the run's jobs that SLURM still lists (pending, running or completing)."""
    result = subprocess.run(["squeue", "--noheader", "--name", run_id, "--format", "%i"], capture_output=True,
                            text=True, check=True)
    return [line.strip() for line in result.stdout.splitlines() if line.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--directory", type=Path, default=Path("."),
                        help="working directory of the interrupted run (default: here)")
    parser.add_argument("--wait", type=float, default=120.0,
                        help="seconds to wait for the cancelled jobs to leave the queue (default 120)")
    parser.add_argument("--dry-run", action="store_true", help="only list the jobs that would be cancelled")
    args = parser.parse_args(argv)
    found = latest_run_id(args.directory)
    if found is None:
        print(f"no Snakemake log under '{args.directory / '.snakemake' / 'log'}' names a SLURM run ID: "
              "nothing to cancel", file=sys.stderr)
        return 1
    run_id, log = found
    try:
        jobs = queued_jobs(run_id)
        if not jobs:
            print(f"SLURM run {run_id} (from {log}): no job left in the queue")
            return 0
        print(f"SLURM run {run_id} (from {log}): {len(jobs)} job(s) in the queue: {' '.join(jobs)}")
        if args.dry_run:
            return 0
        subprocess.run(["scancel", "--name", run_id], check=True)
        deadline = time.monotonic() + args.wait
        while (left := queued_jobs(run_id)) and time.monotonic() < deadline:
            time.sleep(2)
    except FileNotFoundError as exc:
        print(f"{exc.filename} not found: run this where SLURM's commands are (the login node)", file=sys.stderr)
        return 2
    except subprocess.CalledProcessError as exc:
        print(f"'{' '.join(exc.cmd)}' failed (exit {exc.returncode}): {(exc.stderr or '').strip()}", file=sys.stderr)
        return 2
    if left:
        print(f"still listed after {args.wait:g} s: {' '.join(left)}; check `squeue --name {run_id}` before "
              "restarting", file=sys.stderr)
        return 1
    print(f"cancelled {len(jobs)} job(s); now: snakemake --unlock (with your options), then the same command again")
    return 0


if __name__ == "__main__":
    sys.exit(main())
