# SP-FL replication pipeline: data -> per-cell simulations -> tables -> figures.
# Usage and layout: docs/pipeline.md; config keys: config/README.md.
from snakemake.utils import min_version

min_version("9.0")


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/simulate.smk"
include: "workflow/rules/tables.smk"
include: "workflow/rules/plots.smk"


# The default target lives here because Snakemake ignores `default_target` in included files.
rule all:
    input:
        all_targets(),
    message:
        "[done] every table and figure of the config"
    default_target: True
    localrule: True
