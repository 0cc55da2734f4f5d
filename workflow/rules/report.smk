# All cells and the scaling sweeps -> summary table, report with plots, and the nested metrics file DVC shows.
# The plots are also in `snakemake --report report.html`, with the captions under workflow/report/.
SCALING_PLOTS = ["throughput", "memory", "ratio_multitask", "ratio_finetune"]


rule report:
    output:
        summary="results/summary.csv",
        metrics="results/metrics.json",
        report="results/report/report.md",
        plot=report("results/report/quality_vs_throughput.png", caption="../report/quality.rst", category="Quality"),
        scaling_csv="results/scaling/scaling.csv",
        slopes_csv="results/scaling/slopes.csv",
        scaling_plots=[
            report(f"results/report/scaling_{name}.png", caption="../report/scaling.rst", category="Scaling")
            for name in SCALING_PLOTS
        ],
    input:
        metrics=grid(RUN_METRICS),
        throughput=grid(RUN_THROUGHPUT),
        logs=grid(RUN_LOG),
        costs=costs(),
        scaling=["results/scaling/local.json"] + config["scaling"].get("results", []),
        code=code("meltr.report.build"),
    params:
        runs=grid(RUN),
        report_dir=lambda wc, output: os.path.dirname(output.report),
        budgets=" ".join(str(b) for b in config["scaling"].get("memory_budgets_gb", [24, 80, 141])),
    log:
        "logs/report.log",
    benchmark:
        "benchmarks/report.tsv"
    shell:
        "meltr report --runs {params.runs} --costs {input.costs} --summary {output.summary} --metrics {output.metrics}"
        " --report-dir {params.report_dir} --scaling {input.scaling} --scaling-csv {output.scaling_csv}"
        " --slopes-csv {output.slopes_csv} --memory-budgets-gb {params.budgets} > {log} 2>&1"
