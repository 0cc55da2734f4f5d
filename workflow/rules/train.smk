# One cell of the grid: train, then evaluate on the dataset's evaluation split.


rule train:
    output:
        model=RUN_MODEL,
        log=RUN_LOG,
        throughput=RUN_THROUGHPUT,
    input:
        train=PREPARED_TRAIN,
        features=features_dir,
        code=code("meltr.train.loop"),
    params:
        out=lambda wc, output: os.path.dirname(output.model),
        train=lambda wc: train_flags(wc.dataset, wc.task),
        meltr=flags(config["meltr"], prefix="meltr-"),
        seed=config["seed"],
    # train.threads (default: every core). The cost ratios the report states come from the cost jobs, so
    # training jobs may share the machine; their own throughput records say how many threads they had.
    threads: min(TRAIN_THREADS, workflow.cores)
    resources:
        gpu=lambda wc: 1 if config["train"]["device"] == "cuda" else 0,
    log:
        "logs/train/{dataset}.{task}.{method}.{model}.log",
    benchmark:
        "benchmarks/train/{dataset}.{task}.{method}.{model}.tsv"
    shell:
        "meltr train --dataset {wildcards.dataset} --task {wildcards.task} --method {wildcards.method}"
        " --model {wildcards.model} --train-manifest {input.train} --features {input.features}"
        " --out {params.out} {params.train} {params.meltr} --seed {params.seed} --threads {threads}"
        " > {log} 2>&1"


rule evaluate:
    output:
        RUN_METRICS,
    input:
        model=RUN_MODEL,
        test=PREPARED_TEST,
        features=features_dir,
        code=code("meltr.evaluate", "meltr.config"),
    params:
        device=config["train"]["device"],
        settings=flags(config.get("evaluate", {})),
    # One core: evaluations run two at a time, yet never beside a training job (which takes every core).
    threads: 1
    log:
        "logs/evaluate/{dataset}.{task}.{method}.{model}.log",
    benchmark:
        "benchmarks/evaluate/{dataset}.{task}.{method}.{model}.tsv"
    shell:
        "meltr evaluate --checkpoint {input.model} --test-manifest {input.test} --features {input.features}"
        " --device {params.device} {params.settings} --threads {threads} --out {output} > {log} 2>&1"
