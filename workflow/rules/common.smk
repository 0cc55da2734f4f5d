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


def task_feature_changes(dataset, task):
    """A task's own changes to its dataset's features (`datasets.<name>.task_features.<task>`), or {}."""
    return (config["datasets"][dataset].get("task_features") or {}).get(task) or {}


def feature_store(dataset, task):
    """The feature store a (dataset, task) cell reads: the dataset's, shared by its tasks, or the task's own
    when it changes the feature settings."""
    return f"{dataset}.{task}" if task_feature_changes(dataset, task) else dataset


# Feature store name -> (dataset, the tasks it serves).
STORES = {}
for _d, _t in CELLS:
    STORES.setdefault(feature_store(_d, _t), (_d, []))[1].append(_t)


def features_dir(wildcards):
    return f"results/features/{feature_store(wildcards.dataset, wildcards.task)}"


def store_manifests(wildcards):
    """The prepared manifests (train and test) of every task a feature store serves."""
    dataset, tasks = STORES[wildcards.store]
    return [f"results/prepared/{dataset}/{t}/{split}.jsonl" for t in tasks for split in ("train", "test")]


def dataset_root(wildcards):
    """A synthetic dataset is an output of `synth`; a real download is a plain input folder."""
    return config["datasets"][wildcards.dataset]["root"]


def store_features(store):
    """The features section with the dataset's changes (`datasets.<name>.features`) laid over it, then, for a
    task's own store, the task's (the tasks of a dataset's store have none)."""
    dataset, tasks = STORES[store]
    own = task_feature_changes(dataset, tasks[0])
    return {**config["features"], **(config["datasets"][dataset].get("features") or {}), **own}


def task_train(dataset, task):
    """The train section with the task's own changes (`datasets.<name>.train.<task>`) laid over it."""
    return {**config["train"], **((config["datasets"][dataset].get("train") or {}).get(task) or {})}
