"""Which datasets exist, which tasks each serves, and the one way to load, prepare and check any of them.

Every loader returns `{split: [record, ...]}` in the normalised form of `records.py`; nothing after
`prepare` knows which dataset a record came from.
"""
from __future__ import annotations

import importlib
import inspect
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import MeltrError
from ..io import write_json, write_jsonl
from .records import check_records


@dataclass(frozen=True)
class DatasetSpec:
    module: str                 # the loader's module, named in full (the workflow reads these names)
    loader: str                 # its load function: loader(root, task, **options) -> {split: records}
    tasks: dict[str, str]       # task -> task family (records.TASK_KEYS)
    eval_split: str             # the split the papers report on


DATASETS: dict[str, DatasetSpec] = {
    "msrvtt": DatasetSpec("meltr.data.msrvtt", "load_msrvtt", {"retrieval": "retrieval", "captioning": "captioning"}, "test"),
    "youcook2": DatasetSpec("meltr.data.youcook2", "load_youcook2", {"retrieval": "retrieval", "captioning": "captioning"},
                            "val"),
    "tgifqa": DatasetSpec("meltr.data.tgifqa", "load_tgifqa", {"action": "multiple_choice", "transition": "multiple_choice",
                                                    "frameqa": "open_ended", "count": "count"}, "test"),
    # TVQA's test_public has no answers: the papers report val.
    "tvqa": DatasetSpec("meltr.data.tvqa", "load_tvqa", {"qa": "multiple_choice"}, "val"),
    "msvdqa": DatasetSpec("meltr.data.msvdqa", "load_msvdqa", {"qa": "open_ended"}, "test"),
}


def spec(dataset: str) -> DatasetSpec:
    if dataset not in DATASETS:
        raise MeltrError(f"dataset {dataset!r}: expected one of {', '.join(DATASETS)}")
    return DATASETS[dataset]


def task_family(dataset: str, task: str) -> str:
    s = spec(dataset)
    if task not in s.tasks:
        raise MeltrError(f"task {task!r} of dataset {dataset!r}: expected one of {', '.join(s.tasks)}")
    return s.tasks[task]


# Keywords a loader takes that are not the user's options: the caller sets them.
SET_BY_CALLER = ("task", "stats")


def keyword_options(fn) -> dict[str, inspect.Parameter]:
    """The keyword-only parameters of a loader or synthetic writer that a user may set (the CLI's flags,
    params.yaml's `options`)."""
    return {n: p for n, p in inspect.signature(fn).parameters.items()
            if p.kind == p.KEYWORD_ONLY and n not in SET_BY_CALLER}


def loader(dataset: str):
    """The load function of a dataset: loader(root, task=..., **options) -> {split: records}."""
    s = spec(dataset)
    return getattr(importlib.import_module(s.module), s.loader)


def load(dataset: str, task: str, root: str | os.PathLike, **options) -> dict[str, list[dict]]:
    """All splits of (dataset, task). `options` are the loader's keyword arguments (video_dir, variant, ...);
    unknown ones are an error naming the accepted ones, not silently dropped."""
    family = task_family(dataset, task)
    load_fn = loader(dataset)
    accepted = list(keyword_options(load_fn))
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise MeltrError(f"datasets.{dataset}: unknown option(s) {', '.join(unknown)}; expected any of "
                         f"{', '.join(accepted)}")
    splits = load_fn(root, task=task, **{k: v for k, v in options.items() if v is not None})
    for name, records in splits.items():
        check_records(records, family, f"{root} ({dataset} {task} {name})")
    return splits


