# What MELTR costs on each task, as the report states it: every method on the task's own model and training
# batches, timed interleaved in one process (ratios that survive a shared machine, or say they could not).


rule cost:
    output:
        COST,
    input:
        train=PREPARED_TRAIN,
        features=features_dir,
        code=code("meltr.bench.cost"),
    params:
        train=lambda wc: flags(cost_train(wc.dataset, wc.task)),
        meltr=flags(config["meltr"], prefix="meltr-"),
        cost=flags(config.get("cost") or {}),
        methods=" ".join(METHODS),
        seed=config["seed"],
    # The training jobs' threads: the cost of the computation they run. The methods are interleaved in the one
    # process, so the ratios survive another job beside it (or say they could not: usable false).
    threads: min(TRAIN_THREADS, workflow.cores)
    resources:
        gpu=lambda wc: 1 if config["train"]["device"] == "cuda" else 0,
    log:
        "logs/cost/{dataset}.{task}.{model}.log",
    benchmark:
        "benchmarks/cost/{dataset}.{task}.{model}.tsv"
    shell:
        "meltr bench cost --dataset {wildcards.dataset} --task {wildcards.task} --model {wildcards.model}"
        " --train-manifest {input.train} --features {input.features} --methods {params.methods}"
        " {params.train} {params.meltr} {params.cost} --seed {params.seed} --threads {threads} --out {output}"
        " > {log} 2>&1"
