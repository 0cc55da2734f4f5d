# Raw data -> normalised manifests.


rule synth:
    output:
        directory("data/synth/{dataset}"),
    input:
        code("meltr.data.synth"),
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
        train=PREPARED_TRAIN,
        test=PREPARED_TEST,
        summary=PREPARED_SUMMARY,
    input:
        root=dataset_root,
        code=code("meltr.data.registry"),
    params:
        options=lambda wc: flags(config["datasets"][wc.dataset].get("options") or {}),
        # With on_bad_video: skip a missing video is skipped later (and listed), not an error here.
        check_media=str(config["features"].get("on_bad_video", "error") == "error").lower(),
        out=lambda wc, output: os.path.dirname(output.train),
    log:
        "logs/prepare/{dataset}.{task}.log",
    benchmark:
        "benchmarks/prepare/{dataset}.{task}.tsv"
    shell:
        "meltr prepare --dataset {wildcards.dataset} --task {wildcards.task} --root {input.root}"
        " {params.options} --check-media {params.check_media} --out {params.out} > {log} 2>&1"
