# Stage 2: simulations.  One job per *cell* (one grid point and one seed): all the methods asked for
# that cell by any experiment run in one process, so they share common random numbers and the torch
# import.  The cell folder (`<results>/<name>/runs/<cell>`) is named by the hash of its settings and holds
# params.json, the per-method records and, written last, cell.json (the job's output).  Each job's wall
# time, memory and CPU time go to `<results>/<name>/benchmarks/simulate/<cell>.tsv`
# (summarize them with workflow/scripts/runtimes.py).


rule cell_params:
    output:
        f"{RUNS}/{{cell}}/params.json",
    params:
        settings=lambda wildcards: cell_of(wildcards).params,
    log:
        f"{LOGS}/cell_params/{{cell}}.log",
    localrule: True
    run:
        from spfl.records import write_json

        write_json(output[0], params.settings)


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
