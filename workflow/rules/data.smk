# Stage 1: dataset preparation.  Each dataset is decoded and normalized once into one tensor file that
# every run of the sweep loads (runs get `data_file: results/data/<dataset>.pt`).  CIFAR-10 needs the
# archive under `base.data_dir` or `base.download: true`; no input is declared for it so that the dry
# run needs no data.


rule prepare_data:
    output:
        "results/data/{dataset}.pt",
    params:
        data_dir=PLAN.config["base"].get("data_dir", "data"),
        download="--download" if PLAN.config["base"].get("download") else "",
        code=DATA_VERSION,
    log:
        "logs/prepare_data/{dataset}.log",
    threads: RESOURCES["prepare"]["threads"]
    resources:
        mem_mb=grown("prepare", "mem_mb"),
        runtime=grown("prepare", "runtime"),
    conda:
        "../envs/spfl.yaml"
    shell:
        "spfl prepare {wildcards.dataset} --data-dir {params.data_dir:q} --out {output} {params.download}"
        " > {log} 2>&1"
