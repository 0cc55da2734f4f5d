"""Load MSRVTT retrieval splits from the CLIP4Clip/UniVL files into normalised records (docs/datasets.md §1).

Input under `root`: MSRVTT_data.json, MSRVTT_train.{9k,7k}.csv, MSRVTT_JSFUSION_test.csv, <video_dir>/<id>.mp4.
Record: {"video_id": "video12", "video": "<root>/<video_dir>/video12.mp4", "captions": [str, ...], "split": ...}.
Train records carry all captions of a video; test records (1k-A) carry the one JSFUSION sentence.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import MeltrError
from ..io import read_json_object, write_json, write_jsonl

DATA_JSON = "MSRVTT_data.json"
TRAIN_CSV = {"9k": "MSRVTT_train.9k.csv", "7k": "MSRVTT_train.7k.csv"}
TEST_CSV = "MSRVTT_JSFUSION_test.csv"


def load_msrvtt(root: str | os.PathLike, *, video_dir: str = "videos", train_list: str = "9k") -> dict[str, list[dict]]:
    """Return {"train": [...], "test": [...]} records, in the order of the csv files."""
    root = str(root)
    if train_list not in TRAIN_CSV:
        raise MeltrError(f"train_list: expected '9k' or '7k' (reads {os.path.join(root, TRAIN_CSV['9k'])} or "
                         f"{TRAIN_CSV['7k']}), got {train_list!r}")
    data_path = os.path.join(root, DATA_JSON)
    known, captions = _read_data_json(data_path)

    def video_path(vid: str) -> str:
        # os.path.join drops root when video_dir is absolute, as intended
        mp4 = os.path.join(root, video_dir, vid + ".mp4")
        webm = mp4[:-4] + ".webm"  # CLIP4Clip falls back to .webm when the .mp4 is absent
        return webm if not os.path.exists(mp4) and os.path.exists(webm) else mp4

    train_path = os.path.join(root, TRAIN_CSV[train_list])
    train = []
    for line, row in _read_csv(train_path, ("video_id",)):
        vid = row["video_id"]
        if vid not in known:
            raise MeltrError(f"{train_path}: line {line}: video_id {vid!r} has no entry in {data_path}: videos")
        if not captions.get(vid):
            raise MeltrError(f"{train_path}: line {line}: video_id {vid!r} has no caption in {data_path}: sentences")
        train.append({"video_id": vid, "video": video_path(vid), "captions": list(captions[vid]), "split": "train"})

    test_path = os.path.join(root, TEST_CSV)
    test = []
    for line, row in _read_csv(test_path, ("video_id", "sentence")):
        vid, sentence = row["video_id"], row["sentence"]
        if vid not in known:
            raise MeltrError(f"{test_path}: line {line}: video_id {vid!r} has no entry in {data_path}: videos")
        test.append({"video_id": vid, "video": video_path(vid), "captions": [sentence], "split": "test"})
    return {"train": train, "test": test}


def prepare_msrvtt(root: str | os.PathLike, out_dir: str | os.PathLike, *, video_dir: str = "videos",
                   train_list: str = "9k", check_media: bool = True) -> dict:
    """Write out_dir/{train,test}.jsonl and out_dir/summary.json; return the summary.

    With check_media, a referenced video that does not exist is an error (existence only: nothing is decoded).
    Everything is validated before anything is written, and each file is written atomically.
    """
    splits = load_msrvtt(root, video_dir=video_dir, train_list=train_list)
    summary: dict = {"root": str(root), "video_dir": video_dir, "train_list": train_list}
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
    write_jsonl(out_dir / "train.jsonl", splits["train"])
    write_jsonl(out_dir / "test.jsonl", splits["test"])
    write_json(out_dir / "summary.json", summary)  # last: its presence marks a complete preparation
    return summary


def _read_data_json(path: str) -> tuple[set[str], dict[str, list[str]]]:
    """Validate MSRVTT_data.json; return (known video ids, {video_id: captions in file order})."""
    data = read_json_object(path, missing="the MSRVTT annotation file")
    for key in ("videos", "sentences"):
        if key not in data:
            raise MeltrError(f"{path}: expected top-level key {key!r}")
        if not isinstance(data[key], list):
            raise MeltrError(f"{path}: {key}: expected a list, got {type(data[key]).__name__}")
    known: set[str] = set()
    for i, v in enumerate(data["videos"]):
        if not isinstance(v, dict):
            raise MeltrError(f"{path}: videos[{i}]: expected an object, got {type(v).__name__}")
        if not isinstance(v.get("video_id"), str):
            raise MeltrError(f"{path}: videos[{i}]: expected key 'video_id' with a string value")
        known.add(v["video_id"])
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


def _read_csv(path: str, required: tuple[str, ...]) -> list[tuple[int, dict[str, str]]]:
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
