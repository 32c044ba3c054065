"""Are two revisions' pipeline outputs byte-identical?  For refactors that must not change a number.

    python bench/compare_outputs.py BEFORE_REV [AFTER_REV] [--config config/test.yaml] [--cores 2]
    python bench/compare_outputs.py --dirs RESULTS_A RESULTS_B    # compare two existing output trees

With revisions, each is checked out (``git worktree add --detach``) into a temporary folder and the
workflow runs there on the configuration (default ``config/test.yaml``, about two minutes on 2 cores),
importing that checkout's ``src``; AFTER_REV defaults to the working tree's HEAD.  Then every file of
``results/<name>/`` and ``figures/<name>/`` is compared byte for byte, except:

- what records *which code* made a result and so must differ: the ``code_version`` field of
  ``summary.json`` and ``cell.json`` and the ``code_version`` column of the run tables are removed from
  both sides before comparing.  A run folder is named by its settings alone, so the same cell has the
  same path in both trees;
- what measures the machine rather than the model: ``timing.json``, ``logs/``, ``benchmarks/``;
- ``checksums.json``: derived from the other records (compared themselves), and its checksum of
  ``summary.json`` covers the code version.

Prints one line per differing, missing or extra file and exits 1 if there is any, else prints how many
files were identical.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SKIPPED_PARTS = {"logs", "benchmarks"}
SKIPPED_NAMES = {"timing.json", "checksums.json"}
PROVENANCE = "code_version"


def comparable_bytes(path: Path) -> bytes:
    """The file's bytes with the code-version provenance removed (for .json and .csv files)."""
    data = path.read_bytes()
    if path.suffix == ".json":
        value = json.loads(data)
        if isinstance(value, dict) and PROVENANCE in value:
            value.pop(PROVENANCE)
            return json.dumps(value, sort_keys=True).encode()
    if path.suffix == ".csv" and PROVENANCE.encode() in data.split(b"\n", 1)[0]:
        rows = list(csv.reader(io.StringIO(data.decode())))
        keep = [i for i, column in enumerate(rows[0]) if column != PROVENANCE]
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerows([row[i] for i in keep] for row in rows)
        return buffer.getvalue().encode()
    return data


def compared_files(root: Path) -> set[Path]:
    return {p.relative_to(root) for p in root.rglob("*") if p.is_file()
            and not SKIPPED_PARTS.intersection(p.relative_to(root).parts) and p.name not in SKIPPED_NAMES}


def compare(tree_a: Path, tree_b: Path) -> list[str]:
    files_a, files_b = compared_files(tree_a), compared_files(tree_b)
    problems = [f"only in {tree_a}: {p}" for p in sorted(files_a - files_b)]
    problems += [f"only in {tree_b}: {p}" for p in sorted(files_b - files_a)]
    problems += [f"differs: {p}" for p in sorted(files_a & files_b)
                 if comparable_bytes(tree_a / p) != comparable_bytes(tree_b / p)]
    return problems


def run_revision(revision: str, workdir: Path, config: str, cores: int) -> Path:
    """Check ``revision`` out into ``workdir`` and run the workflow there; returns the checkout."""
    checkout = workdir / revision.replace("/", "_")
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "--quiet", str(checkout), revision],
                   check=True)
    # The prepared data is an input like any other; reuse nothing from the caller's tree.
    env = dict(os.environ, PYTHONPATH=str(checkout / "src"), SLURM_CONF=os.environ.get("SLURM_CONF", "/dev/null"))
    snakemake = Path(sys.executable).with_name("snakemake")
    subprocess.run([str(snakemake), "--cores", str(cores), "--configfile", config, "--quiet"],
                   cwd=checkout, env=env, check=True)
    return checkout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("revisions", nargs="*", help="BEFORE_REV [AFTER_REV (default HEAD)]")
    parser.add_argument("--dirs", nargs=2, metavar=("RESULTS_A", "RESULTS_B"), help="compare two output trees")
    parser.add_argument("--config", default="config/test.yaml")
    parser.add_argument("--cores", type=int, default=2)
    args = parser.parse_args()
    if args.dirs:
        pairs = [(Path(args.dirs[0]), Path(args.dirs[1]))]
        workdir = None
    else:
        if not 1 <= len(args.revisions) <= 2:
            parser.error("give BEFORE_REV [AFTER_REV], or --dirs A B")
        before, after = (args.revisions + ["HEAD"])[:2]
        name = yaml.safe_load((REPO / args.config).read_text())["name"]
        workdir = Path(tempfile.mkdtemp(prefix="spfl-compare-"))
        checkouts = [run_revision(rev, workdir, args.config, args.cores) for rev in (before, after)]
        pairs = [(checkouts[0] / top / name, checkouts[1] / top / name) for top in ("results", "figures")]
    problems, identical = [], 0
    for tree_a, tree_b in pairs:
        found = compare(tree_a, tree_b)
        problems += found
        identical += len(compared_files(tree_a) & compared_files(tree_b)) - sum(p.startswith("differs") for p in found)
    if workdir is not None:
        for checkout in workdir.iterdir():
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(checkout)], check=False)
    for line in problems:
        print(line)
    print(f"{identical} files identical, {len(problems)} differences")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
