# Stage 2: simulations.  One job per *cell* (one grid point and one seed): all the methods asked for
# that cell by any experiment run in one process, so they share common random numbers and the torch
# import.  The cell folder (`<results>/<name>/runs/<cell>`) is named by the hash of its settings and holds
# params.json, the per-method records and, written last, cell.json (the job's output).  Each job's wall
# time, memory and CPU time go to `<results>/<name>/benchmarks/simulate/<cell>.tsv`
# (summarize them with workflow/scripts/runtimes.py).


# A shell rule, not `run:`: Snakemake starts a whole new Snakemake process (parsing this workflow, about
# 2-3 s) for every job of a `run:` rule, which for 130 cells cost minutes.  The text is exactly what
# spfl.records.write_json writes.
rule cell_params:
    output:
        f"{RUNS}/{{cell}}/params.json",
    params:
        text=lambda wildcards: shlex.quote(
            json.dumps(cell_of(wildcards).params, indent=2, sort_keys=True, allow_nan=False)
        ),
    log:
        f"{LOGS}/cell_params/{{cell}}.log",
    message:
        "[stage 2/4: simulations] settings of cell {wildcards.cell}"
    localrule: True
    conda:
        "../envs/spfl.yaml"
    shell:
        "printf '%s\\n' {params.text} > {output} 2> {log}"


rule simulate:
    input:
        params=f"{RUNS}/{{cell}}/params.json",
        data=lambda wildcards: data_file(cell_of(wildcards).dataset),
    output:
        manifest=f"{RUNS}/{{cell}}/cell.json",
    params:
        methods=lambda wildcards: ",".join(cell_of(wildcards).methods),
        out=lambda wildcards, output: os.path.dirname(output.manifest),
        # Rerun triggers: new methods for the cell, or a change to the simulation code (common.smk).
        # Nothing else goes into params, so e.g. another experiment sharing the cell reruns nothing.
        code_version=CODE_VERSION,
        manifest=lambda wildcards: shlex.quote(
            json.dumps(
                {
                    "cell": wildcards.cell,
                    "methods": cell_of(wildcards).methods,
                    "code_version": CODE_VERSION,
                },
                sort_keys=True,
            )
        ),
    log:
        f"{LOGS}/simulate/{{cell}}.log",
    message:
        "[stage 2/4: simulations] cell {wildcards.cell}: {params.methods} (log: {log})"
    benchmark:
        f"{BENCHMARKS}/simulate/{{cell}}.tsv"
    threads: RESOURCES["simulate"]["threads"]
    resources:
        mem_mb=grown("simulate", "mem_mb"),
        runtime=grown("simulate", "runtime"),
        gpu=simulation_gpus,
    conda:
        "../envs/spfl.yaml"
    shell:
        f"{SPFL} run {{input.params:q}} --set data_file={{input.data:q}} --methods {{params.methods}}"
        " --out {params.out:q} --threads {threads} > {log:q} 2>&1"
        " && printf '%s\\n' {params.manifest} > {output.manifest:q}"
