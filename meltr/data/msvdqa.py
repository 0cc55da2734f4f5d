"""Load MSVD-QA (Xu et al., ACM MM 2017; xudejing/video-question-answering) into normalised records.

Input under `root`, as distributed:
  {train,val,test}_qa.json   each a JSON list of {"answer": str, "id": int, "question": str, "video_id": int}
                             (ids run on across the three files; video_id N is the clip `vid<N>`)
  youtube_mapping.txt        one line per clip, "<youtube name> vid<N>", space-separated, as MSVD
                             (YouTube2Text) ships it: e.g. "-4wsuPCjDBc_5_15 vid1"
  <video_dir>/<youtube name>.avi   the MSVD clips (`YouTubeClips/` in the MSVD download)

That is how HCRN's and the other MSVD-QA loaders read it (`mapping['vid' + str(video_id)]` -> the .avi name).
Task `qa`, open-ended: records carry the answer word; the classifier's vocabulary is the training answers
(the papers keep the 1,000 most frequent, ../shared/docs/datasets.md), scored with FrameQA's rule for test
answers outside it (`evaluate.out_of_vocabulary`). The papers report test.

Records (meltr/data/records.py): id = str(id); video_id = the YouTube name; video = <root>/<video_dir>/<name>.avi;
start/end/fps None (the whole clip). Media files are not checked here (`prepare` and `meltr data check` do).
"""
from __future__ import annotations

import json
import os

from ..errors import MeltrError
from ..io import read_utf8
from .records import make_record

TASKS = {"qa": "open_ended"}
SPLITS = ("train", "val", "test")
MAPPING = "youtube_mapping.txt"
KEYS = {"answer": str, "id": int, "question": str, "video_id": int}


def qa_file(split: str) -> str:
    return f"{split}_qa.json"


def load_msvdqa(root: str | os.PathLike, task: str = "qa", *, video_dir: str = "YouTubeClips",
                extension: str = ".avi") -> dict[str, list[dict]]:
    """{"train": [...], "val": [...], "test": [...]} records of MSVD-QA, in file order."""
    if task not in TASKS:
        raise MeltrError(f"msvdqa task {task!r}: expected one of {', '.join(TASKS)}")
    root = str(root)
    names = read_mapping(os.path.join(root, MAPPING))
    out = {}
    for split in SPLITS:
        path = os.path.join(root, qa_file(split))
        out[split] = [make_record(id=str(q["id"]), video_id=names[q["video_id"]], split=split,
                                  video=os.path.join(root, video_dir, names[q["video_id"]] + extension),
                                  question=q["question"], answer=q["answer"])
                      for q in read_questions(path, names)]
    return out


def read_mapping(path: str) -> dict[int, str]:
    """youtube_mapping.txt -> {N: youtube name} for each line "<name> vid<N>" (blank lines skipped)."""
    text = read_utf8(path, missing="the MSVD youtube_mapping.txt")
    names: dict[int, str] = {}
    for line_no, line in enumerate(text.splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        digits = parts[1][3:] if len(parts) == 2 and parts[1].startswith("vid") else ""
        if not (digits.isascii() and digits.isdigit() and len(digits) <= 18):
            raise MeltrError(f"{path}:{line_no}: expected '<youtube name> vid<N>', got {line.strip()[:80]!r}")
        n = int(digits)
        if n in names:
            raise MeltrError(f"{path}:{line_no}: vid{n} mapped twice ({names[n]!r} and {parts[0]!r}); expected "
                             "one YouTube name per clip")
        names[n] = parts[0]
    if not names:
        raise MeltrError(f"{path}: no clips; expected lines '<youtube name> vid<N>'")
    return names


def read_questions(path: str, names: dict[int, str]) -> list[dict]:
    """One split's question list, each record checked for its keys and types and its clip in the mapping."""
    text = read_utf8(path, missing="an MSVD-QA question file")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise MeltrError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}); expected a list of "
                         "question records") from None
    except ValueError as exc:  # an integer past Python's 4300-digit limit
        raise MeltrError(f"{path}: not valid JSON ({str(exc).split(';')[0]}); expected a list of question "
                         "records") from None
    except RecursionError:
        raise MeltrError(f"{path}: not valid JSON (nested too deeply); expected a list of question records") from None
    if not isinstance(data, list):
        raise MeltrError(f"{path}: expected a JSON list of question records, got {type(data).__name__}")
    for i, q in enumerate(data):
        where = f"{path}: record {i}"
        if not isinstance(q, dict):
            raise MeltrError(f"{where}: expected an object with {', '.join(KEYS)}, got {type(q).__name__}")
        for key, kind in KEYS.items():
            if key not in q:
                raise MeltrError(f"{where}: missing key {key!r} (expected {', '.join(KEYS)})")
            value = q[key]
            if isinstance(value, bool) or not isinstance(value, kind):
                raise MeltrError(f"{where}: {key} {value!r}: expected {kind.__name__}")
        if not q["question"].strip() or not q["answer"].strip():
            raise MeltrError(f"{where} (id {q['id']}): empty question or answer; expected text")
        if q["video_id"] not in names:
            raise MeltrError(f"{where} (id {q['id']}): video_id {q['video_id']}: vid{q['video_id']} is not in "
                             f"{MAPPING}; expected every clip mapped to its YouTube name")
    return data
