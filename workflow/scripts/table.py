"""Snakemake script of the table rules: run records -> one aggregated table (spfl.figures registry)."""

import logging

from spfl.figures import build_table, write_table

snakemake = globals()["snakemake"]  # injected by Snakemake's script directive

logging.basicConfig(filename=snakemake.log[0], level=logging.INFO, format="%(asctime)s %(message)s")
try:
    kind = snakemake.params.kind
    table = build_table(kind, snakemake.params.runs, snakemake.params.options)
    write_table(table, kind, snakemake.output.csv, snakemake.output.get("md"), snakemake.output.get("html"))
    logging.info("%s: %d rows from %d runs", kind, len(table), len(snakemake.params.runs))
except Exception:
    logging.exception("table failed")
    raise
