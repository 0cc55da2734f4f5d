# Manifests -> per-video feature store (decord frames through a transformers vision backbone). One store per
# dataset, shared by its tasks, plus one per task with its own feature settings (results/features/tgifqa.transition).


rule features:
    output:
        directory("results/features/{store}"),
    input:
        manifests=store_manifests,
        s3d=lambda wc: config["datasets"][STORES[wc.store][0]].get("s3d") or [],
        code=code("meltr.features.extract", "meltr.features.s3d"),
    params:
        settings=lambda wc: flags(store_features(wc.store)),
        s3d=lambda wc, input: f"--s3d {input.s3d}" if input.s3d else "",
        seed=config["seed"],
    threads: workflow.cores
    log:
        "logs/features/{store}.log",
    benchmark:
        "benchmarks/features/{store}.tsv"
    shell:
        "meltr features --manifests {input.manifests} --out {output} {params.settings} {params.s3d}"
        " --seed {params.seed} --threads {threads} > {log} 2>&1"
