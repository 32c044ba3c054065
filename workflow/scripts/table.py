"""Snakemake script of the table rules: run records -> one aggregated table (spfl.figures registry)."""

import logging
from pathlib import Path

from spfl.figures import build_table, write_table

snakemake = globals()["snakemake"]  # injected by Snakemake's script directive

logging.basicConfig(filename=snakemake.log[0], level=logging.INFO, format="%(asctime)s %(message)s")
try:
    kind = snakemake.params.kind
    # Each cell's folder is where its marker (an input, <cell folder>/cell.json) is: the records carry no
    # path, so the tables do not depend on where the workflow (or a module's prefix) puts the runs.
    folders = {Path(marker).parent.name: str(Path(marker).parent) for marker in snakemake.input}
    runs = [{**run, "dir": folders[run["cell"]]} for run in snakemake.params.runs]
    table = build_table(kind, runs, snakemake.params.options)
    write_table(table, kind, snakemake.output.csv, snakemake.output.get("md"), snakemake.output.get("html"))
    logging.info("%s: %d rows from %d runs", kind, len(table), len(runs))
except Exception:
    logging.exception("table failed")
    raise
