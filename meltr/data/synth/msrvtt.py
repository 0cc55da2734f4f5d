"""Synthetic MSRVTT in the real CLIP4Clip/UniVL on-disk format (docs/datasets.md §1, §10).

Each video shows one large saturated shape moving over a plain dark grey background; its captions name the
shape's colour, kind and direction of motion. That makes retrieval learnable by a small model from a few
low-resolution frames, so the training code can be tested end to end without the real 10k YouTube clips.

Files written under `root` (same names and schemas as the real release):
  MSRVTT_data.json, MSRVTT_train.9k.csv, MSRVTT_train.7k.csv, MSRVTT_JSFUSION_test.csv, videos/video{n}.mp4
plus one file the real data has not: `synth_attributes.json` ({video_id: {colour, shape, motion}}), so tests
and probes can check what a model learned without parsing captions.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np

from ...errors import MeltrError
from ...io import write_json, write_text
from .common import COMBOS, ID_CHARS, captions, csv_text, render_params, render_video, write_mp4



# Official split fractions of the real 10k videos: 6513 train / 497 validate / 2990 test.
_TRAIN_FRAC, _VAL_FRAC = 6513 / 10000, 497 / 10000


def synth_msrvtt(root: str | os.PathLike, *, n_train: int = 240, n_test: int = 60, captions_per_video: int = 5,
                 seconds: float = 3.0, fps: int = 8, size: int = 48, seed: int = 0) -> dict:
    """Write a synthetic MSRVTT under `root`; return counts.

    n_train videos go to the 9k train list, n_test to the 1k-A-style JSFUSION test set (one caption each).
    Everything except the mp4 bytes is byte-identical for the same arguments.
    """
    _check_args(n_train, n_test, captions_per_video, seconds, fps, size)
    root = Path(root)
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    n_frames = max(1, int(round(seconds * fps)))

    # Official split by list position like the real file, scaled down, with at least n_test official test videos.
    n_off_test = max(n - int(round(n * _TRAIN_FRAC)) - int(round(n * _VAL_FRAC)), n_test)
    n_trval = n - n_off_test
    n_val = int(round(n_trval * _VAL_FRAC / (_TRAIN_FRAC + _VAL_FRAC)))
    if n_trval >= 2:
        n_val = max(n_val, 1)  # keep a 'validate' split present, as loaders may expect it
    n_off_train = n_trval - n_val
    splits = ["train"] * n_off_train + ["validate"] * n_val + ["test"] * n_off_test
    test_idx = list(range(n - n_test, n))  # the 1k-A-style test set: the last n_test videos
    train9k_idx = list(range(n - n_test))
    train7k_idx = list(range(n_trval))

    attrs = _assign_attributes(rng, n, test_idx)

    videos, sentences = [], []
    for i in range(n):
        start = float(np.round(rng.uniform(0.0, 120.0), 2))
        fake_id = "".join(rng.choice(ID_CHARS, size=11))
        videos.append({
            "id": i, "video_id": f"video{i}", "category": int(rng.integers(0, 20)),
            "url": f"https://www.youtube.com/watch?v={fake_id}",
            "start time": start, "end time": float(np.round(start + rng.uniform(10.0, 30.0), 2)),
            "split": splits[i],
        })
        for cap in captions(rng, *attrs[i], captions_per_video):
            sentences.append({"video_id": f"video{i}", "caption": cap})
    # The real file's sentences are not grouped by video; shuffle so loaders must group by video_id.
    order = rng.permutation(len(sentences))
    sentences = [dict(sen_id=k, **sentences[j]) for k, j in enumerate(order)]

    # One caption per test video, chosen like the real JSFUSION file (any one of the video's captions).
    caps_of: dict[str, list[str]] = {}
    for s in sentences:
        caps_of.setdefault(s["video_id"], []).append(s["caption"])
    jsfusion = [(f"ret{k}", f"msr{i}", f"video{i}", caps_of[f"video{i}"][int(rng.integers(len(caps_of[f"video{i}"])))])
                for k, i in enumerate(test_idx)]

    # Per-video rendering parameters are drawn up front so the json/csv do not depend on video encoding.
    render = [render_params(rng, size, n_frames) for _ in range(n)]

    # Videos first, annotation files last: an interrupted run leaves no MSRVTT_data.json, so it cannot be
    # mistaken for a complete dataset.
    from tqdm import tqdm

    (root / "videos").mkdir(parents=True, exist_ok=True)
    for i in tqdm(range(n), desc="synth msrvtt videos", unit="video", file=sys.stderr):
        frames = render_video(size, n_frames, *attrs[i], render[i])
        write_mp4(root / "videos" / f"video{i}.mp4", frames, fps)

    info = {"year": "2016", "version": "1.0", "contributor": "meltr (synthetic)", "data_created": "synthetic",
            "description": f"synthetic MSR-VTT stand-in: {n} videos, seed {seed}; coloured shapes moving"}
    write_text(root / "MSRVTT_data.json",
               json.dumps({"info": info, "videos": videos, "sentences": sentences}) + "\n")
    write_text(root / "MSRVTT_train.9k.csv", csv_text([("video_id",)] + [(f"video{i}",) for i in train9k_idx]))
    write_text(root / "MSRVTT_train.7k.csv", csv_text([("video_id",)] + [(f"video{i}",) for i in train7k_idx]))
    write_text(root / "MSRVTT_JSFUSION_test.csv", csv_text([("key", "vid_key", "video_id", "sentence")] + jsfusion))
    write_json(root / "synth_attributes.json",
               {f"video{i}": dict(zip(("colour", "shape", "motion"), attrs[i])) for i in range(n)})

    return {"videos": n, "train_9k": len(train9k_idx), "train_7k": len(train7k_idx), "test": n_test,
            "sentences": len(sentences)}


def _check_args(n_train, n_test, captions_per_video, seconds, fps, size) -> None:
    for name, val, lo in (("n_train", n_train, 1), ("n_test", n_test, 1), ("captions_per_video", captions_per_video, 1),
                          ("fps", fps, 1), ("size", size, 16)):
        if not isinstance(val, (int, np.integer)) or val < lo:
            raise MeltrError(f"synth_msrvtt: {name}: expected an integer >= {lo}, got {val!r}")
    if size % 2:
        raise MeltrError(f"synth_msrvtt: size: expected an even number (yuv420p needs it), got {size}")
    if not seconds > 0 or seconds * fps < 2:
        raise MeltrError(f"synth_msrvtt: seconds: expected seconds*fps >= 2 frames, got {seconds}s at {fps} fps")


def _assign_attributes(rng: np.random.Generator, n: int, test_idx: list[int]) -> list[tuple[str, str, str]]:
    """Seeded shuffled cycles over all combos: test videos get distinct combos (while n_test <= 96), and the
    train videos, drawn from their own cycle, cover every combo once n_train >= 96."""
    def cycle():
        while True:
            for j in rng.permutation(len(COMBOS)):
                yield COMBOS[j]

    test_set = set(test_idx)
    test_cycle = cycle()
    test_attrs = {i: next(test_cycle) for i in test_idx}
    train_cycle = cycle()
    return [test_attrs[i] if i in test_set else next(train_cycle) for i in range(n)]












