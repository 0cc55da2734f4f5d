"""Synthetic MSVD-QA in the real on-disk layout (meltr/data/msvdqa.py): question files, youtube_mapping.txt and
.avi clips named by a YouTube-style name.

Each clip shows one saturated shape moving across a dark background (as the synthetic MSRVTT); its questions
ask, in MSVD-QA's "what ..." style with one-word answers, for the shape's colour, its kind or the direction it
moves, so a small model can answer them from a few frames. Written under `root`:
  train_qa.json, val_qa.json, test_qa.json, youtube_mapping.txt, YouTubeClips/<name>.avi
plus `synth_attributes.json` ({youtube name: {colour, shape, motion}}), which the real data has not.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np

from ...io import write_json, write_text
from .common import COMBOS, ID_CHARS, SHAPE_NOUNS, check_int, cycle, render_params, render_video, write_avi

SPLITS = ("train", "val", "test")


def _questions(rng, colour: str, shape: str, motion: str) -> list[tuple[str, str]]:
    noun = SHAPE_NOUNS[shape][int(rng.integers(len(SHAPE_NOUNS[shape])))]
    asked = [(f"what is the color of the {noun}?", colour),
             (f"what is the {colour} object?", shape),
             (f"which direction does the {colour} {noun} move?", motion)]
    return [asked[i] for i in rng.permutation(3)[:2]]  # two questions per clip, as the real data has several


def synth_msvdqa(root: str | os.PathLike, *, n_train: int = 120, n_val: int = 20, n_test: int = 100, seed: int = 0,
                 seconds: float = 2.0, fps: int = 8, size: int = 48) -> dict:
    """Write a synthetic MSVD-QA under `root`; return {split: {"clips", "questions"}}.

    n_train / n_val / n_test are numbers of questions (two per clip). Everything but the .avi bytes is
    byte-identical for the same arguments."""
    for name, val, lo in (("n_train", n_train, 2), ("n_val", n_val, 2), ("n_test", n_test, 2), ("fps", fps, 1),
                          ("size", size, 16), ("seed", seed, 0)):
        check_int("synth_msvdqa", name, val, lo)
    root = Path(root)
    rng = np.random.default_rng(seed)
    combos = cycle(rng, list(COMBOS))
    n_frames = max(2, int(round(seconds * fps)))
    clips, mapping, attrs = [], [], {}
    files: dict[str, list[dict]] = {}
    qid, vid = 0, 1
    summary = {}
    for split, n_q in zip(SPLITS, (n_train, n_val, n_test)):
        records = []
        while len(records) < n_q:
            colour, shape, motion = next(combos)
            # YouTube-style clip names: an 11-character id, then the start and end second
            start = int(rng.integers(0, 300))
            name = "".join(rng.choice(ID_CHARS, 11)) + f"_{start}_{start + int(seconds) + 1}"
            clips.append((name, render_video(size, n_frames, colour, shape, motion, render_params(rng, size, n_frames))))
            mapping.append(f"{name} vid{vid}")
            attrs[name] = {"colour": colour, "shape": shape, "motion": motion, "split": split}
            for question, answer in _questions(rng, colour, shape, motion)[:n_q - len(records)]:
                records.append({"answer": answer, "id": qid, "question": question, "video_id": vid})
                qid += 1
            vid += 1
        files[split] = records
        summary[split] = {"clips": len({r["video_id"] for r in records}), "questions": len(records)}

    from tqdm import tqdm

    # clips first, annotation files last: an interrupted run leaves no question pointing at a missing clip
    for name, frames in tqdm(clips, desc="synth msvd-qa clips", unit="clip", file=sys.stderr):
        write_avi(root / "YouTubeClips" / f"{name}.avi", frames, fps)
    write_text(root / "youtube_mapping.txt", "\n".join(mapping) + "\n")
    for split, records in files.items():
        write_text(root / f"{split}_qa.json", json.dumps(records))
    write_json(root / "synth_attributes.json", attrs)
    return summary
