"""Load MSRVTT retrieval and captioning splits into normalised records (docs/datasets.md §1).

Variants (files under `root`):
  clip4clip  (CLIP4Clip's msrvtt_data.zip; UniVL's msrvtt.zip has the same files)
             MSRVTT_data.json ({"videos": [{video_id, split, "start time", ...}], "sentences": [{video_id,
             caption}]}), MSRVTT_train.{9k,7k}.csv (column video_id), MSRVTT_JSFUSION_test.csv (columns
             key,vid_key,video_id,sentence; ',' or ';' separated), <video_dir>/<video_id>.mp4 (.webm fallback).
  frozen     (Frozen-in-Time / All-in-one) MSR_VTT.json (COCO-style "annotations": [{image_id, caption}]) and
             one-id-a-line list files, in the Frozen layout (annotation/MSR_VTT.json,
             high-quality/structured-symlinks/*.txt|pkl, videos/all/<id>.mp4) or MELTR-All-in-one's flat one
             (MSR_VTT.json, *.txt, *.pkl, videos/<id>.mp4 directly under root). <video_dir>/all/ is used when it
             is a folder. train_list picks the cut:
               9k    train_list_9k.txt (MELTR) or train_list_jsfusion.txt (Frozen); test val_list_jsfusion.txt
               7k    train_list_7k.txt (MELTR);                            test val_list_jsfusion.txt
               miech train_list_miech.txt; test test_list_miech.txt
               full  train_list_full.txt;  test test_list_full.txt
             The jsfusion test caption is captions[idx] with idx from jsfusion_val_caption_idx.pkl
             ({video_id: idx}, read with np.load(allow_pickle=True) as Frozen does; captions in MSR_VTT.json order);
             the miech/full test caption is the first one (Frozen's _get_caption at test time).

Tasks:
  retrieval   train: the videos of the train list with all their captions, in list order;
              test: one record per 1k-A test video with its one evaluation caption, in file order.
  captioning  clip4clip only ("MSRVTT-Full", split taken from each video's `split` field, not list position):
              train = split "train" + "validate" (7,010 videos on the real data, as MELTR trains; UniVL uses the
              6,513 "train" only), test = split "test" (2,990) with ALL their captions as references.
              train_list is not used.

Records (meltr/data/records.py): id = video_id = "video12", video = the clip file, start = end = fps = None
(the mp4s are already cut; "start time"/"end time" in MSRVTT_data.json locate the clip inside its YouTube
source and are not used), split, captions.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import MeltrError
from ..io import read_json_object, write_json, write_jsonl
from .records import make_record

TASKS = {"retrieval": "retrieval", "captioning": "captioning"}
VARIANTS = ("clip4clip", "frozen")
DATA_JSON = "MSRVTT_data.json"
TRAIN_CSV = {"9k": "MSRVTT_train.9k.csv", "7k": "MSRVTT_train.7k.csv"}
TEST_CSV = "MSRVTT_JSFUSION_test.csv"
OFFICIAL_SPLITS = ("train", "validate", "test")

FROZEN_JSON = ("annotation/MSR_VTT.json", "MSR_VTT.json")  # Frozen layout, MELTR flat layout
FROZEN_LIST_DIR = "high-quality/structured-symlinks"
FROZEN_CUTS = {  # train_list -> (train list file candidates, test list file, caption-index pickle or None)
    "9k": (("train_list_9k.txt", "train_list_jsfusion.txt"), "val_list_jsfusion.txt", "jsfusion_val_caption_idx.pkl"),
    "7k": (("train_list_7k.txt",), "val_list_jsfusion.txt", "jsfusion_val_caption_idx.pkl"),
    "miech": (("train_list_miech.txt",), "test_list_miech.txt", None),
    "full": (("train_list_full.txt",), "test_list_full.txt", None),
}


def load_msrvtt(root: str | os.PathLike, *, video_dir: str = "videos", train_list: str = "9k",
                task: str = "retrieval", variant: str = "clip4clip") -> dict[str, list[dict]]:
    """Return {"train": [...], "test": [...]} records (see the module docstring for what each holds)."""
    root = str(root)
    if task not in TASKS:
        raise MeltrError(f"msrvtt task: expected one of {', '.join(TASKS)}, got {task!r}")
    if variant == "frozen":
        if task != "retrieval":
            raise MeltrError(f"msrvtt task {task!r}: variant 'frozen' supports only 'retrieval' "
                             f"(use variant 'clip4clip', which reads the split field of {DATA_JSON})")
        return _load_frozen(root, video_dir, train_list)
    if variant != "clip4clip":
        raise MeltrError(f"msrvtt variant: expected one of {', '.join(VARIANTS)}, got {variant!r}")

    data_path = os.path.join(root, DATA_JSON)
    if task == "captioning":
        videos, captions = _read_data_json(data_path, need_split=True)
        return _captioning(root, video_dir, data_path, videos, captions)

    if train_list not in TRAIN_CSV:
        raise MeltrError(f"train_list: expected '9k' or '7k' (reads {os.path.join(root, TRAIN_CSV['9k'])} or "
                         f"{TRAIN_CSV['7k']}), got {train_list!r}")
    known, captions = _read_data_json(data_path)

    train_path = os.path.join(root, TRAIN_CSV[train_list])
    train = []
    for line, row in read_csv_columns(train_path, ("video_id",)):
        vid = row["video_id"]
        if vid not in known:
            raise MeltrError(f"{train_path}: line {line}: video_id {vid!r} has no entry in {data_path}: videos")
        if not captions.get(vid):
            raise MeltrError(f"{train_path}: line {line}: video_id {vid!r} has no caption in {data_path}: sentences")
        train.append(_record(vid, _video_path(root, video_dir, vid), "train", list(captions[vid])))

    test_path = os.path.join(root, TEST_CSV)
    test = []
    for line, row in read_csv_columns(test_path, ("video_id", "sentence")):
        vid, sentence = row["video_id"], row["sentence"]
        if vid not in known:
            raise MeltrError(f"{test_path}: line {line}: video_id {vid!r} has no entry in {data_path}: videos")
        test.append(_record(vid, _video_path(root, video_dir, vid), "test", [sentence]))
    return {"train": train, "test": test}


def prepare_msrvtt(root: str | os.PathLike, out_dir: str | os.PathLike, *, video_dir: str = "videos",
                   train_list: str = "9k", check_media: bool = True, task: str = "retrieval",
                   variant: str = "clip4clip") -> dict:
    """Write out_dir/{train,test}.jsonl and out_dir/summary.json; return the summary.

    With check_media, a referenced video that does not exist is an error (existence only: nothing is decoded).
    Everything is validated before anything is written, and each file is written atomically. The summary
    names task and variant only when they are not the defaults (retrieval, clip4clip).
    """
    splits = load_msrvtt(root, video_dir=video_dir, train_list=train_list, task=task, variant=variant)
    summary: dict = {"root": str(root), "video_dir": video_dir, "train_list": train_list}
    if task != "retrieval":
        summary["task"] = task
    if variant != "clip4clip":
        summary["variant"] = variant
    for name, records in splits.items():
        missing = []
        for i, rec in enumerate(records):
            if not os.path.isfile(rec["video"]):
                if check_media:
                    raise MeltrError(f"{rec['video']}: video file not found ({name} record {i}, "
                                     f"video_id {rec['video_id']!r}; pass check_media=False to allow)")
                missing.append(rec["video"])
        summary[name] = {"videos": len({r["video_id"] for r in records}), "records": len(records),
                         "captions": sum(len(r["captions"]) for r in records),
                         "missing_media": sorted(set(missing))}
    out_dir = Path(out_dir)
    for name, records in splits.items():
        write_jsonl(out_dir / f"{name}.jsonl", records)
    write_json(out_dir / "summary.json", summary)  # last: its presence marks a complete preparation
    return summary


def _record(vid: str, video: str, split: str, captions: list[str]) -> dict:
    return make_record(id=vid, video_id=vid, video=video, split=split, captions=captions)


def _video_path(root: str, video_dir: str, vid: str) -> str:
    # os.path.join drops root when video_dir is absolute, as intended
    mp4 = os.path.join(root, video_dir, vid + ".mp4")
    webm = mp4[:-4] + ".webm"  # CLIP4Clip falls back to .webm when the .mp4 is absent
    return webm if not os.path.exists(mp4) and os.path.exists(webm) else mp4


def _captioning(root: str, video_dir: str, data_path: str, videos: dict[str, tuple[int, str]],
                captions: dict[str, list[str]]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {"train": [], "test": []}
    for vid, (i, split) in videos.items():
        if not captions.get(vid):
            raise MeltrError(f"{data_path}: videos[{i}]: video_id {vid!r} has no caption in sentences")
        name = "test" if split == "test" else "train"  # MELTR trains on train + validate
        out[name].append(_record(vid, _video_path(root, video_dir, vid), name, list(captions[vid])))
    return out


def _read_data_json(path: str, need_split: bool = False) -> tuple[dict[str, tuple[int, str | None]],
                                                                   dict[str, list[str]]]:
    """Validate MSRVTT_data.json; return ({video_id: (index in videos, split)} in file order,
    {video_id: captions in file order}). The split field is checked only when need_split."""
    data = read_json_object(path, missing="the MSRVTT annotation file")
    for key in ("videos", "sentences"):
        if key not in data:
            raise MeltrError(f"{path}: expected top-level key {key!r}")
        if not isinstance(data[key], list):
            raise MeltrError(f"{path}: {key}: expected a list, got {type(data[key]).__name__}")
    known: dict[str, tuple[int, str | None]] = {}
    for i, v in enumerate(data["videos"]):
        if not isinstance(v, dict):
            raise MeltrError(f"{path}: videos[{i}]: expected an object, got {type(v).__name__}")
        if not isinstance(v.get("video_id"), str):
            raise MeltrError(f"{path}: videos[{i}]: expected key 'video_id' with a string value")
        split = v.get("split")
        if need_split:
            if "split" not in v:
                raise MeltrError(f"{path}: videos[{i}]: expected key 'split'")
            if split not in OFFICIAL_SPLITS:
                raise MeltrError(f"{path}: videos[{i}]: split: expected one of {', '.join(OFFICIAL_SPLITS)}, "
                                 f"got {split!r}")
            if v["video_id"] in known:
                raise MeltrError(f"{path}: videos[{i}]: video_id {v['video_id']!r} listed twice")
        known[v["video_id"]] = (i, split)
    captions: dict[str, list[str]] = {}
    for i, s in enumerate(data["sentences"]):
        if not isinstance(s, dict):
            raise MeltrError(f"{path}: sentences[{i}]: expected an object, got {type(s).__name__}")
        for key in ("video_id", "caption"):
            if key not in s:
                raise MeltrError(f"{path}: sentences[{i}]: expected key {key!r}")
        if not isinstance(s["video_id"], str):
            raise MeltrError(f"{path}: sentences[{i}]: video_id: expected a string, got {s['video_id']!r}")
        if not isinstance(s["caption"], str):
            raise MeltrError(f"{path}: sentences[{i}]: caption: expected a string, got {type(s['caption']).__name__}")
        captions.setdefault(s["video_id"], []).append(s["caption"])
    return known, captions


def read_csv_columns(path: str, required: tuple[str, ...]) -> list[tuple[int, dict[str, str]]]:
    """Read a csv by column name; return [(file line number, row)]. Accepts ',' or ';' separators."""
    import pandas as pd

    try:
        with open(path, encoding="utf-8") as f:
            header = f.readline()
    except FileNotFoundError:
        raise MeltrError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise MeltrError(f"{path}: cannot read ({getattr(exc, 'strerror', None) or exc})") from None
    # A public copy of the JSFUSION file was re-saved with ';'. Sniff from the header only: captions may hold commas.
    sep = ";" if header.count(";") > header.count(",") else ","
    try:
        df = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, skipinitialspace=True)
    except pd.errors.EmptyDataError:
        raise MeltrError(f"{path}: expected a csv with header {','.join(required)}, got an empty file") from None
    except (pd.errors.ParserError, ValueError) as exc:
        raise MeltrError(f"{path}: expected a {sep!r}-separated csv ({str(exc).strip().splitlines()[0]})") from None
    df.columns = [str(c).strip() for c in df.columns]
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise MeltrError(f"{path}: expected column(s) {', '.join(map(repr, missing))}, got columns {list(df.columns)}")
    rows = []
    for i, row in enumerate(df[list(required)].to_dict("records")):
        line = i + 2  # header is line 1 (assumes no quoted multi-line fields, true for these files)
        for c in required:
            row[c] = row[c].strip()
            if not row[c]:
                raise MeltrError(f"{path}: line {line}: expected a non-empty {c!r}")
        rows.append((line, row))
    return rows


# ----------------------------------------------------------------------------------------------- Frozen variant

def _first_existing(candidates: list[str]) -> str:
    for c in candidates:
        if os.path.exists(c):
            return c
    return candidates[0]


def _read_list(path: str) -> list[tuple[int, str]]:
    """One video id a line, no header (Frozen reads them with pd.read_csv(names=['videoid'])); blank lines skipped."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        raise MeltrError(f"{path}: file not found (expected a list of video ids, one a line)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise MeltrError(f"{path}: cannot read ({getattr(exc, 'strerror', None) or exc})") from None
    out = [(n, ln.strip()) for n, ln in enumerate(lines, 1) if ln.strip()]
    for n, vid in out:
        if any(ch in vid for ch in ",; \t"):
            raise MeltrError(f"{path}: line {n}: expected one video id a line, got {vid!r}")
    return out


