"""The feature store: one folder per dataset with `features.npy` (N, frames, dim) and `index.json`.

It is written into a temporary folder and renamed into place, so an interrupted extraction never leaves
a store that looks complete.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import MeltrError
from ..io import atomic_dir, read_json_object


def write_store(path: str | Path, video_ids: list[str], features: np.ndarray, meta: dict) -> None:
    if features.shape[0] != len(video_ids):
        raise ValueError("one feature row per video id")
    finite = np.isfinite(features).reshape(len(video_ids), -1).all(axis=1)
    if not finite.all():  # refused before anything is written: no store that is partly NaN
        bad = [v for v, ok in zip(video_ids, finite) if not ok]
        raise MeltrError(f"{path}: features of {len(bad)} of {len(video_ids)} videos are not finite (first: "
                         f"{bad[0]!r}); expected finite features - check the feature settings (pool, frames)")
    with atomic_dir(path) as tmp:
        np.save(tmp / "features.npy", features.astype(np.float32))
        index = {"video_ids": list(video_ids), "shape": list(features.shape), **meta}
        (tmp / "index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")


class FeatureStore:
    def __init__(self, path: str | Path):
        path = Path(path)
        index_file, array_file = path / "index.json", path / "features.npy"
        for f in (index_file, array_file):
            if not f.is_file():
                raise MeltrError(f"{f}: feature store file not found (run `meltr features` first)")
        self.index = read_json_object(index_file)  # one-line errors for bad JSON, bad UTF-8, not an object
        ids = self.index.get("video_ids")
        if not isinstance(ids, list) or not all(isinstance(v, str) for v in ids):
            raise MeltrError(f"{index_file}: video_ids: expected a list of clip id strings, got {ids!r}"[:300])
        skipped = self.index.get("skipped", [])
        if not isinstance(skipped, list) or not all(isinstance(s, dict) and isinstance(s.get("video_id"), str)
                                                    for s in skipped):
            raise MeltrError(f"{index_file}: skipped: expected a list of {{'video_id': str, ...}}, "
                             f"got {skipped!r}"[:300])
        self.video_ids = ids
        try:
            self.array = np.load(array_file, mmap_mode="r")
        except Exception as exc:  # ValueError, OSError, EOFError, tokenize.TokenError of a garbled header, ...
            raise MeltrError(f"{array_file}: expected a NumPy array file ({type(exc).__name__}: {exc})") from None
        if self.array.ndim != 3 or self.array.shape[0] != len(self.video_ids):
            raise MeltrError(f"{array_file}: expected shape (videos={len(self.video_ids)}, frames, dim), "
                             f"got {self.array.shape}")
        if self.array.dtype.kind not in "fiub":  # a string, structured or complex array is no feature matrix
            raise MeltrError(f"{array_file}: expected an array of real numbers (float32), got dtype {self.array.dtype}")
        self.row = {v: i for i, v in enumerate(self.video_ids)}

    @property
    def dim(self) -> int:
        return int(self.array.shape[2])

    @property
    def frames(self) -> int:
        return int(self.array.shape[1])

    @property
    def skipped(self) -> list[dict]:
        """Videos left out because they could not be decoded (features.on_bad_video: skip)."""
        return list(self.index.get("skipped", []))

    def keep_available(self, records: list[dict], what: str) -> tuple[list[dict], list[dict]]:
        """(records whose clip has features, records whose clip was skipped as broken). A clip missing for
        any other reason is an error: the store does not belong to these records."""
        broken = {s["video_id"] for s in self.skipped}
        kept = [r for r in records if r["video_id"] in self.row]
        dropped = [r for r in records if r["video_id"] not in self.row]
        unexplained = [r["video_id"] for r in dropped if r["video_id"] not in broken]
        if unexplained:
            raise MeltrError(f"{what}: no features for clip {unexplained[0]!r} ({len(unexplained)} in all); "
                             "expected a feature store built from these manifests")
        if not kept:
            raise MeltrError(f"{what}: every clip was skipped as a broken video")
        return kept, dropped

    def get(self, video_ids: list[str]) -> np.ndarray:
        missing = [v for v in video_ids if v not in self.row]
        if missing:
            raise MeltrError(f"feature store: no features for video {missing[0]!r} ({len(missing)} missing)")
        rows = np.asarray(self.array[[self.row[v] for v in video_ids]], dtype=np.float32)
        finite = np.isfinite(rows).reshape(len(video_ids), -1).all(axis=1)
        if not finite.all():
            bad = [v for v, ok in zip(video_ids, finite) if not ok]
            raise MeltrError(f"feature store: features of clip {bad[0]!r} are not finite ({len(bad)} clips); "
                             "expected finite features - rebuild the store")
        return rows
