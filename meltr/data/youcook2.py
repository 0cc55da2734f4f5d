"""Load YouCook2 clip segments into normalised records (docs/datasets.md §2).

Variants (files under `root`):
  official  youcookii_annotations_trainval.json (also found in root/annotations/, as the official tarball has it):
              {"database": {<youtube_id>: {"duration", "subset": "training"|"validation", "recipe_type",
                                           "video_url", "annotations": [{"id", "segment": [s, e], "sentence"}]}}}
            videos at <video_dir>/<subset>/<recipe_type>/<youtube_id>.<mp4|mkv|webm> (the first that exists;
            .mp4 when none does: many YouTube links are dead, so existence is not checked here).
  univl     UniVL's youcookii_{train,val}.csv (header video_id,feature_file) and its data pickle
            youcookii_data.no_transcript.pickle (or MELTR's youcookii_data.transcript[_v4].pickle; first found,
            or `data_pickle=`): {video_id: {"start", "end", "text", "transcript"}} of equal-length object arrays.
            The csv gives neither subset nor recipe, so the video path is looked up by file name anywhere under
            <video_dir> (either layout), else <video_dir>/<video_id>.mp4. UniVL itself reads S3D features
            (meltr.features.s3d) keyed by `feature_file`, which records of this variant carry.

Records (meltr/data/records.py), one per clip segment, in file order; retrieval and captioning alike:
  id, video_id  f"{youtube_id}_{segment id}" (univl: the segment's index in the arrays, UniVL's sub_id). Each clip
                is its own retrieval candidate, so clips of one long video compete with each other.
  video         the long raw video; start/end the segment in seconds; fps None.
  split         "train" (subset training / youcookii_train.csv) or "val" (validation / youcookii_val.csv).
                Papers evaluate on the val clips: the test sentences are not public.
  captions      [sentence]: one reference per clip for both tasks.
  univl only:   feature_file (key in youcookii_videos_features.pickle), transcript ("" for UniVL's 'NONE').
"""
from __future__ import annotations

import math
import numbers
import os
import pickle

from ..errors import MeltrError
from ..io import read_json_object
from .msrvtt import read_csv_columns
from .records import make_record

TASKS = {"retrieval": "retrieval", "captioning": "captioning"}
VARIANTS = ("official", "univl")
ANNOTATIONS_JSON = "youcookii_annotations_trainval.json"
SUBSETS = {"training": "train", "validation": "val"}
VIDEO_EXTS = (".mp4", ".mkv", ".webm")
UNIVL_CSV = {"train": "youcookii_train.csv", "val": "youcookii_val.csv"}
UNIVL_DATA = ("youcookii_data.no_transcript.pickle", "youcookii_data.transcript.pickle",
              "youcookii_data.transcript_v4.pickle")


def load_youcook2(root: str | os.PathLike, task: str, *, variant: str = "official", video_dir: str = "raw_videos",
                  data_pickle: str | None = None) -> dict[str, list[dict]]:
    """Return {"train": [...], "val": [...]} clip records for `task` ("retrieval" or "captioning").

    data_pickle (univl only): the data pickle to read, relative to root (default: the first of UNIVL_DATA found).
    Malformed input raises a one-line MeltrError naming the file, the video/segment and what was expected.
    """
    root = str(root)
    if task not in TASKS:
        raise MeltrError(f"youcook2 task: expected one of {', '.join(TASKS)}, got {task!r}")
    if variant == "official":
        return _load_official(root, video_dir)
    if variant == "univl":
        return _load_univl(root, video_dir, data_pickle)
    raise MeltrError(f"youcook2 variant: expected one of {', '.join(VARIANTS)}, got {variant!r}")


def _is_number(x) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(float(x))


def _check_segment(where: str, start, end) -> tuple[float, float]:
    if not (_is_number(start) and _is_number(end)):
        raise MeltrError(f"{where}: expected two numbers of seconds [start, end], got {[start, end]!r}")
    if start < 0 or end <= start:
        raise MeltrError(f"{where}: expected 0 <= start < end, got [{start}, {end}]")
    return float(start), float(end)


