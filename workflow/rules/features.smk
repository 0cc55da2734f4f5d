# Manifests -> per-video feature store (decord frames through a transformers vision backbone).


rule features:
    output:
        directory("results/features/{dataset}"),
    input:
        manifests=prepared,
        s3d=lambda wc: config["datasets"][wc.dataset].get("s3d") or [],
        code=code("data", "features"),
    params:
        settings=lambda wc: flags(dataset_features(wc.dataset)),
        s3d=lambda wc, input: f"--s3d {input.s3d}" if input.s3d else "",
        seed=config["seed"],
    threads: workflow.cores
    log:
        "logs/features/{dataset}.log",
    benchmark:
        "benchmarks/features/{dataset}.tsv"
    shell:
        "meltr features --manifests {input.manifests} --out {output} {params.settings} {params.s3d}"
        " --seed {params.seed} --threads {threads} > {log} 2>&1"
