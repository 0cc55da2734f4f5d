# The scaling sweep on this machine: sizes x methods x k x batch x adapters (params.yaml `scaling`).


rule scaling:
    output:
        "results/scaling/local.json",
    input:
        code=code("meltr.bench.scaling"),
    params:
        sweep=flags({k: v for k, v in config["scaling"].items() if k not in ("results", "memory_budgets_gb")}),
        meltr=flags({k: v for k, v in config["meltr"].items() if k not in ("k", "estimator", "meta_batches")},
                    prefix="meltr-"),
        seed=config["seed"],
    # All cores and nothing beside it: the sweep is a timing measurement.
    threads: workflow.cores
    resources:
        gpu=lambda wc: 1 if config["scaling"].get("device") == "cuda" else 0,
    log:
        "logs/scaling.log",
    benchmark:
        "benchmarks/scaling.tsv"
    shell:
        "meltr bench scaling --json {output} {params.sweep} {params.meltr} --seed {params.seed} --threads {threads}"
        " > {log} 2>&1"
