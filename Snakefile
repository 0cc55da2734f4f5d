# meltr: fine-tune video-language models with and without MELTR and measure what MELTR costs.
# Reads like a table of contents: config, then one include per stage. Every rule calls the `meltr` CLI.
import re

from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "params.yaml"


validate(config, "workflow/schemas/params.schema.yaml")


include: "workflow/rules/common.smk"


wildcard_constraints:
    dataset="|".join(DATASETS),
    task="|".join(TASKS),
    method="|".join(METHODS),
    model="|".join(MODELS),
    store="|".join(re.escape(s) for s in STORES),


include: "workflow/rules/data.smk"
include: "workflow/rules/features.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/cost.smk"
include: "workflow/rules/scaling.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        "results/summary.csv",
        "results/metrics.json",
        "results/report/report.md",
        "results/scaling/scaling.csv",
