"""The feature store: one folder per dataset with `features.npy` (N, frames, dim) and `index.json`.

It is written into a temporary folder and renamed into place, so an interrupted extraction never leaves
a store that looks complete.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import MeltrError
from ..io import atomic_dir


def write_store(path: str | Path, video_ids: list[str], features: np.ndarray, meta: dict) -> None:
    if features.shape[0] != len(video_ids):
        raise ValueError("one feature row per video id")
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
        try:
            self.index = json.loads(index_file.read_text())
            self.video_ids = list(self.index["video_ids"])
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise MeltrError(f"{index_file}: expected a JSON object with 'video_ids' ({exc})") from None
        self.array = np.load(array_file, mmap_mode="r")
        if self.array.ndim != 3 or self.array.shape[0] != len(self.video_ids):
            raise MeltrError(f"{array_file}: expected shape (videos={len(self.video_ids)}, frames, dim), "
                             f"got {self.array.shape}")
        self.row = {v: i for i, v in enumerate(self.video_ids)}

    @property
    def dim(self) -> int:
        return int(self.array.shape[2])

    @property
    def frames(self) -> int:
        return int(self.array.shape[1])

    def get(self, video_ids: list[str]) -> np.ndarray:
        missing = [v for v in video_ids if v not in self.row]
        if missing:
            raise MeltrError(f"feature store: no features for video {missing[0]!r} ({len(missing)} missing)")
        return np.asarray(self.array[[self.row[v] for v in video_ids]], dtype=np.float32)
