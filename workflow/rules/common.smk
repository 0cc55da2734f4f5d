# Grid, wildcard constraints and small helpers shared by the rules.
import ast
import os
import re
import shlex
from pathlib import Path

GRID = config["grid"]
DATASETS, METHODS, MODELS = (GRID[k] for k in ("datasets", "methods", "models"))
# The (dataset, task) pairs: each dataset runs the tasks listed under it in params.yaml.
CELLS = [(d, t) for d in DATASETS for t in config["datasets"][d]["tasks"]]
TASKS = sorted({t for _, t in CELLS})
PREPARED_TRAIN = "results/prepared/{dataset}/{task}/train.jsonl"
PREPARED_TEST = "results/prepared/{dataset}/{task}/test.jsonl"
PREPARED_SUMMARY = "results/prepared/{dataset}/{task}/summary.json"
# One run directory per grid cell.
RUN = "results/runs/{dataset}/{task}/{method}/{model}"
RUN_MODEL = "results/runs/{dataset}/{task}/{method}/{model}/model.pt"
RUN_LOG = "results/runs/{dataset}/{task}/{method}/{model}/train_log.jsonl"
RUN_THROUGHPUT = "results/runs/{dataset}/{task}/{method}/{model}/throughput.json"
RUN_METRICS = "results/runs/{dataset}/{task}/{method}/{model}/metrics.json"
# One cost measurement per (dataset, task, model): all methods interleaved.
COST = "results/cost/{dataset}/{task}/{model}.json"


def _module_file(dotted):
    """meltr.a.b -> meltr/a/b.py or meltr/a/b/__init__.py (None when it is not a module of the package)."""
    base = Path(*dotted.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _imported(path, dotted, top_level_only):
    """The package modules a module names: its imports (all of them, or only those at module level) and the
    dotted names in its string constants ("meltr.data.tvqa", "meltr.data.synth.tvqa:synth_tvqa"), which is how
    the package spells a module it imports dynamically."""
    tree = ast.parse(path.read_text(), str(path))
    package = dotted if path.name == "__init__.py" else dotted.rpartition(".")[0]
    nodes = tree.body if top_level_only else ast.walk(tree)
    for node in nodes:
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            parts = package.split(".")
            base = ".".join(parts[:len(parts) - node.level + 1]) if node.level else ""
            target = ".".join(p for p in (base, node.module or "") if p)
            yield target
            yield from (f"{target}.{alias.name}" for alias in node.names)  # `from pkg import submodule`
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if re.fullmatch(r"meltr(\.\w+)+(:\w+)?", node.value):
                yield node.value.partition(":")[0]


def _closure(modules, top_level_only=()):
    """Every package file the modules run, following imports; with their parent packages' __init__ files."""
    seen, todo = {}, list(modules)
    while todo:
        dotted = todo.pop()
        path = _module_file(dotted) if dotted.split(".")[0] == "meltr" else None
        if path is None or dotted in seen:
            continue
        seen[dotted] = path
        parts = dotted.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]
        todo += list(_imported(path, dotted, dotted in top_level_only))
    return sorted({str(p) for p in seen.values()})


def code(*modules):
    """Input files for the package modules a job runs, derived from their imports: editing one reruns exactly
    the jobs that use it (Snakemake's own code trigger does not see modules imported by a shell command).
    Every job runs the CLI, whose parser reads the dataset registry; of the CLI itself only its module-level
    imports count, so a rule names what its subcommand imports (its stage's module, and meltr.config where
    the subcommand builds its flags from a dataclass the stage does not import itself)."""
    return _closure(["meltr.cli", "meltr.data.registry", *modules], top_level_only=("meltr.cli",))


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


def costs():
    """The cost file of every (dataset, task, model) cell."""
    return [COST.format(dataset=d, task=t, model=s) for d, t in CELLS for s in MODELS]


# Train settings that do not change a step's cost (`meltr bench cost` takes none of them).
NOT_COST = ("steps", "checkpoint_every", "timing_warmup", "nan_patience", "threads")


def cost_train(dataset, task):
    """The task's train settings that `meltr bench cost` takes."""
    return {k: v for k, v in task_train(dataset, task).items() if k not in NOT_COST}


def train_flags(dataset, task):
    """The task's train settings as flags of `meltr train`, but threads, which the rule's `threads` carries."""
    return flags({k: v for k, v in task_train(dataset, task).items() if k != "threads"})


# CPU threads of a training job: train.threads, or every core.
TRAIN_THREADS = config["train"].get("threads") or workflow.cores


def task_train(dataset, task):
    """The train section with the task's own changes (`datasets.<name>.train.<task>`) laid over it."""
    return {**config["train"], **((config["datasets"][dataset].get("train") or {}).get(task) or {})}
