# Stage 4: figures under `<figures>/<name>/`.  One rule per configured figure (plot_<figure>), each
# reading only its aggregated table; the plot style reaches only these rules (params), so restyling
# reruns plots and nothing else.  The report files each figure under the config and dataset it shows.

for _figure in FIGURE_NAMES:

    rule:
        name:
            f"plot_{_figure}"
        input:
            table=f"{TABLES}/{_figure}.csv",
        output:
            pdf=f"{FIGS}/{_figure}.pdf",
            png=report(
                f"{FIGS}/{_figure}.png",
                caption=f"../report/{_figure}.rst",
                category="Figures",
                labels={"figure": _figure, "config": NAME, "dataset": datasets_of(figure_runs(_figure))},
            ),
        params:
            figure=_figure,
            style=STYLE,
            source=f"config {NAME}, {datasets_of(figure_runs(_figure))}",
            code=PLOTS_VERSION,
        log:
            f"{LOGS}/plots/{_figure}.log",
        message:
            "[stage 4/4: figures] {output.png}"
        localrule: True
        threads: RESOURCES["analysis"]["threads"]
        resources:
            mem_mb=grown("analysis", "mem_mb"),
            runtime=grown("analysis", "runtime"),
        conda:
            "../envs/spfl.yaml"
        script:
            "../scripts/plot.py"
