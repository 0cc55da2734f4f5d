"""Load TGIF-QA question files into normalised records (docs/datasets.md §3).

Input under `root`: `{Train,Test}_{action,transition,frameqa,count}_question.csv` from
YunseokJANG/tgif-qa/dataset, and `<gif_dir>/<gif_name>.gif`. Despite the name the files are TAB-separated with
a header row and CRLF line endings, and hold no quote characters, so they are read with `csv` in QUOTE_NONE
mode (a stray `"` in a question stays text). Columns are found by header name; the real column orders are:

  action, transition  gif_name question a1 a2 a3 a4 a5 answer vid_id key
  frameqa             gif_name question answer type vid_id key description
  count               gif_name question answer vid_id key

Records (meltr/data/records.py), one per row, in file order:
  id        the row's `vid_id` (ACTION12, TRANS23, FRAMEQA1159, COUNT18: one per question; `key` is not: it is
            shared by the questions on one GIF). A repeated vid_id in a file gets `#<line>` appended; a file
            without a vid_id column gets `<gif_name>#<line>` (line = physical line, header = 1).
  video_id  gif_name;  video  <root>/<gif_dir>/<gif_name>.gif;  start/end/fps None (the whole GIF).
  question  verbatim, including the dataset's " ?" ending.
  action/transition: options [a1..a5], answer = 0-based index (int), subtitles "".
  frameqa: answer = the answer word (str). `type` and `description` are not carried.
  count: answer = int >= 0 (the data has zeros and no ones; clipping is the metric's business, §6.4).
Media files are not checked here (a separate data check does that).
"""
from __future__ import annotations

import csv
import os

from ..errors import MeltrError
from ..io import read_utf8
from .records import make_record

TASKS = {"action": "multiple_choice", "transition": "multiple_choice", "frameqa": "open_ended", "count": "count"}
SPLITS = {"train": "Train", "test": "Test"}
OPTION_COLS = ("a1", "a2", "a3", "a4", "a5")
# Columns a loader needs per task; the real files also carry vid_id, key (and type, description for FrameQA).
REQUIRED = {
    "action": ("gif_name", "question") + OPTION_COLS + ("answer",),
    "transition": ("gif_name", "question") + OPTION_COLS + ("answer",),
    "frameqa": ("gif_name", "question", "answer"),
    "count": ("gif_name", "question", "answer"),
}
HEADERS = {  # the exact headers of the original files, quoted in error messages
    "action": "gif_name question a1 a2 a3 a4 a5 answer vid_id key",
    "transition": "gif_name question a1 a2 a3 a4 a5 answer vid_id key",
    "frameqa": "gif_name question answer type vid_id key description",
    "count": "gif_name question answer vid_id key",
}


def question_file(task: str, split: str) -> str:
    """File name of one task's split, e.g. question_file('count', 'test') == 'Test_count_question.csv'."""
    return f"{SPLITS[split]}_{task}_question.csv"


def load_tgifqa(root: str | os.PathLike, task: str, *, gif_dir: str = "gifs") -> dict[str, list[dict]]:
    """Return {"train": [...], "test": [...]} records for one TGIF-QA task, in file order.

    TGIF-QA has no official val split (§3.3): carve one out of train, or evaluate on test as All-in-one does.
    """
    if task not in TASKS:
        raise MeltrError(f"TGIF-QA task: expected one of {', '.join(TASKS)}, got {task!r}")
    root = str(root)
    out = {}
    for split in SPLITS:
        path = os.path.join(root, question_file(task, split))
        out[split] = _records(path, task, split, root, gif_dir)
    return out


def _records(path: str, task: str, split: str, root: str, gif_dir: str) -> list[dict]:
    family = TASKS[task]
    records, seen = [], set()
    for line, row in _read_rows(path, task):
        gif = row["gif_name"]
        vid_id = row.get("vid_id")
        rid = vid_id if vid_id is not None else f"{gif}#{line}"
        if rid in seen:
            rid = f"{rid}#{line}"
        seen.add(rid)
        common = dict(id=rid, video_id=gif, video=os.path.join(root, gif_dir, gif + ".gif"), split=split)
        if family == "multiple_choice":
            answer = _int(path, line, "answer", row["answer"], "a 0-based option index 0-4")
            if not 0 <= answer < len(OPTION_COLS):
                raise MeltrError(f"{path}: line {line}: answer: expected a 0-based option index 0-4, got {answer}")
            rec = make_record(**common, question=row["question"], options=[row[c] for c in OPTION_COLS],
                              answer=answer, subtitles="")
        elif family == "count":
            answer = _int(path, line, "answer", row["answer"], "a count (integer >= 0)")
            if answer < 0:
                raise MeltrError(f"{path}: line {line}: answer: expected a count (integer >= 0), got {answer}")
            rec = make_record(**common, question=row["question"], answer=answer)
        else:
            rec = make_record(**common, question=row["question"], answer=row["answer"])
        records.append(rec)
    return records


def _int(path: str, line: int, col: str, value: str, expected: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise MeltrError(f"{path}: line {line}: {col}: expected {expected}, got {value!r}") from None


def _read_rows(path: str, task: str) -> list[tuple[int, dict[str, str]]]:
    """Parse one question file; return [(physical line number, {column: stripped value})] for non-blank rows."""
    text = read_utf8(path, missing=f"expected the TGIF-QA {task} questions from YunseokJANG/tgif-qa/dataset")
    # Split on "\n" only: str.splitlines would also break on \x0b, \x1c, \u2028... inside a field and shift the
    # line numbers; the "\r" of CRLF is dropped per line.
    lines = [ln[:-1] if ln.endswith("\r") else ln for ln in text.split("\n")]
    numbered = [(i, ln) for i, ln in enumerate(lines, 1) if ln.strip()]
    expected_header = HEADERS[task].replace(" ", "\\t")
    if not numbered:
        raise MeltrError(f"{path}: expected a TAB-separated header {expected_header}, got an empty file")
    header_line = numbered[0][0]
    header = [c.strip() for c in _split(path, *numbered[0])]
    if len(header) == 1 and "," in header[0]:
        raise MeltrError(f"{path}: line {header_line}: expected a TAB-separated header {expected_header}, "
                         f"got a comma-separated one (was the file re-saved as csv?)")
    missing = [c for c in REQUIRED[task] if c not in header]
    if missing:
        raise MeltrError(f"{path}: line {header_line}: expected column(s) {', '.join(missing)} in the header "
                         f"(a {task} file has {expected_header}), got {header}")
    need = REQUIRED[task] + (("vid_id",) if "vid_id" in header else ())
    out = []
    for line, text_line in numbered[1:]:
        fields = _split(path, line, text_line)
        if len(fields) != len(header):
            raise MeltrError(f"{path}: line {line}: expected {len(header)} TAB-separated fields as in the header, "
                             f"got {len(fields)}")
        row = {c: v.strip() for c, v in zip(header, fields)}
        for c in need:
            if not row[c]:
                raise MeltrError(f"{path}: line {line}: {c}: expected a non-empty value")
        out.append((line, row))
    if not out:
        raise MeltrError(f"{path}: expected at least one question row after the header, got none")
    return out


def _split(path: str, line: int, text: str) -> list[str]:
    """One TAB-separated line; QUOTE_NONE because the files have no quoting (a '"' in a question is text)."""
    try:
        return next(csv.reader([text], delimiter="\t", quoting=csv.QUOTE_NONE))
    except csv.Error as exc:
        raise MeltrError(f"{path}: line {line}: expected a TAB-separated row ({exc})") from None
