"""Snakemake script of the table rules: run records -> one aggregated table (an entry of the figure catalogue).

Every run's records are verified against its checksums.json and the cell, seed and method expected
(spfl.records.verify_run) before any is read.  A record that is missing, damaged, changed or of another run
fails the job with one line naming the file (on stderr and in the job's log), not a traceback.
"""

import logging
import sys
from pathlib import Path

from spfl.records import RecordError, verify_run
from spfl.reporting.render import build_table, write_table
from spfl.reporting.tables.reading import RecordError as TableRecordError

snakemake = globals()["snakemake"]  # injected by Snakemake's script directive

logging.basicConfig(filename=snakemake.log[0], level=logging.INFO, format="%(asctime)s %(message)s")
try:
    kind = snakemake.params.kind
    # Each cell's folder is where its marker (an input, <cell folder>/cell.json) is: the records carry no
    # path, so the tables do not depend on where the workflow (or a module's prefix) puts the runs.
    folders = {Path(marker).parent.name: str(Path(marker).parent) for marker in snakemake.input.markers}
    runs = [{**run, "dir": folders[run["cell"]]} for run in snakemake.params.runs]
    for run in runs:
        verify_run(run["dir"], run["method"], run["cell"], run["seed"])
    table = build_table(kind, runs, snakemake.params.options)
    write_table(table, kind, snakemake.output.csv, snakemake.output.get("md"), snakemake.output.get("html"))
    logging.info("%s: %d rows from %d runs", kind, len(table), len(runs))
except (RecordError, TableRecordError) as exc:
    message = " ".join(str(exc).split())
    logging.error("table %s failed: %s", snakemake.params.kind, message)
    print(f"table {snakemake.params.kind}: error: {message}", file=sys.stderr)
    sys.exit(1)
except Exception:
    logging.exception("table failed")
    raise
