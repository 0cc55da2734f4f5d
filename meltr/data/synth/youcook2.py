"""Synthetic YouCook2 in the real on-disk formats: the official release and UniVL's files (docs/datasets.md §2, §10).

Each "recipe video" is a long mp4 with a few annotated segments. In each segment one shape moves across a plain
dark background (a different (colour, shape, motion) event per segment, as in synth.py); between segments
the frame is empty. The segment's sentence describes its event, so clip retrieval and captioning are
learnable, and clips of the same video (which compete with each other in YouCook2 retrieval) differ.

Files written under `root`:
  youcookii_annotations_trainval.json                  official schema: database -> {duration, subset,
                                                       recipe_type, video_url, annotations[{id, segment, sentence}]}
  splits/train_list.txt, splits/val_list.txt           one "recipe_type/youtube_id" a line
  label_foodtype.csv                                   "id,name", no header
  raw_videos/{training,validation}/<recipe_type>/<youtube_id>.mp4
  youcookii_train.csv, youcookii_val.csv               UniVL: "video_id,feature_file"
  youcookii_data.no_transcript.pickle                  UniVL: {video_id: {start, end, text, transcript}} object arrays
  youcookii_videos_features.pickle                     UniVL: {video_id: float32 (ceil(duration), 1024)}, 1 row/s
plus `synth_attributes.json` (ground truth per video and segment), which the real data has not.

The "S3D" features are a fixed random linear projection (the same for every seed) of each second's frames,
pooled to 8x8 pixels separately for its first and second half, so they carry colour, shape, position and
direction of motion, and a feature-based model (UniVL) can learn the task as well as a pixel-based one.
"""
from __future__ import annotations

import json
import math
import os
import pickle
import sys
from pathlib import Path

import numpy as np

from ...errors import MeltrError
from ...io import atomic_path, write_json, write_text
from .common import COMBOS, ID_CHARS, captions, check_int, csv_text, cycle, render_params, render_video, write_mp4

FEATURE_DIM = 1024  # S3D's pooled feature size
_PROJ_SEED = 20_220_318  # fixed: the feature projection does not depend on the dataset seed
_GRID = 8  # pooled frame resolution feeding the projection
_SUBSETS = (("train", "training"), ("val", "validation"))
_DISHES = ("shape soup", "colour salad", "geometry stew", "pixel pancakes", "motion noodles", "square omelette",
           "circle pizza", "triangle sandwich", "cross buns", "dot dumplings")


def synth_youcook2(root: str | os.PathLike, *, n_train_videos: int = 40, n_val_videos: int = 14,
                   segments_per_video: int = 3, seed: int = 0, size: int = 48, fps: int = 8) -> dict:
    """Write a synthetic YouCook2 under `root`; return {split: {"videos", "clips", "captions"}}.

    Segments last 2-3 s with 1-2 s gaps, so a video lasts about 4 s per segment. Everything except the mp4
    bytes is byte-identical for the same arguments (the mp4s too in practice: one encoder thread).
    """
    for name, val, lo in (("n_train_videos", n_train_videos, 1), ("n_val_videos", n_val_videos, 1),
                          ("segments_per_video", segments_per_video, 1), ("seed", seed, 0), ("size", size, 16),
                          ("fps", fps, 1)):
        check_int("synth_youcook2", name, val, lo)
    if segments_per_video > len(COMBOS):
        raise MeltrError(f"synth_youcook2: segments_per_video: expected at most {len(COMBOS)} (distinct events "
                         f"per video), got {segments_per_video}")
    if size % 2:
        raise MeltrError(f"synth_youcook2: size: expected an even number (yuv420p needs it), got {size}")
    root = Path(root)
    rng = np.random.default_rng(seed)
    recipes = sorted(int(r) for r in rng.choice(np.arange(101, 427), size=min(6, len(_DISHES)), replace=False))
    ids = _unique_ids(rng)

    videos: list[dict] = []
    summary = {}
    for split, subset in _SUBSETS:
        n = n_train_videos if split == "train" else n_val_videos
        combos = cycle(rng, list(COMBOS))  # per split: val clips get distinct events while there are <= 96
        for _ in range(n):
            videos.append(_make_video(rng, next(ids), subset, str(recipes[int(rng.integers(len(recipes)))]),
                                      combos, segments_per_video, size, fps))
        summary[split] = {"videos": n, "clips": n * segments_per_video, "captions": n * segments_per_video}

    # Media first, annotation files last: an interrupted run leaves no annotation json that points at
    # missing videos.
    from tqdm import tqdm

    features = {}
    for v in tqdm(videos, desc="synth youcook2 videos", unit="video", file=sys.stderr):
        frames = _render(v, size, fps)
        write_mp4(root / "raw_videos" / v["subset"] / v["recipe_type"] / f"{v['id']}.mp4", frames, fps)
        features[v["id"]] = _features(frames, fps, math.ceil(v["duration"]))

    order = rng.permutation(len(videos))  # the real database is not grouped by subset
    database = {}
    for i in order:
        v = videos[int(i)]
        database[v["id"]] = {
            "duration": v["duration"], "subset": v["subset"], "recipe_type": v["recipe_type"],
            "video_url": f"https://www.youtube.com/watch?v={v['id']}",
            "annotations": [{"id": k, "segment": [s["start"], s["end"]], "sentence": s["sentence"]}
                            for k, s in enumerate(v["segments"])],
        }
    data = {v["id"]: {
        "start": np.array([s["start"] for s in v["segments"]], dtype=object),
        "end": np.array([s["end"] for s in v["segments"]], dtype=object),
        "text": np.array([s["sentence"] for s in v["segments"]], dtype=object),
        "transcript": np.array(["NONE"] * len(v["segments"]), dtype=object),
    } for v in videos}
    _write_pickle(root / "youcookii_videos_features.pickle", features)
    _write_pickle(root / "youcookii_data.no_transcript.pickle", data)
    for split, subset in _SUBSETS:
        vids = [v for v in videos if v["subset"] == subset]
        write_text(root / "splits" / f"{split}_list.txt", "".join(f"{v['recipe_type']}/{v['id']}\n" for v in vids))
        write_text(root / f"youcookii_{split}.csv",
                   csv_text([("video_id", "feature_file")] + [(v["id"], v["id"]) for v in vids]))
    write_text(root / "label_foodtype.csv", csv_text([(r, _DISHES[k]) for k, r in enumerate(recipes)]))
    write_text(root / "youcookii_annotations_trainval.json", json.dumps({"database": database}) + "\n")
    write_json(root / "synth_attributes.json", {v["id"]: {
        "subset": v["subset"], "recipe_type": v["recipe_type"], "duration": v["duration"], "n_frames": v["n_frames"],
        "segments": [{k: s[k] for k in ("start", "end", "colour", "shape", "motion", "sentence")}
                     for s in v["segments"]]} for v in videos})
    return summary


