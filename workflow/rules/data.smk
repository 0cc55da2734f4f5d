# Raw data -> normalised manifests.


rule synth:
    output:
        directory("data/synth/{dataset}"),
    input:
        code("data"),
    params:
        sizes=lambda wc: flags(config["synth"][wc.dataset]),
        seed=config["seed"],
    log:
        "logs/synth/{dataset}.log",
    benchmark:
        "benchmarks/synth/{dataset}.tsv"
    shell:
        "meltr synth --dataset {wildcards.dataset} --out {output} {params.sizes} --seed {params.seed} > {log} 2>&1"


rule prepare:
    output:
        train="results/prepared/{dataset}/train.jsonl",
        test="results/prepared/{dataset}/test.jsonl",
        summary="results/prepared/{dataset}/summary.json",
    input:
        root=dataset_root,
        code=code("data"),
    params:
        video_dir=lambda wc: config["datasets"][wc.dataset].get("video_dir", "videos"),
        train_list=lambda wc: config["datasets"][wc.dataset].get("train_list", "9k"),
        out=lambda wc, output: os.path.dirname(output.train),
    log:
        "logs/prepare/{dataset}.log",
    benchmark:
        "benchmarks/prepare/{dataset}.tsv"
    shell:
        "meltr prepare --dataset {wildcards.dataset} --root {input.root} --video-dir {params.video_dir}"
        " --train-list {params.train_list} --out {params.out} > {log} 2>&1"
