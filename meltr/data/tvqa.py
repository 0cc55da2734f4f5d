"""Load TVQA question files and subtitles into normalised records (docs/datasets.md §4).

Input under `root`:
  tvqa_{train,val,test_public}.jsonl   (also found in root/tvqa_qa_release/, where the tarball unpacks them)
  <subtitle_dir>/<vid_name>.srt        one SRT per clip (or, with `subtitle_file=`, TVRetrieval's
                                       tvqa_preprocessed_subtitles.jsonl: {"vid_name", "sub": [{text, start, end}]})
  <frames_dir>/<show>_frames/<vid_name>/00001.jpg ...   3 fps JPEG frames (paths only; not checked here)

Records (meltr/data/records.py, family multiple_choice), one per jsonl line, in file order:
  id        str(qid)
  video     the frame folder <root>/<frames_dir>/<show>_frames/<vid_name>/ (trailing separator: it is a folder);
            show = the vid_name prefix before the first "_" when it is one of the show folders, else "bbt"
            (Big Bang Theory vid_names carry no prefix: s03e21_seg02_clip_08), as All-in-one does.
  start/end the `ts` moment "start-end" in seconds inside the clip. A NaN/null or unparseable ts means the
            whole clip: start = end = None (the official preprocessing substitutes [10, 30] instead; we do not
            invent a window).
  video_id  f"{vid_name}@{start:.2f}-{end:.2f}" when ts is set, else vid_name: several questions share a clip but
            ask about different moments, so the feature-store key names the moment, and questions on the same
            moment share it.
  fps       `fps` (3.0, the frame rate of frames_hq).
  question  q;  options [a0..a4];  answer answer_idx (int 0-4), None in tvqa_test_public.jsonl (no labels).
  subtitles text of the SRT lines overlapping [start, end] (every line when ts is unset), joined with " ";
            "(Name:)" speaker tags are kept as text. A missing .srt gives "" (counted, not an error: the data
            check lists missing files). `show_name` is not needed and not checked.
"""
from __future__ import annotations

import json
import logging
import math
import os
import re

from ..errors import MeltrError
from ..io import read_utf8
from .records import make_record

TASKS = {"qa": "multiple_choice"}
SPLIT_FILES = {"train": "tvqa_train.jsonl", "val": "tvqa_val.jsonl", "test": "tvqa_test_public.jsonl"}
RELEASE_DIR = "tvqa_qa_release"
SHOWS = ("bbt", "friends", "grey", "met", "castle", "house")  # frame folders <show>_frames
OPTION_KEYS = ("a0", "a1", "a2", "a3", "a4")
PREPROCESSED_SUBTITLES = "tvqa_preprocessed_subtitles.jsonl"

log = logging.getLogger(__name__)

_TS = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*-\s*(\d+(?:\.\d*)?|\.\d+)\s*$")
# Hours of at most 9 digits: int() refuses a run past 4300 digits (a ValueError), and no clip is that long.
_SRT_TIME = re.compile(r"^\s*(\d{1,9}):(\d{1,2}):(\d{1,2})[,.](\d{1,3})\s*-->\s*(\d{1,9}):(\d{1,2}):(\d{1,2})[,.](\d{1,3})")


def show_folder(vid_name: str) -> str:
    """Frame folder show name of a clip: its vid_name prefix when that is a show, else 'bbt'."""
    prefix = vid_name.split("_")[0]
    return prefix if prefix in SHOWS else "bbt"


def frame_dir(root: str | os.PathLike, vid_name: str, frames_dir: str = "frames_hq") -> str:
    """<root>/<frames_dir>/<show>_frames/<vid_name>/ (with a trailing separator: a folder of JPEGs)."""
    return os.path.join(str(root), frames_dir, f"{show_folder(vid_name)}_frames", vid_name, "")


def subtitle_path(root: str | os.PathLike, vid_name: str, subtitle_dir: str = "tvqa_subtitles") -> str:
    return os.path.join(str(root), subtitle_dir, vid_name + ".srt")


def parse_ts(ts: object) -> tuple[float, float] | None:
    """'48.62-60.02' -> (48.62, 60.02); NaN, None, or anything unparseable (or end not after start) -> None."""
    if not isinstance(ts, str):
        return None
    m = _TS.match(ts)
    if not m:
        return None
    start, end = float(m.group(1)), float(m.group(2))
    return (start, end) if start < end else None  # "3-3" is no moment: the whole clip, counted