def _resolve_video(base: str) -> str:
    """base without extension -> the first existing base+ext, else base + '.mp4'."""
    for ext in VIDEO_EXTS:
        if os.path.isfile(base + ext):
            return base + ext
    return base + VIDEO_EXTS[0]


def _load_official(root: str, video_dir: str) -> dict[str, list[dict]]:
    path = os.path.join(root, ANNOTATIONS_JSON)
    alt = os.path.join(root, "annotations", ANNOTATIONS_JSON)
    if not os.path.exists(path) and os.path.exists(alt):
        path = alt
    data = read_json_object(path, missing="the YouCook2 annotation file (official download)")
    db = data.get("database")
    if not isinstance(db, dict):
        got = "no such key" if "database" not in data else type(db).__name__
        raise MeltrError(f"{path}: expected top-level key 'database' holding an object, got {got}")
    out: dict[str, list[dict]] = {"train": [], "val": []}
    for vid, entry in db.items():
        where = f"{path}: database[{vid!r}]"
        if not vid:
            raise MeltrError(f"{where}: expected a non-empty YouTube id as key")
        _object_with(entry, ("subset", "recipe_type", "annotations"), where)
        subset = entry["subset"]
        if not isinstance(subset, str) or subset not in SUBSETS:
            raise MeltrError(f"{where}: subset: expected 'training' or 'validation' "
                             f"(the test subset has no sentences), got {subset!r}")
        recipe = entry["recipe_type"]
        if isinstance(recipe, bool) or not isinstance(recipe, (str, int)) or str(recipe) == "":
            raise MeltrError(f"{where}: recipe_type: expected a recipe id string like '113', got {recipe!r}")
        anns = entry["annotations"]
        if not isinstance(anns, list):
            raise MeltrError(f"{where}: annotations: expected a list, got {type(anns).__name__}")
        split = SUBSETS[subset]
        video = _resolve_video(os.path.join(root, video_dir, subset, str(recipe), vid))
        seen: set[str] = set()
        for i, ann in enumerate(anns):
            awhere = f"{where}: annotations[{i}]"
            _object_with(ann, ("id", "segment", "sentence"), awhere)
            seg_id = ann["id"]
            if isinstance(seg_id, bool) or not isinstance(seg_id, (int, str)) or str(seg_id) == "":
                raise MeltrError(f"{awhere}: id: expected an integer segment id, got {seg_id!r}")
            if str(seg_id) in seen:
                raise MeltrError(f"{awhere}: id: expected ids unique within the video, got {seg_id!r} twice")
            seen.add(str(seg_id))
            seg = ann["segment"]
            if not isinstance(seg, (list, tuple)) or len(seg) != 2:
                raise MeltrError(f"{awhere}: segment: expected two numbers of seconds [start, end], got {seg!r}")
            start, end = _check_segment(f"{awhere}: segment", *seg)
            if not isinstance(ann["sentence"], str):
                raise MeltrError(f"{awhere}: sentence: expected a string, got {type(ann['sentence']).__name__}")
            clip = f"{vid}_{seg_id}"
            out[split].append(make_record(id=clip, video_id=clip, video=video, split=split, start=start, end=end,
                                          captions=[ann["sentence"]]))
    return out


def _find_data_pickle(root: str, data_pickle: str | None) -> str:
    if data_pickle is not None:
        path = os.path.join(root, data_pickle)
        if not os.path.isfile(path):
            raise MeltrError(f"{path}: file not found (expected UniVL's YouCook2 data pickle)")
        return path
    for name in UNIVL_DATA:
        if os.path.isfile(os.path.join(root, name)):
            return os.path.join(root, name)
    raise MeltrError(f"{os.path.join(root, UNIVL_DATA[0])}: file not found (expected UniVL's YouCook2 data "
                     f"pickle; also looked for {', '.join(UNIVL_DATA[1:])})")


def _read_pickle(path: str, expected: str):
    try:
        with open(path, "rb") as f:
            return pickle.load(f)
    except OSError as exc:
        raise MeltrError(f"{path}: cannot read ({exc.strerror})") from None
    except Exception as exc:  # UnpicklingError, EOFError, a class that is not importable, ...
        raise MeltrError(f"{path}: expected a pickle of {expected} ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else 'truncated or not a pickle'})") from None


