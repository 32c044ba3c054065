# Stage 4: figures.  One rule per figure (plot_<figure>), each reading only its aggregated table; the
# plot style reaches only these rules (params), so restyling reruns plots and nothing else.

for _figure in FIGURE_NAMES:

    rule:
        name:
            f"plot_{_figure}"
        input:
            table=f"results/tables/{_figure}.csv",
        output:
            pdf=f"figures/{_figure}.pdf",
            png=report(
                f"figures/{_figure}.png",
                caption=f"../report/{_figure}.rst",
                category="Figures",
                labels={"figure": _figure},
            ),
        params:
            figure=_figure,
            style=STYLE,
            code=PLOTS_VERSION,
        log:
            f"logs/plots/{_figure}.log",
        localrule: True
        threads: RESOURCES["analysis"]["threads"]
        resources:
            mem_mb=grown("analysis", "mem_mb"),
            runtime=grown("analysis", "runtime"),
        conda:
            "../envs/spfl.yaml"
        script:
            "../scripts/plot.py"
