# Manifests -> per-video feature store (decord frames through a transformers vision backbone).


rule features:
    output:
        directory("results/features/{dataset}"),
    input:
        train="results/prepared/{dataset}/train.jsonl",
        test="results/prepared/{dataset}/test.jsonl",
        code=code("data", "features"),
    params:
        settings=flags(config["features"]),
        seed=config["seed"],
    threads: workflow.cores
    log:
        "logs/features/{dataset}.log",
    benchmark:
        "benchmarks/features/{dataset}.tsv"
    shell:
        "meltr features --manifests {input.train} {input.test} --out {output} {params.settings}"
        " --seed {params.seed} --threads {threads} > {log} 2>&1"
