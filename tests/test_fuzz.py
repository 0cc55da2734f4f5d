"""Fuzz the loaders: random mutations of every dataset's real-format annotation files, of prepared manifests and
of a feature store. Whatever the bytes, a loader either loads or raises the project's one-line `MeltrError`;
any other exception (KeyError, TypeError, UnicodeDecodeError, a bare ValueError, ...) is a loader bug.

The synthetic datasets are written once per module; each mutated input is a fresh folder of symlinks to the
pristine dataset with only the mutated file written for real (the loaders only check that media exist).
Hypothesis runs derandomized with no example database, so CI sees the same inputs on every run.
`COUNTS` collects, per target, how many mutated inputs were tried, loaded and refused; the last test prints it.
"""
from __future__ import annotations

import copy
import io
import json
import math
import os
import pickle
import shutil
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from meltr.data import registry  # noqa: E402
from meltr.data.records import read_records  # noqa: E402
from meltr.data.msvdqa import MAPPING as MSVD_MAPPING, SPLITS as MSVD_SPLITS, qa_file  # noqa: E402
from meltr.data.synth.msrvtt import synth_msrvtt  # noqa: E402
from meltr.data.synth.msvdqa import synth_msvdqa  # noqa: E402
from meltr.data.synth.tgifqa import synth_tgifqa  # noqa: E402
from meltr.data.synth.tvqa import synth_tvqa  # noqa: E402
from meltr.data.synth.youcook2 import synth_youcook2  # noqa: E402
from meltr.data.tgifqa import SPLITS as TGIF_SPLITS, TASKS as TGIF_TASKS, question_file  # noqa: E402
from meltr.data.tvqa import PREPROCESSED_SUBTITLES  # noqa: E402
from meltr.errors import MeltrError  # noqa: E402
from meltr.features.store import FeatureStore, write_store  # noqa: E402
from meltr.io import write_jsonl  # noqa: E402

SYNTH = {  # the small sizes of tests/test_data_registry.py SYNTH_ARGS
    "msrvtt": (synth_msrvtt, dict(n_train=10, n_test=4, seconds=2, size=32, captions_per_video=3)),
    "youcook2": (synth_youcook2, dict(n_train_videos=4, n_val_videos=2, segments_per_video=2, size=32)),
    "tgifqa": (synth_tgifqa, dict(n_train=6, n_test=4, size=32)),
    "tvqa": (synth_tvqa, dict(n_train=6, n_val=4, n_test=2, size=32)),
    "msvdqa": (synth_msvdqa, dict(n_train=6, n_val=4, n_test=4, size=32)),
}

# Per target: examples per test. Sized so that the whole module runs in well under 60 s on a 2-core machine.
EXAMPLES = {"msrvtt": 400, "youcook2": 400, "tgifqa": 400, "tvqa": 400, "msvdqa": 300, "manifest": 400,
            "features": 200}
SCALE = float(os.environ.get("MELTR_FUZZ_SCALE", "1"))  # e.g. 20 for a deeper (slower) local hunt
RANDOM = os.environ.get("MELTR_FUZZ_RANDOM") == "1"      # fresh random inputs instead of the fixed CI ones

COUNTS: dict[str, dict[str, int]] = defaultdict(lambda: {"tried": 0, "loaded": 0, "refused": 0})


def fuzz_settings(target: str):
    return settings(max_examples=max(1, int(EXAMPLES[target] * SCALE)), deadline=None, derandomize=not RANDOM,
                    database=None,
                    suppress_health_check=list(HealthCheck), print_blob=False)


# ------------------------------------------------------------------------------------------------ fixtures

@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@pytest.fixture(scope="module")
def synth(work) -> dict[str, Path]:
    roots = {}
    for name, (fn, kwargs) in SYNTH.items():
        fn(work / "pristine" / name, **kwargs)
        roots[name] = work / "pristine" / name
    return roots


