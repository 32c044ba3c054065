# Stage 2: simulations.  One job per *cell* (one grid point and one seed): all the methods asked for
# that cell by any experiment run in one process, so they share common random numbers and the torch
# import.  The cell folder is named by the hash of its settings and holds params.json, the per-method
# records and, written last, cell.json (the job's output).


rule cell_params:
    output:
        "results/runs/{cell}/params.json",
    params:
        settings=lambda wildcards: cell_of(wildcards).params,
    log:
        "logs/cell_params/{cell}.log",
    localrule: True
    run:
        from spfl.records import write_json

        write_json(output[0], params.settings)


rule simulate:
    input:
        params="results/runs/{cell}/params.json",
        data=lambda wildcards: data_file(cell_of(wildcards).dataset),
    output:
        manifest="results/runs/{cell}/cell.json",
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
        "logs/simulate/{cell}.log",
    threads: RESOURCES["simulate"]["threads"]
    resources:
        mem_mb=grown("simulate", "mem_mb"),
        runtime=grown("simulate", "runtime"),
        gpu=simulation_gpus,
    conda:
        "../envs/spfl.yaml"
    shell:
        "spfl run {input.params} --methods {params.methods} --out {params.out} --threads {threads}"
        " > {log} 2>&1"
        " && printf '%s\\n' {params.manifest} > {output.manifest}"