def load_tvqa(root: str | os.PathLike, task: str = "qa", *, frames_dir: str = "frames_hq",
              subtitle_dir: str = "tvqa_subtitles", fps: float = 3.0, subtitle_file: str | None = None,
              stats: dict | None = None) -> dict[str, list[dict]]:
    """Return {"train": [...], "val": [...], "test": [...]} records. Test labels are hidden (answer None), so
    report val accuracy locally (§4.3).

    subtitle_file: read subtitles from this jsonl (e.g. PREPROCESSED_SUBTITLES, relative to root) instead of
    <subtitle_dir>/*.srt. stats: if given, filled with {"missing_subtitles": [srt paths or vid_names],
    "whole_clip": number of questions whose ts was NaN/unparseable}.
    """
    if task not in TASKS:
        raise MeltrError(f"TVQA task: expected one of {', '.join(TASKS)}, got {task!r}")
    if not (isinstance(fps, (int, float)) and fps > 0):
        raise MeltrError(f"TVQA fps: expected a frame rate > 0 (frames_hq is 3 fps), got {fps!r}")
    root = str(root)
    subs_from_file = None
    if subtitle_file is not None:
        subs_from_file = read_preprocessed_subtitles(os.path.join(root, subtitle_file))
    subs_cache: dict[str, list[tuple[float, float, str]] | None] = {}
    missing: set[str] = set()
    whole_clip = 0

    def clip_subtitles(vid_name: str) -> list[tuple[float, float, str]] | None:
        if vid_name not in subs_cache:
            if subs_from_file is not None:
                subs_cache[vid_name] = subs_from_file.get(vid_name)
            else:
                path = subtitle_path(root, vid_name, subtitle_dir)
                subs_cache[vid_name] = read_srt(path) if os.path.isfile(path) else None
            if subs_cache[vid_name] is None:
                missing.add(vid_name if subs_from_file is not None else subtitle_path(root, vid_name, subtitle_dir))
        return subs_cache[vid_name]

    out: dict[str, list[dict]] = {}
    for split, name in SPLIT_FILES.items():
        path = _find(root, name)
        records, seen = [], {}
        for line, row in _read_questions(path, labelled=split != "test"):
            rid = str(row["qid"])
            if rid in seen:
                raise MeltrError(f"{path}: line {line}: qid: expected a unique qid, got {row['qid']} again "
                                 f"(first on line {seen[rid]})")
            seen[rid] = line
            vid = row["vid_name"]
            moment = parse_ts(row["ts"])
            if moment is None:
                whole_clip += 1
                start = end = None
                video_id = vid
            else:
                start, end = moment
                video_id = f"{vid}@{start:.2f}-{end:.2f}"
            lines = clip_subtitles(vid) or []
            text = " ".join(t for s, e, t in lines if t and (moment is None or (s <= end and e >= start)))
            records.append(make_record(id=rid, video_id=video_id, video=frame_dir(root, vid, frames_dir),
                                       start=start, end=end, fps=fps, split=split, question=row["q"],
                                       options=[row[k] for k in OPTION_KEYS], answer=row.get("answer_idx"),
                                       subtitles=text))
        out[split] = records
    if missing:
        log.warning("TVQA: %d clip(s) have no subtitles (%s); their questions get subtitles ''", len(missing),
                    os.path.join(root, subtitle_file) if subtitle_file else os.path.join(root, subtitle_dir))
    if stats is not None:
        stats["missing_subtitles"] = sorted(missing)
        stats["whole_clip"] = whole_clip
    return out


def _find(root: str, name: str) -> str:
    path = os.path.join(root, name)
    alt = os.path.join(root, RELEASE_DIR, name)
    if not os.path.exists(path) and os.path.exists(alt):
        return alt
    if not os.path.exists(path):
        raise MeltrError(f"{path}: file not found (expected the TVQA questions from tvqa_qa_release.tar.gz, "
                         f"here or in {alt})")
    return path


def _read_lines(path: str) -> list[tuple[int, str]]:
    """Non-blank lines of a UTF-8 text file with their 1-based numbers; one-line errors for unreadable files."""
    text = read_utf8(path, expected="UTF-8 JSON lines")
    return [(i, ln) for i, ln in enumerate(text.split("\n"), 1) if ln.strip()]


def _json_line(path: str, line: int, text: str) -> dict:
    try:
        obj = json.loads(text)  # accepts the bare NaN that some ts values hold
    except json.JSONDecodeError as exc:
        raise MeltrError(f"{path}: line {line}: expected one JSON object per line ({exc.msg} at column "
                         f"{exc.colno})") from None
    except ValueError as exc:  # an integer past Python's 4300-digit limit
        raise MeltrError(f"{path}: line {line}: expected one JSON object per line ({str(exc).split(';')[0]})") from None
    if not isinstance(obj, dict):
        raise MeltrError(f"{path}: line {line}: expected a JSON object, got {type(obj).__name__}")
    return obj