# The files each loader reads, relative to the dataset root (what the synthetic writers produce).
def annotation_files(name: str, root: Path) -> list[str]:
    if name == "msrvtt":
        return ["MSRVTT_data.json", "MSRVTT_train.9k.csv", "MSRVTT_train.7k.csv", "MSRVTT_JSFUSION_test.csv"]
    if name == "youcook2":
        return ["youcookii_annotations_trainval.json", "youcookii_train.csv", "youcookii_val.csv",
                "youcookii_data.no_transcript.pickle"]
    if name == "tgifqa":
        return [question_file(t, s) for t in TGIF_TASKS for s in TGIF_SPLITS]
    if name == "tvqa":
        return (sorted(str(p.relative_to(root)) for p in (root / "tvqa_qa_release").glob("*.jsonl"))
                + sorted(str(p.relative_to(root)) for p in (root / "tvqa_subtitles").glob("*.srt"))
                + [PREPROCESSED_SUBTITLES])
    if name == "msvdqa":
        return [qa_file(s) for s in MSVD_SPLITS] + [MSVD_MAPPING]
    raise AssertionError(name)


def loader_calls(name: str, rel: str, root: Path) -> list:
    """The loader calls that read `rel` (each a no-argument function)."""
    def load(task, **options):
        return lambda: registry.load(name, task, root, **options)

    if name == "msrvtt":
        return [load("retrieval"), load("retrieval", train_list="7k"), load("captioning")]
    if name == "youcook2":
        if rel.endswith(".json"):
            return [load("retrieval"), load("captioning")]
        return [load("retrieval", variant="univl"), load("captioning", variant="univl")]
    if name == "tgifqa":
        task = rel.split("_")[1]
        return [load(task)]
    if name == "tvqa":
        if rel == PREPROCESSED_SUBTITLES:
            return [load("qa", subtitle_file=PREPROCESSED_SUBTITLES)]
        return [load("qa"), load("qa", subtitle_file=PREPROCESSED_SUBTITLES)]
    if name == "msvdqa":
        return [load("qa")]
    raise AssertionError(name)


def overlay(src: Path, dst: Path, rel: str, data: bytes) -> Path:
    """dst: a copy of src made of symlinks, except the file `rel` (and the folders above it), which holds data."""
    parts = Path(rel).parts
    dst.mkdir(parents=True)
    cur_src, cur_dst = src, dst
    for depth, part in enumerate(parts):
        for entry in cur_src.iterdir():
            if entry.name != part:
                (cur_dst / entry.name).symlink_to(entry, target_is_directory=entry.is_dir())
        if depth == len(parts) - 1:
            (cur_dst / part).write_bytes(data)
        else:
            cur_src, cur_dst = cur_src / part, cur_dst / part
            cur_dst.mkdir()
    return dst


def outcome(target: str, what: str, calls: list) -> None:
    """Run each call; count the input as refused if any call raised MeltrError, loaded if all returned.
    Anything but a MeltrError fails the test, naming the input."""
    refused = False
    for call in calls:
        try:
            call()
        except MeltrError as exc:
            msg = str(exc)
            assert msg and "\n" not in msg, f"{target} {what}: MeltrError message is not one line: {msg!r}"
            refused = True
        except Exception as exc:
            raise AssertionError(f"{target} {what}: {type(exc).__name__} instead of MeltrError: {exc}") from exc
    counts = COUNTS[target]
    counts["tried"] += 1
    counts["refused" if refused else "loaded"] += 1


# ------------------------------------------------------------------------------------------------ mutators

SPECIAL_VALUES = [None, "", " ", "NaN", "x", "-1", "0", "1e400", 0, 1, -1, -1e9, 0.5, 1.5, 10 ** 30, -(10 ** 30),
                  1e308, math.nan, math.inf, -math.inf, True, False, [], [""], [None], [1, 2, 3], {}, {"": None},
                  "\u2028", "a\tb", "a,b", "a/b"]
