"""UniVL's offline S3D features (docs/datasets.md §1.2, §2.2, §7): one 1024-d vector per second of video.

Files: msrvtt_videos_features.pickle and youcookii_videos_features.pickle, each a pickled
`dict[video_id or feature_file] -> float ndarray (T_seconds, 1024)`. A YouCook2 clip is a slice of its long
video's rows, exactly as UniVL's Youcook_DataLoader cuts it (feature_framerate 1.0):

    rows = features[int(start * framerate) : int(end * framerate) + 1][:max_frames]

i.e. from the row of the second holding `start` through the row of the second holding `end`, both included (a
segment [31, 44] gives 14 rows, 31..44), clamped to the T rows there are, then cut to the first `max_frames`
rows (UniVL: 48 for retrieval, 96 for YouCook2 captioning). Where UniVL meets a segment that starts after the
last row it prints a warning and feeds an all-masked clip; here that is a MeltrError.
"""
from __future__ import annotations

import math
import os
import pickle

import numpy as np

from ..errors import MeltrError

FEATURE_DIM = 1024


def load_s3d_features(path: str | os.PathLike, *, dim: int | None = FEATURE_DIM) -> dict[str, np.ndarray]:
    """Read a UniVL S3D feature pickle; return {key: (T, dim) float array} as stored.

    Checks: a dict with string keys; every value a 2-D floating-point array with T >= 1 rows and `dim`
    columns (dim=None: any, but the same for every entry). Each failure is a one-line MeltrError naming the
    file and the key.
    """
    try:
        with open(path, "rb") as f:
            data = pickle.load(f)
    except FileNotFoundError:
        raise MeltrError(f"{path}: file not found (expected a UniVL S3D feature pickle)") from None
    except OSError as exc:
        raise MeltrError(f"{path}: cannot read ({exc.strerror})") from None
    except Exception as exc:  # UnpicklingError, EOFError (truncated), a class that cannot be imported, ...
        detail = str(exc).splitlines()[0] if str(exc) else "truncated or not a pickle"
        raise MeltrError(f"{path}: expected a pickle of dict video_id -> float array (seconds, {dim or 'D'}) "
                         f"({type(exc).__name__}: {detail})") from None
    if not isinstance(data, dict):
        raise MeltrError(f"{path}: expected a dict video_id -> float array (seconds, {dim or 'D'}), "
                         f"got {type(data).__name__}")
    want = dim
    for key, arr in data.items():
        if not isinstance(key, str):
            raise MeltrError(f"{path}: [{key!r}]: expected string video ids as keys, got {type(key).__name__}")
        where = f"{path}: [{key!r}]"
        if not isinstance(arr, np.ndarray):
            raise MeltrError(f"{where}: expected a numpy float array (seconds, {want or 'D'}), "
                             f"got {type(arr).__name__}")
        if not np.issubdtype(arr.dtype, np.floating):
            raise MeltrError(f"{where}: expected a float array, got dtype {arr.dtype}")
        if arr.ndim != 2 or arr.shape[0] < 1 or (want is not None and arr.shape[1] != want):
            raise MeltrError(f"{where}: expected shape (seconds >= 1, {want or 'D'}), got {arr.shape}")
        want = arr.shape[1]  # dim=None: the first entry fixes it
    return data


def clip_features(features: np.ndarray, start: float, end: float, *, framerate: float = 1.0,
                  max_frames: int | None = None, name: str = "features") -> np.ndarray:
    """Rows of one clip [start, end] (seconds) of a (T, D) feature array, as UniVL slices them (module doc).

    `name` (e.g. the video id) goes into error messages. Returns a view, never empty.
    """
    feats = np.asarray(features)
    if feats.ndim != 2:
        raise MeltrError(f"{name}: expected a (seconds, D) feature array, got shape {feats.shape}")
    try:
        s, e, fr = float(start), float(end), float(framerate)
    except (TypeError, ValueError):
        raise MeltrError(f"{name}: segment [{start}, {end}]: expected numbers of seconds") from None
    if not (math.isfinite(s) and math.isfinite(e)) or s < 0 or e <= s:
        raise MeltrError(f"{name}: segment [{start}, {end}]: expected finite 0 <= start < end")
    if not (math.isfinite(fr) and fr > 0):
        raise MeltrError(f"{name}: framerate: expected a number > 0, got {framerate!r}")
    if max_frames is not None and int(max_frames) < 1:
        raise MeltrError(f"{name}: max_frames: expected >= 1 or None, got {max_frames!r}")
    lo, hi = int(s * fr), int(e * fr) + 1
    if lo >= feats.shape[0]:
        raise MeltrError(f"{name}: segment [{start}, {end}] starts after the last feature row "
                         f"({feats.shape[0]} rows = {feats.shape[0] / fr:g} s at {fr:g} per second)")
    rows = feats[lo:hi]
    return rows if max_frames is None else rows[: int(max_frames)]


def s3d_store(records: list[dict], pickle_path: str | os.PathLike, out_dir: str | os.PathLike,
              num_frames: int) -> dict:
    """A feature store from UniVL's S3D pickle instead of decoded frames: each clip's rows (its `start`/`end`
    window, the whole video when None) resampled to `num_frames` uniformly spaced rows, like frame sampling.

    The pickle is keyed by video: a record's key is its `feature_file` (UniVL's csv) or its video's file
    name without extension (a YouCook2 YouTube id, an MSRVTT video id).
    """
    from pathlib import Path

    from ..data.video import frame_indices
    from .store import write_store

    features = load_s3d_features(pickle_path)
    clips: dict[str, np.ndarray] = {}
    for r in records:
        if r["video_id"] in clips:
            continue
        key = r.get("feature_file") or Path(r["video"].rstrip("/")).stem
        if key not in features:
            raise MeltrError(f"{pickle_path}: no features for video {key!r} (clip {r['video_id']!r})")
        rows = features[key]
        if r.get("start") is not None and r.get("end") is not None:
            rows = clip_features(rows, r["start"], r["end"], name=f"{pickle_path}: {key}")
        clips[r["video_id"]] = np.asarray(rows[frame_indices(len(rows), num_frames)], dtype=np.float32)
    if not clips:
        raise MeltrError("features: the manifests list no videos")
    ids = sorted(clips)
    array = np.stack([clips[i] for i in ids])
    write_store(out_dir, ids, array, {"backbone": "s3d (UniVL, pre-extracted)", "source": str(pickle_path),
                                      "num_frames": num_frames})
    return {"videos": len(ids), "shape": list(array.shape)}
