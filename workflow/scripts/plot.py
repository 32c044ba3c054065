"""Snakemake script of the plot rules: one aggregated table -> one figure (the figure catalogue),
PDF and PNG."""

import logging

from spfl.reporting.render import make_figure

snakemake = globals()["snakemake"]  # injected by Snakemake's script directive

logging.basicConfig(filename=snakemake.log[0], level=logging.INFO, format="%(asctime)s %(message)s")
# matplotlib's PDF backend subsets fonts with fontTools, which logs every table it touches at INFO
# (kilobytes per figure): keep its warnings, drop the chatter.
logging.getLogger("fontTools").setLevel(logging.WARNING)
try:
    make_figure(snakemake.params.figure, snakemake.input.table, snakemake.output.pdf, snakemake.output.png,
                dict(snakemake.params.style), source=snakemake.params.source)
    logging.info("%s: wrote %s and %s", snakemake.params.figure, snakemake.output.pdf, snakemake.output.png)
except Exception:
    logging.exception("plot failed")
    raise