VALUES = st.one_of(st.sampled_from(SPECIAL_VALUES), st.integers(), st.floats(), st.text(max_size=8))
TEXT_CELLS = st.one_of(
    st.sampled_from(["", " ", "-1", "0", "5", "7", "1e400", "nan", "inf", "0x1", "\u0663", "1_000", "99999999999999999999",
                     "1.5", '"', "'", "a,b", "a;b", "a\tb", "\x0b", "\u2028", "\x00", "é", "video0", "video999"]),
    st.text(max_size=10))


def _nodes(obj, path=()):
    """Every path into a JSON-like structure (dict keys, list/tuple/array indices), the root () first."""
    yield path
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _nodes(v, path + (k,))
    elif isinstance(obj, (list, tuple)) or (isinstance(obj, np.ndarray) and obj.ndim == 1):
        for i, v in enumerate(obj):
            yield from _nodes(v, path + (i,))


def _parent(obj, path):
    for k in path[:-1]:
        obj = obj[k]
    return obj


def _thaw(obj):
    """Make every container mutable in place: tuples -> lists, numpy arrays -> object arrays (copied)."""
    if isinstance(obj, dict):
        return {k: _thaw(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_thaw(v) for v in obj]
    if isinstance(obj, np.ndarray) and obj.ndim == 1:
        return obj.astype(object)
    return copy.deepcopy(obj)


@st.composite
def structure_mutation(draw, obj):
    """(mutated copy of a JSON-like / pickled structure, description). Drop a key or element, replace a value
    with another type (str/int/list/null/nan/inf/huge/negative/empty), wrap, stringify, duplicate, rename."""
    obj = _thaw(obj)
    nodes = list(_nodes(obj))
    path = nodes[draw(st.integers(0, len(nodes) - 1))]
    op = draw(st.sampled_from(["drop", "replace", "replace", "wrap", "stringify", "duplicate", "rename", "negate",
                               "empty", "shorten"]))
    value = obj if not path else _parent(obj, path)[path[-1]]
    if op == "replace" or (not path and op in ("drop", "duplicate", "rename")):
        new = copy.deepcopy(draw(VALUES))
        op = "replace"
    elif op == "wrap":
        new = [value]
    elif op == "stringify":
        new = str(value)
    elif op == "negate":
        new = -value if isinstance(value, (int, float)) and not isinstance(value, bool) else -1
    elif op == "empty":
        new = type(value)() if isinstance(value, (str, list, dict)) else (value[:0] if isinstance(value, np.ndarray) else 0)
    elif op == "shorten":
        new = value[:-1] if isinstance(value, (str, list, np.ndarray)) and len(value) else None
    else:
        new = None
    if not path:
        return new, f"{op} root -> {new!r:.60}"
    parent, key = _parent(obj, path), path[-1]
    if op == "drop":
        if isinstance(parent, np.ndarray):  # arrays do not shrink in place: replace the array in its holder
            _parent(obj, path[:-1])[path[-2]] = np.delete(parent, key)
        else:
            del parent[key]
    elif op == "duplicate":
        if isinstance(parent, list):
            parent.insert(key, copy.deepcopy(value))
        elif isinstance(parent, dict):  # a sibling takes this value (two keys alike: ids, start == end, ...)
            siblings = sorted(map(str, parent))
            parent[draw(st.sampled_from(siblings))] = copy.deepcopy(value)
        else:
            _parent(obj, path[:-1])[path[-2]] = np.insert(parent, key, value)
    elif op == "rename":
        if isinstance(parent, dict):
            new_key = draw(st.sampled_from(["", f"{key}_", str(key).upper(), " " + str(key)]))
            parent[new_key] = parent.pop(key)
        else:
            parent[key] = None
    else:
        parent[key] = new
    return obj, f"{op} {list(path)} -> {new!r:.60}"


@st.composite
def byte_mutation(draw, data: bytes):
    """Truncate, flip a bit, insert/delete bytes, insert a Latin-1 byte, NUL, BOM, empty or random content."""
    op = draw(st.sampled_from(["truncate", "flip", "insert", "delete", "latin1", "latin1", "nul", "bom", "empty",
                               "random", "long_number"]))
    n = len(data)
    pos = draw(st.integers(0, n))
    if op == "long_number":  # a digit run past Python's 4300-digit int() limit (a ValueError, not a syntax error)
        digits = [i for i, b in enumerate(data) if 0x30 <= b <= 0x39] or [0]
        pos = digits[min(pos, len(digits) - 1)]
        return data[:pos] + b"9" * 5000 + data[pos:], f"insert 5000 digits at {pos}"
    if op == "truncate":
        return data[:pos], f"truncate at {pos}"
    if op == "flip" and n:
        pos = min(pos, n - 1)
        bit = draw(st.integers(0, 7))
        return data[:pos] + bytes([data[pos] ^ (1 << bit)]) + data[pos + 1:], f"flip bit {bit} of byte {pos}"
    if op == "insert":
        extra = draw(st.binary(min_size=1, max_size=4))
        return data[:pos] + extra + data[pos:], f"insert {extra!r} at {pos}"
    if op == "delete":
        k = draw(st.integers(1, 16))
        return data[:pos] + data[pos + k:], f"delete {k} bytes at {pos}"
    if op == "latin1":
        b = bytes([draw(st.integers(0x80, 0xFF))])
        return data[:pos] + b + data[pos:], f"insert Latin-1 byte {b!r} at {pos}"
    if op == "nul":
        return data[:pos] + b"\x00" + data[pos:], f"insert NUL at {pos}"
    if op == "bom":
        return b"\xef\xbb\xbf" + data, "prepend a UTF-8 BOM"
    if op == "random":
        junk = draw(st.binary(max_size=64))
        return junk, f"replace with {junk!r}"
    return b"", "empty file"


def _split_lines(text: str) -> tuple[list[str], str, bool]:
    nl = "\r\n" if "\r\n" in text else "\n"
    trailing = text.endswith(nl)
    lines = text.split(nl)
    if trailing:
        lines = lines[:-1]
    return lines, nl, trailing


def _join_lines(lines: list[str], nl: str, trailing: bool) -> bytes:
    return (nl.join(lines) + (nl if trailing and lines else "")).encode("utf-8")


@st.composite
def csv_mutation(draw, data: bytes):
    """Drop/duplicate/swap a column, empty or change a cell, drop/duplicate a row, a row with a field too many or
    too few, rename a header column, header only, blank lines, CRLF <-> LF."""
    text = data.decode("utf-8")
    lines, nl, trailing = _split_lines(text)
    sep = "\t" if "\t" in lines[0] else ","
    rows = [ln.split(sep) for ln in lines]
    width = len(rows[0])
    op = draw(st.sampled_from(["drop_col", "dup_col", "swap_cols", "empty_cell", "set_cell", "set_cell", "drop_row",
                               "dup_row", "extra_field", "missing_field", "rename_col", "header_only", "blank_line",
                               "newlines"]))
    r = draw(st.integers(0, len(rows) - 1))
    c = draw(st.integers(0, width - 1))
    what = f"{op} row {r} col {c}"
    if op == "drop_col":
        rows = [row[:c] + row[c + 1:] for row in rows]
    elif op == "dup_col":
        rows = [row[:c + 1] + row[c:c + 1] + row[c + 1:] for row in rows]
    elif op == "swap_cols":
        d = draw(st.integers(0, width - 1))
        for row in rows:
            if c < len(row) and d < len(row):
                row[c], row[d] = row[d], row[c]
        what += f" <-> {d}"
    elif op == "empty_cell" and c < len(rows[r]):
        rows[r][c] = ""
    elif op == "set_cell" and c < len(rows[r]):
        rows[r][c] = draw(TEXT_CELLS)
        what += f" = {rows[r][c]!r}"
    elif op == "drop_row":
        del rows[r]
    elif op == "dup_row":
        rows.insert(r, list(rows[r]))
    elif op == "extra_field":
        rows[r].append(draw(TEXT_CELLS))
    elif op == "missing_field":
        rows[r] = rows[r][:-1]
    elif op == "rename_col" and c < len(rows[0]):
        rows[0][c] = draw(st.sampled_from(["", rows[0][c].upper(), " " + rows[0][c], rows[0][c] + "x"]))
    elif op == "header_only":
        rows = rows[:1]
    elif op == "blank_line":
        rows.insert(r, [""])
    elif op == "newlines":
        nl = draw(st.sampled_from(["\n", "\r\n", "\r"]))
        what = f"line endings {nl!r}"
    return _join_lines([sep.join(row) for row in rows], nl, trailing), what


@st.composite
def jsonl_mutation(draw, data: bytes):
    """A line dropped, duplicated, blank or not JSON / not an object, or one record mutated structurally."""
    text = data.decode("utf-8")
    lines, nl, trailing = _split_lines(text)
    i = draw(st.integers(0, len(lines) - 1))
    op = draw(st.sampled_from(["record", "record", "record", "record", "drop", "duplicate", "garbage", "non_object",
                               "blank"]))
    if op == "record":
        rec, what = draw(structure_mutation(json.loads(lines[i])))
        lines[i] = json.dumps(rec)
    elif op == "drop":
        del lines[i]
        what = ""
    elif op == "duplicate":
        lines.insert(i, lines[i])
        what = ""
    elif op == "garbage":
        lines[i] = draw(st.sampled_from(["{", "}", "NaN", '{"a": NaN', "[1,", "\x00", lines[i][: len(lines[i]) // 2]]))
        what = repr(lines[i][:40])
    elif op == "non_object":
        lines[i] = json.dumps(draw(st.sampled_from([None, 1, "x", [], [{}], 1.5])))
        what = lines[i]
    else:
        lines.insert(i, draw(st.sampled_from(["", " ", "\t"])))
        what = ""
    return _join_lines(lines, nl, trailing), f"line {i + 1} {op} {what}"


@st.composite
def json_mutation(draw, data: bytes):
    obj, what = draw(structure_mutation(json.loads(data)))
    return (json.dumps(obj) + "\n").encode("utf-8"), what


BAD_TIMING = ["", "-->", "00:00:01,000 -> 00:00:02,000", "1 --> 2", "00:00:01 --> 00:00:02", "99:99:99,999 --> 0:0:0,0",
              "00:00:01,000 --> ", "--> 00:00:02,000", "00:00:01,000 --> 00:00:02,000 extra", "00:61:00,000 --> 00:62:00,000",
              "999999999999:00:00,000 --> 999999999999:00:01,000", "-1:00:00,000 --> 00:00:01,000", "a --> b"]


@st.composite
def srt_mutation(draw, data: bytes):
    """A bad timing line, end before start, huge times, an index line or blank separator dropped, a line inserted,
    CRLF / CR line endings."""
    text = data.decode("utf-8")
    lines, nl, trailing = _split_lines(text)
    timing = [i for i, ln in enumerate(lines) if "-->" in ln] or [0]
    t = timing[draw(st.integers(0, len(timing) - 1))]
    op = draw(st.sampled_from(["bad_timing", "bad_timing", "end_before_start", "drop_line", "drop_blanks",
                               "insert_line", "newlines", "drop_index"]))
    what = f"{op} at line {t + 1}"
    if op == "bad_timing":
        lines[t] = draw(st.one_of(st.sampled_from(BAD_TIMING), st.text(max_size=30)))
        what += f" = {lines[t]!r}"
    elif op == "end_before_start" and "-->" in lines[t]:
        a, b = lines[t].split("-->", 1)
        lines[t] = f"{b.strip()} --> {a.strip()}"
    elif op == "drop_line":
        del lines[draw(st.integers(0, len(lines) - 1))]
    elif op == "drop_blanks":
        lines = [ln for ln in lines if ln.strip()]
    elif op == "insert_line":
        lines.insert(draw(st.integers(0, len(lines))), draw(st.one_of(st.sampled_from(BAD_TIMING + ["7", "0"]),
                                                                       st.text(max_size=20))))
    elif op == "newlines":
        nl = draw(st.sampled_from(["\r\n", "\r"]))
    elif op == "drop_index" and t > 0:
        del lines[t - 1]
    return _join_lines(lines, nl, trailing), what


@st.composite
def pickle_mutation(draw, data: bytes):
    obj, what = draw(structure_mutation(pickle.loads(data)))
    return pickle.dumps(obj), what


@st.composite
def npy_mutation(draw, data: bytes):
    """A well-formed .npy of another shape or dtype (2-D, 4-D, empty, object, complex, strings, structured)."""
    n = draw(st.integers(0, 4))
    kind = draw(st.sampled_from(["2d", "4d", "rows", "empty", "object", "complex", "str", "structured", "int8",
                                 "nan", "scalar"]))
    arr = {"2d": lambda: np.zeros((n, 4), np.float32), "4d": lambda: np.zeros((n, 2, 4, 1), np.float32),
           "rows": lambda: np.zeros((n, 2, 4), np.float32), "empty": lambda: np.zeros((3, 0, 4), np.float32),
           "object": lambda: np.array([[[None] * 4] * 2] * 3, dtype=object),
           "complex": lambda: np.ones((3, 2, 4), np.complex64), "str": lambda: np.full((3, 2, 4), "ab"),
           "structured": lambda: np.zeros((3, 2, 4), dtype=[("a", "f4"), ("b", "i4")]),
           "int8": lambda: np.ones((3, 2, 4), np.int8), "nan": lambda: np.full((3, 2, 4), np.nan, np.float32),
           "scalar": lambda: np.float32(1.0)}[kind]()
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=True)
    return buf.getvalue(), f"npy {kind} shape {np.shape(arr)}"


STRUCTURED = {".json": json_mutation, ".jsonl": jsonl_mutation, ".csv": csv_mutation, ".srt": srt_mutation,
              ".pickle": pickle_mutation, ".npy": npy_mutation}


def mutate(data, rel: str, original: bytes) -> tuple[bytes, str]:
    """Draw a byte-level (a third of the time) or structure-level mutation of one file."""
    structured = STRUCTURED.get(Path(rel).suffix)
    if structured is None or data.draw(st.integers(0, 2), label="bytes?") == 0:
        mutated, what = data.draw(byte_mutation(original), label="byte mutation")
    else:
        mutated, what = data.draw(structured(original), label="structure mutation")
    return mutated, f"{rel}: {what}"


# ------------------------------------------------------------------------------------------------ annotation files

def fuzz_dataset(name: str, synth: dict[str, Path], work: Path, data) -> None:
    src = synth[name]
    files = annotation_files(name, src)
    rel = data.draw(st.sampled_from(files), label="file")
    mutated, what = mutate(data, rel, (src / rel).read_bytes())
    root = overlay(src, Path(tempfile.mkdtemp(dir=work)) / name, rel, mutated)
    try:
        calls = loader_calls(name, rel, root)
        if data.draw(st.integers(0, 3), label="check?") == 0:  # `meltr data check` on a quarter of the inputs
            calls.append(lambda: registry.check(name, root))
        outcome(name, what, calls)
    finally:
        shutil.rmtree(root.parent, ignore_errors=True)


def test_pristine_datasets_load(synth):
    """The unmutated synthetic data loads with every loader call the fuzz tests make."""
    for name, src in synth.items():
        for rel in annotation_files(name, src):
            for call in loader_calls(name, rel, src):
                call()
        registry.check(name, src)


@fuzz_settings("msrvtt")
@given(data=st.data())
def test_fuzz_msrvtt(synth, work, data):
    fuzz_dataset("msrvtt", synth, work, data)


@fuzz_settings("youcook2")
@given(data=st.data())
def test_fuzz_youcook2(synth, work, data):
    fuzz_dataset("youcook2", synth, work, data)


@fuzz_settings("tgifqa")
@given(data=st.data())
def test_fuzz_tgifqa(synth, work, data):
    fuzz_dataset("tgifqa", synth, work, data)


@fuzz_settings("tvqa")
@given(data=st.data())
def test_fuzz_tvqa(synth, work, data):
    fuzz_dataset("tvqa", synth, work, data)


@fuzz_settings("msvdqa")
@given(data=st.data())
def test_fuzz_msvdqa(synth, work, data):
    fuzz_dataset("msvdqa", synth, work, data)


# ------------------------------------------------------------------------------------------------ prepared manifests

MANIFESTS = {  # manifest name -> (dataset, task, split)
    "msrvtt_retrieval": ("msrvtt", "retrieval", "train"),
    "msrvtt_captioning": ("msrvtt", "captioning", "test"),
    "youcook2_captioning": ("youcook2", "captioning", "val"),
    "tgifqa_action": ("tgifqa", "action", "train"),
    "tgifqa_frameqa": ("tgifqa", "frameqa", "test"),
    "tgifqa_count": ("tgifqa", "count", "train"),
    "tvqa_qa": ("tvqa", "qa", "train"),
}


@pytest.fixture(scope="module")
def manifests(synth, work) -> dict[str, tuple[Path, str]]:
    """Prepared-manifest JSONL files (a few records each) with their task family."""
    out = {}
    for name, (dataset, task, split) in MANIFESTS.items():
        records = registry.load(dataset, task, synth[dataset])[split][:4]
        path = work / "manifests" / f"{name}.jsonl"
        write_jsonl(path, records)
        out[name] = (path, registry.task_family(dataset, task))
    return out


def test_pristine_manifests_load(manifests):
    for path, family in manifests.values():
        assert read_records(path, family)


@fuzz_settings("manifest")
@given(data=st.data())
def test_fuzz_manifests(manifests, work, data):
    name = data.draw(st.sampled_from(sorted(manifests)), label="manifest")
    src, family = manifests[name]
    mutated, what = mutate(data, src.name, src.read_bytes())
    path = Path(tempfile.mkdtemp(dir=work)) / src.name
    path.write_bytes(mutated)
    try:
        outcome("manifest", f"{family} {what}", [lambda: read_records(path, family)])
    finally:
        shutil.rmtree(path.parent, ignore_errors=True)


# ------------------------------------------------------------------------------------------------ feature store

@pytest.fixture(scope="module")
def store(work) -> Path:
    path = work / "store"
    write_store(path, ["video0", "video1", "video2"], np.arange(24, dtype=np.float32).reshape(3, 2, 4),
                {"extractor": "fuzz", "frames": 2,
                 "skipped": [{"video_id": "video3", "video": "videos/video3.mp4", "error": "cannot decode"}]})
    return path


def _use_store(path: Path) -> None:
    fs = FeatureStore(path)
    fs.get(fs.video_ids[:2])
    assert fs.dim >= 0 and fs.frames >= 0
    fs.keep_available([{"video_id": v} for v in fs.video_ids[:2]] + [{"video_id": s["video_id"]} for s in fs.skipped],
                      "fuzz")


def test_pristine_store_loads(store):
    _use_store(store)


@fuzz_settings("features")
@given(data=st.data())
def test_fuzz_feature_store(store, work, data):
    rel = data.draw(st.sampled_from(["index.json", "features.npy"]), label="file")
    mutated, what = mutate(data, rel, (store / rel).read_bytes())
    path = overlay(store, Path(tempfile.mkdtemp(dir=work)) / "store", rel, mutated)
    try:
        outcome("features", what, [lambda: _use_store(path)])
    finally:
        shutil.rmtree(path.parent, ignore_errors=True)


# ------------------------------------------------------------------------------------------------ report

def test_report_counts():
    """Print how many mutated inputs were tried, loaded and refused per target (run with -s to see it)."""
    if not COUNTS:
        pytest.skip("no fuzz test ran in this session")
    print("\nfuzz counts (tried / loaded / refused with MeltrError):")
    for target, c in sorted(COUNTS.items()):
        print(f"  {target:10s} {c['tried']:4d} / {c['loaded']:4d} / {c['refused']:4d}")
        assert c["tried"] == c["loaded"] + c["refused"]