def _read_questions(path: str, labelled: bool) -> list[tuple[int, dict]]:
    """Validate each question line: keys present and typed; answer_idx 0-4 (required when `labelled`)."""
    rows = []
    for line, text in _read_lines(path):
        row = _json_line(path, line, text)
        need = ("qid", "q") + OPTION_KEYS + ("vid_name", "ts") + (("answer_idx",) if labelled else ())
        missing = [k for k in need if k not in row]
        if missing:
            raise MeltrError(f"{path}: line {line}: expected key(s) {', '.join(map(repr, missing))}")
        if not _is_int(row["qid"]):
            raise MeltrError(f"{path}: line {line}: qid: expected an integer, got {row['qid']!r}")
        for k in ("q",) + OPTION_KEYS + ("vid_name",):
            if not isinstance(row[k], str):
                raise MeltrError(f"{path}: line {line}: {k}: expected a string, got {type(row[k]).__name__}")
        if not row["vid_name"].strip() or "/" in row["vid_name"] or "\\" in row["vid_name"]:
            raise MeltrError(f"{path}: line {line}: vid_name: expected a clip name like "
                             f"friends_s02e05_seg01_clip_03, got {row['vid_name']!r}")
        ts = row["ts"]
        if not (isinstance(ts, str) or ts is None or (isinstance(ts, float) and math.isnan(ts))):
            raise MeltrError(f"{path}: line {line}: ts: expected a 'start-end' string or NaN, got {ts!r}")
        if "answer_idx" in row:
            a = row["answer_idx"]
            if not _is_int(a) or not 0 <= a < len(OPTION_KEYS):
                raise MeltrError(f"{path}: line {line}: answer_idx: expected an integer 0-4, got {a!r}")
        rows.append((line, row))
    if not rows:
        raise MeltrError(f"{path}: expected one JSON question per line, got an empty file")
    return rows


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _srt_seconds(h: str, m: str, s: str, ms: str) -> float:
    return int(h) * 3600 + int(m) * 60 + int(s) + int(ms.ljust(3, "0")) / 1000


def read_srt(path: str | os.PathLike) -> list[tuple[float, float, str]]:
    """Parse an SRT file into [(start_s, end_s, text)], text lines of a block joined with " ".

    Decoded as UTF-8 when valid, else ISO-8859-1 (what the TVQA code passes to pysrt; it never fails), so
    any byte is accepted. Blocks are separated by blank lines; the index line is optional; CRLF is fine; a
    text-only block (a blank line inside a subtitle) continues the previous subtitle. A block whose timing
    line is missing, not `HH:MM:SS,mmm --> HH:MM:SS,mmm`, or ends before it starts raises a one-line
    MeltrError naming the file, the block and its line.
    """
    path = str(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise MeltrError(f"{path}: cannot read subtitles ({exc.strerror})") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = data.decode("iso-8859-1")
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    blocks: list[tuple[int, list[str]]] = []  # (first line number, lines)
    for i, ln in enumerate(lines, 1):
        if ln.strip():
            if blocks and blocks[-1][0] + len(blocks[-1][1]) == i:
                blocks[-1][1].append(ln.strip())
            else:
                blocks.append((i, [ln.strip()]))
    out = []
    for b, (first, blines) in enumerate(blocks, 1):
        k = 1 if blines[0].isdigit() and len(blines) > 1 else 0  # the optional index line
        m = _SRT_TIME.match(blines[k]) if k < len(blines) else None
        orphan_text = k == 0 and not blines[0].isdigit() and not any("-->" in x for x in blines)
        if m is None and out and orphan_text:
            # a blank line inside a subtitle's text: the orphan lines continue the previous subtitle
            s, e, t = out[-1]
            out[-1] = (s, e, " ".join([t] + blines).strip())
            continue
        if m is None:
            got = blines[k] if k < len(blines) else blines[0]
            raise MeltrError(f"{path}: block {b} (line {first + k}): expected a timing line "
                             f"'HH:MM:SS,mmm --> HH:MM:SS,mmm', got {got!r}")
        start, end = _srt_seconds(*m.group(1, 2, 3, 4)), _srt_seconds(*m.group(5, 6, 7, 8))
        if end < start:  # a subtitle that ends before it starts overlaps no moment, silently: refuse it
            raise MeltrError(f"{path}: block {b} (line {first + k}): expected the end time after the start, got "
                             f"{blines[k].strip()!r}")
        out.append((start, end, " ".join(blines[k + 1:])))
    return out


def read_preprocessed_subtitles(path: str) -> dict[str, list[tuple[float, float, str]]]:
    """TVRetrieval's tvqa_preprocessed_subtitles.jsonl -> {vid_name: [(start, end, text)]}."""
    out = {}
    for line, text in _read_lines(path):
        row = _json_line(path, line, text)
        for k in ("vid_name", "sub"):
            if k not in row:
                raise MeltrError(f"{path}: line {line}: expected key {k!r}")
        if not isinstance(row["vid_name"], str):
            raise MeltrError(f"{path}: line {line}: vid_name: expected a string, got {type(row['vid_name']).__name__}")
        if not isinstance(row["sub"], list):
            raise MeltrError(f"{path}: line {line}: sub: expected a list, got {type(row['sub']).__name__}")
        subs = []
        for j, s in enumerate(row["sub"]):
            ok = (isinstance(s, dict) and isinstance(s.get("text"), str)
                  and all(isinstance(s.get(k), (int, float)) and not isinstance(s.get(k), bool)
                          for k in ("start", "end")))
            if not ok:
                raise MeltrError(f"{path}: line {line}: sub[{j}]: expected {{'text': str, 'start': float, "
                                 f"'end': float}}, got {s!r}")
            subs.append((float(s["start"]), float(s["end"]), " ".join(s["text"].split())))
        out[row["vid_name"]] = subs
    if not out:
        raise MeltrError(f"{path}: expected one JSON object per clip, got an empty file")
    return out
