# Stage 1: dataset preparation.  Each dataset is decoded and normalized once into one tensor file that
# every run of the sweep (of every config) loads: `<results>/data/<dataset>.pt`.  CIFAR-10 needs the
# archive under `base.data_dir` or `base.download: true`; no input is declared for it so that the dry
# run needs no data.


rule prepare_data:
    output:
        f"{DATA}/{{dataset}}.pt",
    params:
        data_dir=PLAN.config["base"].get("data_dir", "data"),
        download="--download" if PLAN.config["base"].get("download") else "",
        code=DATA_VERSION,
    log:
        f"{LOGS_ROOT}/prepare_data/{{dataset}}.log",
    message:
        "[stage 1/4: data] preparing {wildcards.dataset}"
    threads: RESOURCES["prepare"]["threads"]
    resources:
        mem_mb=grown("prepare", "mem_mb"),
        runtime=grown("prepare", "runtime"),
    conda:
        "../envs/spfl.yaml"
    shell:
        f"{SPFL} prepare {{wildcards.dataset}} --data-dir {{params.data_dir:q}} --out {{output:q}}"
        " {params.download} > {log:q} 2>&1"
