# Grid, wildcard constraints and small helpers shared by the rules.
import os
import shlex
from pathlib import Path

GRID = config["grid"]
DATASETS, METHODS, MODELS = (GRID[k] for k in ("datasets", "methods", "models"))
# The (dataset, task) pairs: each dataset runs the tasks listed under it in params.yaml.
CELLS = [(d, t) for d in DATASETS for t in config["datasets"][d]["tasks"]]
TASKS = sorted({t for _, t in CELLS})
PREPARED = "results/prepared/{dataset}/{task}"
# One run directory per grid cell.
RUN = "results/runs/{dataset}/{task}/{method}/{model}"
RUN_MODEL = "results/runs/{dataset}/{task}/{method}/{model}/model.pt"
RUN_LOG = "results/runs/{dataset}/{task}/{method}/{model}/train_log.jsonl"
RUN_THROUGHPUT = "results/runs/{dataset}/{task}/{method}/{model}/throughput.json"
RUN_METRICS = "results/runs/{dataset}/{task}/{method}/{model}/metrics.json"


def code(*parts):
    """Input files for the package modules a job runs. Editing one reruns the jobs it affects
    (Snakemake's own code trigger does not see modules imported by a shell command)."""
    files = []
    for part in ("errors.py", "io.py", "cli.py") + parts:
        path = Path("meltr") / part
        files += sorted(str(p) for p in path.rglob("*.py")) if path.is_dir() else [str(path)]
    return files


def flags(section, prefix=""):
    """A params.yaml section as explicit CLI flags: {batch_size: 16} -> --batch-size 16, {ks: [3, 10]} -> --ks 3 10."""
    def values(value):
        return " ".join(shlex.quote(str(v)) for v in value) if isinstance(value, list) else shlex.quote(str(value))

    return " ".join(
        f"--{prefix}{key.replace('_', '-')} {values(value)}"
        for key, value in sorted(section.items())
        if value is not None
    )


def grid(pattern):
    """`pattern` for every cell of the grid, in (dataset, task) order, then method, then model."""
    return [pattern.format(dataset=d, task=t, method=m, model=s) for d, t in CELLS for m in METHODS for s in MODELS]


def prepared(wildcards):
    """Every prepared task of a dataset: one feature store serves all of them."""
    tasks = config["datasets"][wildcards.dataset]["tasks"]
    return [f"results/prepared/{wildcards.dataset}/{t}/{split}.jsonl" for t in tasks for split in ("train", "test")]


def dataset_root(wildcards):
    """A synthetic dataset is an output of `synth`; a real download is a plain input folder."""
    return config["datasets"][wildcards.dataset]["root"]


def dataset_features(dataset):
    """The features section with the dataset's own changes (`datasets.<name>.features`) laid over it."""
    return {**config["features"], **(config["datasets"][dataset].get("features") or {})}


def task_train(dataset, task):
    """The train section with the task's own changes (`datasets.<name>.train.<task>`) laid over it."""
    return {**config["train"], **((config["datasets"][dataset].get("train") or {}).get(task) or {})}
