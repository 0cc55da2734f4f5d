"""The normalised record every dataset loader returns, whatever the on-disk format (docs/datasets.md).

A loader turns a dataset's own files into `{split: [record, ...]}` for one task. Later stages (features,
training, evaluation) read only these records, so they never branch on a dataset's name.

Keys every record has:
  id        str   unique within its split (question id for QA, video/clip id for retrieval and captioning)
  video_id  str   key of the clip in the feature store; two records on the same clip share it
  video     str   path of an mp4/webm/gif file or of a folder of jpg frames
  start     float | None   clip start in seconds inside `video` (YouCook2 segments, TVQA `ts`); None: from 0
  end       float | None   clip end in seconds; None: to the end
  fps       float | None   frame rate of a frame folder (TVQA: 3); None for video files (read from the file)
  split     str

Keys per task family (TASK_KEYS):
  retrieval, captioning:  captions   list[str]   (retrieval test: the one evaluation caption per clip;
                                                  captioning test: every reference caption)
  multiple_choice:        question str, options list[str] (5), answer int | None (None: test without labels),
                          subtitles str (TVQA; "" where the dataset has none)
  open_ended:             question str, answer str
  count:                  question str, answer int
"""
from __future__ import annotations

from ..errors import MeltrError

COMMON_KEYS = ("id", "video_id", "video", "start", "end", "fps", "split")
TASK_KEYS: dict[str, tuple[str, ...]] = {
    "retrieval": ("captions",),
    "captioning": ("captions",),
    "multiple_choice": ("question", "options", "answer", "subtitles"),
    "open_ended": ("question", "answer"),
    "count": ("question", "answer"),
}


def make_record(*, id: str, video_id: str, video: str, split: str, start: float | None = None,
                end: float | None = None, fps: float | None = None, **task_fields) -> dict:
    """One record with the common keys first; task fields as given."""
    rec = {"id": str(id), "video_id": str(video_id), "video": str(video),
           "start": None if start is None else float(start), "end": None if end is None else float(end),
           "fps": None if fps is None else float(fps), "split": split}
    rec.update(task_fields)
    return rec


def check_records(records: list[dict], family: str, where: str) -> None:
    """Raise a one-line MeltrError if a record misses a key of its task family (a loader bug, or a hand-edited
    manifest), naming `where` (file) and the record index."""
    if family not in TASK_KEYS:
        raise MeltrError(f"task family: expected one of {', '.join(TASK_KEYS)}, got {family!r}")
    need = COMMON_KEYS + TASK_KEYS[family]
    for i, rec in enumerate(records):
        missing = [k for k in need if k not in rec]
        if missing:
            raise MeltrError(f"{where}: record {i}: expected key(s) {', '.join(missing)} for a {family} record")


def read_records(path, family: str) -> list[dict]:
    """A prepared manifest (JSONL), checked for the keys of its task family."""
    from ..io import read_jsonl

    records = read_jsonl(path)
    if not records:
        raise MeltrError(f"{path}: expected at least one record, got an empty manifest")
    check_records(records, family, str(path))
    return records
