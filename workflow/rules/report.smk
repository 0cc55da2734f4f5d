# All cells -> summary table, report with plots, and the nested metrics file DVC shows.


rule report:
    output:
        summary="results/summary.csv",
        metrics="results/metrics.json",
        report="results/report/report.md",
        plot="results/report/quality_vs_throughput.png",
    input:
        metrics=grid(RUN_METRICS),
        throughput=grid(RUN_THROUGHPUT),
        logs=grid(RUN_LOG),
        code=code("report.py"),
    params:
        runs=grid(RUN),
        report_dir=lambda wc, output: os.path.dirname(output.report),
    log:
        "logs/report.log",
    benchmark:
        "benchmarks/report.tsv"
    shell:
        "meltr report --runs {params.runs} --summary {output.summary} --metrics {output.metrics}"
        " --report-dir {params.report_dir} > {log} 2>&1"