def _read_frozen_json(path: str) -> dict[str, list[str]]:
    """MSR_VTT.json -> {image_id: captions in file order} (Frozen's groupby(image_id) keeps that order)."""
    data = read_json_object(path, missing="the Frozen-in-Time MSRVTT annotation file")
    anns = data.get("annotations")
    if not isinstance(anns, list):
        got = "no such key" if "annotations" not in data else type(anns).__name__
        raise MeltrError(f"{path}: expected top-level key 'annotations' holding a list, got {got}")
    captions: dict[str, list[str]] = {}
    for i, a in enumerate(anns):
        if not isinstance(a, dict):
            raise MeltrError(f"{path}: annotations[{i}]: expected an object, got {type(a).__name__}")
        for key in ("image_id", "caption"):
            if key not in a:
                raise MeltrError(f"{path}: annotations[{i}]: expected key {key!r}")
            if not isinstance(a[key], str):
                raise MeltrError(f"{path}: annotations[{i}]: {key}: expected a string, got {a[key]!r}")
        captions.setdefault(a["image_id"], []).append(a["caption"])
    return captions


def _read_caption_idx(path: str) -> dict[str, int]:
    """jsfusion_val_caption_idx.pkl -> {video_id: caption index} (a pickled dict or pandas Series)."""
    import numbers

    import numpy as np

    try:
        obj = np.load(path, allow_pickle=True)
    except FileNotFoundError:
        raise MeltrError(f"{path}: file not found (expected the 1k-A test caption index pickle)") from None
    except Exception as exc:
        raise MeltrError(f"{path}: expected a pickle of dict video_id -> caption index "
                         f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'unreadable'})") from None
    if isinstance(obj, np.ndarray) and obj.dtype == object and obj.ndim == 0:
        obj = obj.item()
    if hasattr(obj, "to_dict") and not isinstance(obj, dict):  # a pandas Series
        obj = obj.to_dict()
    if not isinstance(obj, dict):
        raise MeltrError(f"{path}: expected a dict video_id -> caption index, got {type(obj).__name__}")
    for k, v in obj.items():
        if not isinstance(k, str) or not isinstance(v, numbers.Integral) or isinstance(v, bool) or v < 0:
            raise MeltrError(f"{path}: [{k!r}]: expected a video id mapped to a caption index >= 0, got {v!r}")
    return {k: int(v) for k, v in obj.items()}


