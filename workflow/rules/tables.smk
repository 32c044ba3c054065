# Stage 3: aggregated tables (CSV + Markdown; mean and 95 % t-interval over seeds) under
# `<results>/<name>/tables`.  One table per figure, the headline table and a table of every run.  The
# figures read only these tables.  Every record a table reads is verified first against its run's
# checksums.json and the cell, seed and method the table expects (spfl.records.verify_run), and the records
# changed since a table was built are a param of its rule (computed from the wildcards: Snakemake ignores a
# param derived from the output), so a record changed after its run reruns the
# tables (which then fail, in one line naming the file, until its cell is rerun).


rule table:
    input:
        markers=lambda wildcards: markers(figure_runs(wildcards.figure)),
    output:
        csv=f"{TABLES}/{{figure}}.csv",
        md=f"{TABLES}/{{figure}}.md",
    params:
        kind="{figure}",
        runs=lambda wildcards: run_records(figure_runs(wildcards.figure)),
        options=lambda wildcards: canonical(PLAN.figures[wildcards.figure]),
        changed=lambda wildcards: records_changed(figure_runs(wildcards.figure), f"{TABLES}/{wildcards.figure}.csv"),
        code=ANALYSIS_VERSION,
    log:
        f"{LOGS}/tables/{{figure}}.log",
    message:
        "[stage 3/4: tables] {output.md}"
    wildcard_constraints:
        figure="|".join(FIGURE_NAMES),
    localrule: True
    threads: RESOURCES["analysis"]["threads"]
    resources:
        mem_mb=grown("analysis", "mem_mb"),
        runtime=grown("analysis", "runtime"),
    conda:
        "../envs/spfl.yaml"
    script:
        "../scripts/table.py"


rule headline_table:
    input:
        markers=lambda wildcards: markers(headline_runs()),
    output:
        csv=f"{TABLES}/headline.csv",
        md=f"{TABLES}/headline.md",
        html=report(
            f"{TABLES}/headline.html",
            caption="../report/headline.rst",
            category="Headline table",
            labels={"config": NAME, "dataset": datasets_of(PLAN.headline_runs()) if PLAN.headline else ""},
        ),
    params:
        kind="headline",
        runs=lambda wildcards: run_records(headline_runs()),
        options=canonical(PLAN.headline),
        changed=lambda wildcards: records_changed(headline_runs(), f"{TABLES}/headline.csv"),
        code=ANALYSIS_VERSION,
    log:
        f"{LOGS}/tables/headline.log",
    message:
        "[stage 3/4: tables] {output.md}"
    localrule: True
    threads: RESOURCES["analysis"]["threads"]
    resources:
        mem_mb=grown("analysis", "mem_mb"),
        runtime=grown("analysis", "runtime"),
    conda:
        "../envs/spfl.yaml"
    script:
        "../scripts/table.py"


rule runs_table:
    input:
        markers=markers(PLAN.all_runs()),
    output:
        csv=f"{TABLES}/runs.csv",
    params:
        kind="runs",
        runs=run_records(PLAN.all_runs()),
        options={},
        changed=lambda wildcards: records_changed(PLAN.all_runs(), f"{TABLES}/runs.csv"),
        code=ANALYSIS_VERSION,
    log:
        f"{LOGS}/tables/runs.log",
    message:
        "[stage 3/4: tables] {output.csv}"
    localrule: True
    threads: RESOURCES["analysis"]["threads"]
    resources:
        mem_mb=grown("analysis", "mem_mb"),
        runtime=grown("analysis", "runtime"),
    conda:
        "../envs/spfl.yaml"
    script:
        "../scripts/table.py"