def prepare(dataset: str, task: str, root: str | os.PathLike, out_dir: str | os.PathLike, *,
            check_media: bool = True, **options) -> dict:
    """Write out_dir/train.jsonl, out_dir/test.jsonl (the evaluation split) and out_dir/summary.json.

    With check_media, a referenced video that does not exist is an error (existence only; decoding
    happens in the feature stage). Everything is validated before anything is written."""
    splits = load(dataset, task, root, **options)
    s = spec(dataset)
    if "train" not in splits or s.eval_split not in splits:
        raise MeltrError(f"{root}: {dataset} {task}: expected splits train and {s.eval_split}, got {sorted(splits)}")
    chosen = {"train": splits["train"], "test": splits[s.eval_split]}
    summary = {"dataset": dataset, "task": task, "family": s.tasks[task], "root": str(root),
               "eval_split": s.eval_split, "options": options}
    for name, records in chosen.items():
        if not records:
            raise MeltrError(f"{root}: {dataset} {task}: split {name!r} has no records")
        dups = duplicate_ids(records)
        if dups:
            raise MeltrError(f"{root}: {dataset} {task} {name}: record id {dups[0]!r} appears more than once "
                             f"({len(dups)} duplicated ids); expected ids unique within a split")
        missing = missing_media(records)
        if missing and check_media:
            raise MeltrError(f"{missing[0]}: video file not found ({dataset} {task} {name}; "
                             f"{len(missing)} missing in all - `meltr data check` lists them)")
        summary[name] = split_counts(records) | {"missing_media": missing}
    shared = shared_clips(chosen["train"], chosen["test"])
    if shared:  # a test clip seen in training inflates every metric and the chance level means nothing
        raise MeltrError(f"{root}: {dataset} {task}: {len(shared)} clips of the {s.eval_split} split are also in "
                         f"train (first: {shared[0]!r}); expected disjoint splits")
    out = Path(out_dir)
    write_jsonl(out / "train.jsonl", chosen["train"])
    write_jsonl(out / "test.jsonl", chosen["test"])
    write_json(out / "summary.json", summary)  # last: its presence marks a complete preparation
    return summary


def duplicate_ids(records: list[dict]) -> list[str]:
    """Record ids that appear more than once in one split."""
    seen, dups = set(), []
    for r in records:
        if r["id"] in seen and r["id"] not in dups:
            dups.append(r["id"])
        seen.add(r["id"])
    return dups


def shared_clips(train: list[dict], test: list[dict]) -> list[str]:
    """Clips (the same media file and window) of the evaluation split that the training split also holds."""
    def clip(r):
        return (os.path.normpath(r["video"]), r["start"], r["end"])

    seen = {clip(r) for r in train}
    return sorted({r["video_id"] for r in test if clip(r) in seen})


def missing_media(records: list[dict]) -> list[str]:
    return sorted({r["video"] for r in records if not os.path.exists(r["video"])})


def split_counts(records: list[dict]) -> dict:
    """Records, distinct media files, distinct clips (a YouCook2 segment, a TVQA moment), captions, questions."""
    return {"records": len(records), "videos": len({r["video"] for r in records}),
            "clips": len({r["video_id"] for r in records}),
            "captions": sum(len(r.get("captions", ())) for r in records),
            "questions": sum(1 for r in records if "question" in r)}


def check(dataset: str, root: str | os.PathLike, **options) -> dict:
    """`meltr data check`: per task and split the counts of `split_counts`, every referenced media file that is
    missing, and the quirks `prepare` refuses (duplicated ids, evaluation clips also in train). Malformed
    annotations raise the loaders' one-line errors."""
    report: dict = {"dataset": dataset, "root": str(root), "tasks": {}, "missing_media": [], "quirks": []}
    missing: set[str] = set()
    s = spec(dataset)
    for task in s.tasks:
        splits = load(dataset, task, root, **options)
        report["tasks"][task] = {name: split_counts(recs) for name, recs in splits.items()}
        for name, recs in splits.items():
            missing.update(missing_media(recs))
            dups = duplicate_ids(recs)
            if dups:
                report["quirks"].append(f"{task} {name}: {len(dups)} duplicated record ids (first: {dups[0]!r})")
        if "train" in splits and s.eval_split in splits:
            shared = shared_clips(splits["train"], splits[s.eval_split])
            if shared:
                report["quirks"].append(f"{task}: {len(shared)} {s.eval_split} clips also in train "
                                        f"(first: {shared[0]!r}); prepare refuses them")
    report["missing_media"] = sorted(missing)
    return report