def _as_list(where: str, key: str, value) -> list:
    import numpy as np

    if isinstance(value, np.ndarray):
        if value.ndim != 1:
            raise MeltrError(f"{where}: {key}: expected a 1-D array, got shape {value.shape}")
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return list(value)
    raise MeltrError(f"{where}: {key}: expected an array, got {type(value).__name__}")


def _load_univl(root: str, video_dir: str, data_pickle: str | None) -> dict[str, list[dict]]:
    rows = {split: (os.path.join(root, name), read_csv_columns(os.path.join(root, name), ("video_id", "feature_file")))
            for split, name in UNIVL_CSV.items()}
    path = _find_data_pickle(root, data_pickle)
    data = _read_pickle(path, "dict video_id -> {start, end, text, transcript} arrays")
    if not isinstance(data, dict):
        raise MeltrError(f"{path}: expected a dict video_id -> {{start, end, text, transcript}}, "
                         f"got {type(data).__name__}")
    index = _video_index(os.path.join(root, video_dir))
    out: dict[str, list[dict]] = {"train": [], "val": []}
    for split, (csv_path, csv_rows) in rows.items():
        for line, row in csv_rows:
            vid = row["video_id"]
            if vid not in data:
                raise MeltrError(f"{csv_path}: line {line}: video_id {vid!r} has no entry in {path}")
            where = f"{path}: [{vid!r}]"
            entry = data[vid]
            if not isinstance(entry, dict):
                raise MeltrError(f"{where}: expected a dict with keys start, end, text, got {type(entry).__name__}")
            missing = [k for k in ("start", "end", "text") if k not in entry]
            if missing:
                raise MeltrError(f"{where}: expected key(s) {', '.join(map(repr, missing))}")
            cols = {k: _as_list(where, k, entry[k]) for k in ("start", "end", "text", "transcript") if k in entry}
            n = len(cols["start"])
            bad = {k: len(v) for k, v in cols.items() if len(v) != n}
            if bad:
                raise MeltrError(f"{where}: expected start, end, text (and transcript) of equal length, got "
                                 + ", ".join(f"{k}: {len(v)}" for k, v in cols.items()))
            video = index.get(vid) or os.path.join(root, video_dir, vid + VIDEO_EXTS[0])
            for k in range(n):
                swhere = f"{where}: segment {k}"
                start, end = _check_segment(swhere, cols["start"][k], cols["end"][k])
                text = cols["text"][k]
                if not isinstance(text, str):
                    raise MeltrError(f"{swhere}: text: expected a string, got {type(text).__name__}")
                transcript = cols["transcript"][k] if "transcript" in cols else ""
                if not isinstance(transcript, str):
                    raise MeltrError(f"{swhere}: transcript: expected a string, got {type(transcript).__name__}")
                clip = f"{vid}_{k}"
                out[split].append(make_record(
                    id=clip, video_id=clip, video=video, split=split, start=start, end=end, captions=[text],
                    feature_file=row["feature_file"],
                    transcript="" if transcript.strip().upper() == "NONE" else transcript))
    return out


def _video_index(folder: str) -> dict[str, str]:
    """{file stem: path} of the videos anywhere under folder; .mp4 preferred over .mkv over .webm."""
    index: dict[str, tuple[int, str]] = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        for name in sorted(filenames):
            stem, ext = os.path.splitext(name)
            if ext.lower() in VIDEO_EXTS:
                rank = VIDEO_EXTS.index(ext.lower())
                if stem not in index or rank < index[stem][0]:
                    index[stem] = (rank, os.path.join(dirpath, name))
    return {stem: p for stem, (_, p) in index.items()}


def _object_with(obj, keys: tuple[str, ...], where: str) -> None:
    """A JSON object holding `keys`, or a one-line MeltrError naming `where` and what is missing."""
    if not isinstance(obj, dict):
        raise MeltrError(f"{where}: expected an object, got {type(obj).__name__}")
    missing = [k for k in keys if k not in obj]
    if missing:
        raise MeltrError(f"{where}: expected key(s) {', '.join(map(repr, missing))}")