def _load_frozen(root: str, video_dir: str, train_list: str) -> dict[str, list[dict]]:
    if train_list not in FROZEN_CUTS:
        raise MeltrError(f"train_list: expected one of {', '.join(FROZEN_CUTS)} for variant 'frozen', "
                         f"got {train_list!r}")
    json_path = _first_existing([os.path.join(root, p) for p in FROZEN_JSON])
    captions = _read_frozen_json(json_path)
    list_dir = os.path.join(root, FROZEN_LIST_DIR)
    if not os.path.isdir(list_dir):
        list_dir = root  # MELTR-All-in-one keeps the lists beside MSR_VTT.json
    train_names, test_name, idx_name = FROZEN_CUTS[train_list]
    train_path = _first_existing([os.path.join(list_dir, n) for n in train_names])
    test_path = os.path.join(list_dir, test_name)
    vdir = os.path.join(video_dir, "all") if os.path.isdir(os.path.join(root, video_dir, "all")) else video_dir

    def listed(path: str) -> list[tuple[int, str]]:
        rows = _read_list(path)
        for n, vid in rows:
            if not captions.get(vid):
                raise MeltrError(f"{path}: line {n}: video_id {vid!r} has no caption in {json_path}: annotations")
        return rows

    train = [_record(vid, _video_path(root, vdir, vid), "train", list(captions[vid])) for _, vid in listed(train_path)]
    test_rows = listed(test_path)
    idx = _read_caption_idx(os.path.join(list_dir, idx_name)) if idx_name else None
    test = []
    for n, vid in test_rows:
        k = 0
        if idx is not None:
            where = os.path.join(list_dir, idx_name)
            if vid not in idx:
                raise MeltrError(f"{where}: expected a caption index for video_id {vid!r} ({test_path} line {n})")
            k = idx[vid]
            if k >= len(captions[vid]):
                raise MeltrError(f"{where}: [{vid!r}]: expected a caption index < {len(captions[vid])} "
                                 f"(its captions in {json_path}), got {k}")
        test.append(_record(vid, _video_path(root, vdir, vid), "test", [captions[vid][k]]))
    return {"train": train, "test": test}