def _make_video(rng: np.random.Generator, vid: str, subset: str, recipe: str, combos, n_seg: int, size: int,
                fps: int) -> dict:
    """Timeline in whole seconds: lead 0-1 s, segments of 2-3 s separated by 1-2 s gaps, then a tail of a
    fraction of a frame short of 2 s, so the duration is rarely a whole number of seconds."""
    t = int(rng.integers(0, 2))
    segments, used = [], set()
    for k in range(n_seg):
        combo = next(combos)
        while combo in used:  # distinct events within a video (a new pass of the cycle may repeat one)
            combo = next(combos)
        used.add(combo)
        start, end = t, t + int(rng.integers(2, 4))
        colour, shape, motion = combo
        segments.append({"start": start, "end": end, "colour": colour, "shape": shape, "motion": motion,
                         "sentence": captions(rng, colour, shape, motion, 1)[0],
                         "render": render_params(rng, size, (end - start) * fps)})
        t = end + (int(rng.integers(1, 3)) if k + 1 < n_seg else 0)
    n_frames = t * fps + int(rng.integers(1, 2 * fps))
    return {"id": vid, "subset": subset, "recipe_type": recipe, "segments": segments, "n_frames": n_frames,
            "duration": round(n_frames / fps, 3), "bg": int(rng.integers(15, 60))}


def _render(v: dict, size: int, fps: int) -> np.ndarray:
    frames = np.full((v["n_frames"], size, size, 3), v["bg"], np.uint8)
    for s in v["segments"]:
        n = (s["end"] - s["start"]) * fps
        p = dict(s["render"], bg=v["bg"])
        frames[s["start"] * fps: s["end"] * fps] = render_video(size, n, s["colour"], s["shape"], s["motion"], p)
    return frames


def _features(frames: np.ndarray, fps: int, n_rows: int) -> np.ndarray:
    """(n_rows, 1024) float32, one row per second [t, t+1): a fixed projection of the pooled first and second
    halves of that second's frames."""
    t, size = frames.shape[:2]
    edges = np.linspace(0, size, _GRID + 1).round().astype(int)
    pooled = np.add.reduceat(np.add.reduceat(frames.astype(np.float64), edges[:-1], axis=1), edges[:-1], axis=2)
    cnt = np.diff(edges)
    pooled = (pooled / (cnt[:, None, None] * cnt[None, :, None]) / 255.0).reshape(t, -1)  # (T, 8*8*3)
    rows = []
    for r in range(n_rows):
        w = pooled[r * fps: (r + 1) * fps]
        if not len(w):  # cannot happen while n_rows = ceil(duration); kept for safety
            w = pooled[-1:]
        h = (len(w) + 1) // 2
        rows.append(np.concatenate([w[:h].mean(0), w[h:].mean(0) if len(w) > h else w[:h].mean(0)]))
    x = np.stack(rows)
    proj = np.random.default_rng(_PROJ_SEED).standard_normal((x.shape[1], FEATURE_DIM)) / math.sqrt(x.shape[1])
    return (x @ proj).astype(np.float32)


def _write_pickle(path: Path, obj) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            pickle.dump(obj, f, protocol=4)


def _unique_ids(rng: np.random.Generator):
    """11-character YouTube-style ids, never repeated."""
    seen: set[str] = set()
    while True:
        vid = "".join(rng.choice(ID_CHARS, size=11))
        if vid not in seen:
            seen.add(vid)
            yield vid
