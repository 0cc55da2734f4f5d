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

import math

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


def _text(value) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def record_problem(rec: dict, family: str) -> str | None:
    """What is wrong with a record against the contract above (types, ranges, non-empty), or None."""
    missing = [k for k in COMMON_KEYS + TASK_KEYS[family] if k not in rec]
    if missing:
        return f"expected key(s) {', '.join(missing)} for a {family} record"
    for key in ("id", "video_id", "video", "split"):
        if not _text(rec[key]):
            return f"{key}: expected a non-empty string, got {rec[key]!r}"
    for key in ("start", "end"):
        if rec[key] is not None and not (_number(rec[key]) and rec[key] >= 0):
            return f"{key}: expected seconds >= 0 or null, got {rec[key]!r}"
    if rec["start"] is not None and rec["end"] is not None and rec["end"] <= rec["start"]:
        return f"end {rec['end']!r}: expected after start {rec['start']!r}"
    if rec["fps"] is not None and not (_number(rec["fps"]) and rec["fps"] > 0):
        return f"fps: expected a frame rate > 0 or null, got {rec['fps']!r}"
    if family in ("retrieval", "captioning"):
        caps = rec["captions"]
        if not isinstance(caps, list) or not caps or not all(_text(c) for c in caps):
            return f"captions: expected a non-empty list of non-empty strings, got {caps!r}"[:300]
        return None
    if not _text(rec["question"]):
        return f"question: expected a non-empty string, got {rec['question']!r}"
    answer = rec["answer"]
    if family == "multiple_choice":
        options = rec["options"]
        if not isinstance(options, list) or len(options) < 2 or not all(_text(o) for o in options):
            return f"options: expected a list of at least 2 non-empty strings, got {options!r}"[:300]
        if answer is not None and (isinstance(answer, bool) or not isinstance(answer, int)
                                   or not 0 <= answer < len(options)):
            return f"answer: expected an option index in 0..{len(options) - 1} or null, got {answer!r}"
        if not isinstance(rec["subtitles"], str):
            return f"subtitles: expected a string, got {rec['subtitles']!r}"[:300]
    elif family == "open_ended" and not _text(answer):
        return f"answer: expected a non-empty string, got {answer!r}"
    elif family == "count" and (isinstance(answer, bool) or not isinstance(answer, int) or answer < 0):
        return f"answer: expected an integer count >= 0, got {answer!r}"
    return None


def check_records(records: list[dict], family: str, where: str, lines: list[int] | None = None) -> None:
    """Raise a one-line MeltrError for the first record that breaks the contract (a loader bug, or a
    hand-edited manifest), naming `where` (file) and the record's line (or index)."""
    if family not in TASK_KEYS:
        raise MeltrError(f"task family: expected one of {', '.join(TASK_KEYS)}, got {family!r}")
    for i, rec in enumerate(records):
        problem = record_problem(rec, family)
        if problem:
            at = f"line {lines[i]}" if lines else f"record {i}"
            raise MeltrError(f"{where}: {at} (id {rec.get('id')!r}): {problem}")


def read_records(path, family: str) -> list[dict]:
    """A prepared manifest (JSONL), checked against the record contract of its task family."""
    from ..io import read_jsonl

    numbered = read_jsonl(path, with_lines=True)
    if not numbered:
        raise MeltrError(f"{path}: expected at least one record, got an empty manifest")
    records = [rec for _, rec in numbered]
    check_records(records, family, str(path), [n for n, _ in numbered])
    return records
