# Stage 3: aggregated tables (CSV + Markdown; mean and 95 % t-interval over seeds).  One table per
# figure, the headline table and a table of every run.  The figures read only these tables.


rule table:
    input:
        lambda wildcards: markers(figure_runs(wildcards.figure)),
    output:
        csv="results/tables/{figure}.csv",
        md="results/tables/{figure}.md",
    params:
        kind="{figure}",
        runs=lambda wildcards: run_records(figure_runs(wildcards.figure)),
        options=lambda wildcards: canonical(PLAN.figures[wildcards.figure]),
        code=ANALYSIS_VERSION,
    log:
        "logs/tables/{figure}.log",
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
        lambda wildcards: markers(headline_runs()),
    output:
        csv="results/tables/headline.csv",
        md="results/tables/headline.md",
        html=report(
            "results/tables/headline.html",
            caption="../report/headline.rst",
            category="Headline table",
        ),
    params:
        kind="headline",
        runs=lambda wildcards: run_records(headline_runs()),
        options=canonical(PLAN.headline),
        code=ANALYSIS_VERSION,
    log:
        "logs/tables/headline.log",
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
        markers(PLAN.all_runs()),
    output:
        csv="results/tables/runs.csv",
    params:
        kind="runs",
        runs=run_records(PLAN.all_runs()),
        options={},
        code=ANALYSIS_VERSION,
    log:
        "logs/tables/runs.log",
    localrule: True
    threads: RESOURCES["analysis"]["threads"]
    resources:
        mem_mb=grown("analysis", "mem_mb"),
        runtime=grown("analysis", "runtime"),
    conda:
        "../envs/spfl.yaml"
    script:
        "../scripts/table.py"
