"""TVQA loader on hand-written files in the real format (docs/datasets.md §4): jsonl questions (test without
answer_idx, NaN ts, Big Bang Theory vid_names without a show prefix, "How I Met You Mother"), per-clip SRT
subtitles with speaker tags and multi-line blocks, and one-line errors for malformed input."""
from __future__ import annotations

import json
import os

import pytest

from meltr.data.records import check_records
from meltr.data.tvqa import (PREPROCESSED_SUBTITLES, TASKS, frame_dir, load_tvqa, read_srt, show_folder)
from meltr.errors import MeltrError


def _q(qid, vid, ts, show, answer=0, q="What is Monica holding when she walks in?"):
    row = {"a0": "A coffee mug", "a1": "A laptop", "a2": "A red umbrella", "a3": "Her keys", "a4": "A sandwich",
           "q": q, "qid": qid, "show_name": show, "ts": ts, "vid_name": vid}
    if answer is not None:
        row["answer_idx"] = answer
    return row


FRIENDS = "friends_s02e05_seg01_clip_03"
BBT = "s05e11_seg02_clip_07"
MET = "met_s03e04_seg02_clip_10"
TRAIN = [
    _q(900001, FRIENDS, "3.2-9.87", "Friends", 2),
    _q(900002, BBT, "0-12.4", "The Big Bang Theory", 0, "Who does Sheldon knock on the door for?"),
    _q(900003, FRIENDS, "0-4", "Friends", 4),       # same clip, another moment
    _q(900004, FRIENDS, "3.2-9.87", "Friends", 1),  # same moment as 900001
    _q(900005, MET, "10.5-20", "How I Met You Mother", 3),
]
VAL = [
    _q(900101, "castle_s01e02_seg02_clip_00", "1.5-2.5", "Castle", 0),
    _q(900102, "house_s04e01_seg01_clip_12", "5-6", "House M.D.", 1),
    _q(900103, "grey_s02e10_seg02_clip_04", "0-10.01", "Grey's Anatomy", 2),
]
TEST = [_q(900201, BBT, "2-3", "The Big Bang Theory", None), _q(900202, FRIENDS, "5-6", "Friends", None)]

# CRLF endings, speaker tags, a two-line block and a block without a leading "(": all kept as text.
FRIENDS_SRT = ("1\r\n00:00:01,120 --> 00:00:03,400\r\n(Monica:) Has anyone seen my umbrella?\r\n\r\n"
               "2\r\n00:00:03,900 --> 00:00:05,250\r\n(Joey:) Which one?\r\n(Joey:) The red one?\r\n\r\n"
               "3\r\n00:00:10,000 --> 00:00:12,000\r\nNo one answers.\r\n")
# Latin-1 bytes (not UTF-8): "café"; a timing line with '.' milliseconds; no trailing newline.
BBT_SRT = ("1\n00:00:00,500 --> 00:00:02,000\n(Sheldon:) Penny. Penny. Penny.\n\n"
           "2\n00:00:02.500 --> 00:00:04,000\n(Penny:) It's the caf\u00e9 again?").encode("iso-8859-1")


def _write_jsonl(path, rows, *, nan_ts=None):
    lines = [json.dumps(r) for r in rows]
    if nan_ts is not None:  # the real files hold a bare NaN (not a string), which json.dumps would not write
        lines[nan_ts] = lines[nan_ts].replace(json.dumps(rows[nan_ts]["ts"]), "NaN")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.fixture
def root(tmp_path):
    _write_jsonl(tmp_path / "tvqa_train.jsonl", TRAIN)
    _write_jsonl(tmp_path / "tvqa_val.jsonl", VAL)
    _write_jsonl(tmp_path / "tvqa_test_public.jsonl", TEST)
    subs = tmp_path / "tvqa_subtitles"
    subs.mkdir()
    (subs / f"{FRIENDS}.srt").write_bytes(FRIENDS_SRT.encode("ascii"))
    (subs / f"{BBT}.srt").write_bytes(BBT_SRT)
    (subs / f"{MET}.srt").write_text("1\n00:00:11,000 --> 00:00:13,000\n(Ted:) Kids, in 2005...\n")
    return tmp_path


def _one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert "\n" not in msg and "\r" not in msg
    return msg


def test_splits_and_exact_record(root):
    data = load_tvqa(root)
    assert list(data) == ["train", "val", "test"]
    assert [len(v) for v in data.values()] == [5, 3, 2]
    assert data["train"][0] == {
        "id": "900001", "video_id": f"{FRIENDS}@3.20-9.87",
        "video": os.path.join(str(root), "frames_hq", "friends_frames", FRIENDS, ""),
        "start": 3.2, "end": 9.87, "fps": 3.0, "split": "train",
        "question": "What is Monica holding when she walks in?",
        "options": ["A coffee mug", "A laptop", "A red umbrella", "Her keys", "A sandwich"], "answer": 2,
        # lines overlapping [3.2, 9.87]: 1.12-3.40 and 3.90-5.25 (two text lines), not 10-12
        "subtitles": "(Monica:) Has anyone seen my umbrella? (Joey:) Which one? (Joey:) The red one?"}
    for split, recs in data.items():
        check_records(recs, "multiple_choice", split)


def test_show_folders_including_bbt_without_prefix(root):
    data = load_tvqa(root, frames_dir="tvqa/frames")
    video = {r["id"]: r["video"] for recs in data.values() for r in recs}
    base = os.path.join(str(root), "tvqa", "frames")
    assert video["900002"] == os.path.join(base, "bbt_frames", BBT, "")
    assert video["900005"] == os.path.join(base, "met_frames", MET, "")  # show_name "How I Met You Mother"
    assert video["900101"] == os.path.join(base, "castle_frames", "castle_s01e02_seg02_clip_00", "")
    assert video["900102"] == os.path.join(base, "house_frames", "house_s04e01_seg01_clip_12", "")
    assert video["900103"] == os.path.join(base, "grey_frames", "grey_s02e10_seg02_clip_04", "")
    assert [show_folder(v) for v in ("s03e21_seg02_clip_08", "friends_s01e01_seg01_clip_00", "met_x")] == \
        ["bbt", "friends", "met"]
    assert frame_dir("/d", BBT) == os.path.join("/d", "frames_hq", "bbt_frames", BBT, "")


def test_video_id_names_the_moment(root):
    train = {r["id"]: r for r in load_tvqa(root)["train"]}
    assert train["900001"]["video_id"] == train["900004"]["video_id"] == f"{FRIENDS}@3.20-9.87"
    assert train["900003"]["video_id"] == f"{FRIENDS}@0.00-4.00"
    assert train["900002"]["video_id"] == f"{BBT}@0.00-12.40"
    assert train["900003"]["video"] == train["900001"]["video"]  # one frame folder per clip
    assert train["900003"]["subtitles"] == ("(Monica:) Has anyone seen my umbrella? (Joey:) Which one? "
                                            "(Joey:) The red one?")  # 3.9-5.25 starts before 4
    assert train["900005"]["subtitles"] == "(Ted:) Kids, in 2005..." and train["900005"]["answer"] == 3


def test_test_split_has_no_labels_and_latin1_subtitles(root):
    test = load_tvqa(root)["test"]
    assert [r["answer"] for r in test] == [None, None]
    assert test[0]["split"] == "test" and test[0]["start"] == 2.0 and test[0]["end"] == 3.0
    assert test[0]["subtitles"] == "(Sheldon:) Penny. Penny. Penny. (Penny:) It's the caf\u00e9 again?"
    assert test[1]["subtitles"] == "(Joey:) Which one? (Joey:) The red one?"


@pytest.mark.parametrize("ts", ["NaN", None, "nan", "", "12.5", "abc-def", "9-3"])
def test_nan_or_malformed_ts_means_whole_clip(root, ts):
    rows = [dict(TRAIN[0], ts=ts if ts != "NaN" else 0.0)] + TRAIN[1:]
    _write_jsonl(root / "tvqa_train.jsonl", rows, nan_ts=0 if ts == "NaN" else None)
    if ts == "NaN":
        assert '"ts": NaN' in (root / "tvqa_train.jsonl").read_text().splitlines()[0]
    stats: dict = {}
    rec = load_tvqa(root, stats=stats)["train"][0]
    assert (rec["start"], rec["end"], rec["video_id"]) == (None, None, FRIENDS)
    assert rec["subtitles"] == ("(Monica:) Has anyone seen my umbrella? (Joey:) Which one? (Joey:) The red one? "
                                "No one answers.")
    assert stats["whole_clip"] == 1


def test_missing_srt_gives_empty_subtitles_and_is_counted(root):
    stats: dict = {}
    data = load_tvqa(root, stats=stats)
    val = data["val"]
    assert [r["subtitles"] for r in val] == ["", "", ""]
    assert stats["missing_subtitles"] == sorted(
        os.path.join(str(root), "tvqa_subtitles", v["vid_name"] + ".srt") for v in VAL)
    assert stats["whole_clip"] == 0


def test_questions_in_the_release_folder(root):
    rel = root / "tvqa_qa_release"
    rel.mkdir()
    for name in ("tvqa_train.jsonl", "tvqa_val.jsonl", "tvqa_test_public.jsonl"):
        os.replace(root / name, rel / name)
    assert [r["id"] for r in load_tvqa(root)["val"]] == ["900101", "900102", "900103"]


def test_preprocessed_subtitles_jsonl(root):
    rows = [{"vid_name": FRIENDS, "sub": [{"text": "(Monica:) Hi.", "start": 0.5, "end": 1.0},
                                          {"text": "(Ross:) Hi!", "start": 4.0, "end": 5.5}]},
            {"vid_name": BBT, "sub": [{"text": "(Sheldon:) Penny.", "start": 0, "end": 2}]}]
    _write_jsonl(root / PREPROCESSED_SUBTITLES, rows)
    stats: dict = {}
    data = load_tvqa(root, subtitle_file=PREPROCESSED_SUBTITLES, stats=stats)
    train = {r["id"]: r["subtitles"] for r in data["train"]}
    assert train["900001"] == "(Ross:) Hi!" and train["900003"] == "(Monica:) Hi. (Ross:) Hi!"
    assert train["900002"] == "(Sheldon:) Penny."
    assert train["900005"] == ""  # met clip absent from the jsonl
    assert MET in stats["missing_subtitles"]


def test_read_srt_exact(root):
    assert read_srt(root / "tvqa_subtitles" / f"{FRIENDS}.srt") == [
        (1.12, 3.4, "(Monica:) Has anyone seen my umbrella?"),
        (3.9, 5.25, "(Joey:) Which one? (Joey:) The red one?"),
        (10.0, 12.0, "No one answers.")]
    assert read_srt(root / "tvqa_subtitles" / f"{BBT}.srt")[1] == (2.5, 4.0, "(Penny:) It's the caf\u00e9 again?")


def test_read_srt_without_index_lines_and_with_a_split_block(tmp_path):
    path = tmp_path / "x.srt"
    path.write_text("\ufeff00:01:02,003 --> 01:00:00,000\n(A:) one\n\n(A:) still one\n\n"
                    "2\n00:00:01,5 --> 00:00:02,25\n7\n", encoding="utf-8")
    assert read_srt(path) == [(62.003, 3600.0, "(A:) one (A:) still one"), (1.5, 2.25, "7")]


@pytest.mark.parametrize("srt,expect", [
    ("1\n00:00:01,000 --> 00:00:02,000\nok\n\n2\n00:00:03 --> 00:00:04,000\nbad\n", ("block 2", "line 6")),
    ("1\n00:00:01;000 -> 00:00:02,000\nbad\n", ("block 1", "line 2")),
    ("1\n00:00:01,000 --> 00:00:02,000\nok\n\n2\n\n", ("block 2", "line 5")),
    ("just text\n", ("block 1", "line 1")),
])
def test_read_srt_malformed_timing(tmp_path, srt, expect):
    path = tmp_path / "bad.srt"
    path.write_text(srt)
    with pytest.raises(MeltrError) as err:
        read_srt(path)
    msg = _one_line(err)
    assert msg.startswith(str(path) + ":") and "HH:MM:SS,mmm --> HH:MM:SS,mmm" in msg
    for part in expect:
        assert part in msg, (part, msg)


def test_malformed_srt_in_a_load_names_the_srt(root):
    (root / "tvqa_subtitles" / f"{MET}.srt").write_text("1\n11 --> 13\n(Ted:) Kids\n")
    with pytest.raises(MeltrError) as err:
        load_tvqa(root)
    assert _one_line(err).startswith(str(root / "tvqa_subtitles" / f"{MET}.srt") + ": block 1")


def _line(row: dict) -> str:
    return json.dumps(row)


@pytest.mark.parametrize("name,lines,expect", [
    ("tvqa_train.jsonl", [_line(TRAIN[0]), '{"qid": 1, "q": "x"'], ("line 2", "expected one JSON object")),
    ("tvqa_val.jsonl", [_line(VAL[0]), "[1, 2]"], ("line 2", "JSON object", "list")),
    ("tvqa_train.jsonl", [_line({k: v for k, v in TRAIN[0].items() if k != "answer_idx"})],
     ("line 1", "'answer_idx'")),
    ("tvqa_val.jsonl", [_line(VAL[0]), _line({k: v for k, v in VAL[1].items() if k not in ("a3", "ts")})],
     ("line 2", "'a3'", "'ts'")),
    ("tvqa_train.jsonl", [_line(dict(TRAIN[0], q=5))], ("line 1", "q:", "string", "int")),
    ("tvqa_train.jsonl", [_line(dict(TRAIN[0], qid="900001"))], ("line 1", "qid:", "integer")),
    ("tvqa_train.jsonl", [_line(dict(TRAIN[0], answer_idx=5))], ("line 1", "answer_idx", "0-4", "5")),
    ("tvqa_val.jsonl", [_line(dict(VAL[0], answer_idx="2"))], ("line 1", "answer_idx", "'2'")),
    ("tvqa_val.jsonl", [_line(dict(VAL[0], answer_idx=True))], ("line 1", "answer_idx", "True")),
    ("tvqa_test_public.jsonl", [_line(dict(TEST[0], answer_idx=-1))], ("line 1", "answer_idx", "-1")),
    ("tvqa_train.jsonl", [_line(dict(TRAIN[0], ts=[1, 2]))], ("line 1", "ts:", "'start-end'")),
    ("tvqa_train.jsonl", [_line(dict(TRAIN[0], vid_name=""))], ("line 1", "vid_name")),
    ("tvqa_train.jsonl", [_line(TRAIN[0]), "", _line(dict(TRAIN[1], qid=900001))],
     ("line 3", "qid", "unique", "line 1")),
    ("tvqa_val.jsonl", [], ("empty file",)),
])
def test_malformed_jsonl_names_file_line_and_key(root, name, lines, expect):
    path = root / name
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(MeltrError) as err:
        load_tvqa(root)
    msg = _one_line(err)
    assert msg.startswith(str(path) + ":"), msg
    for part in expect:
        assert part in msg, (part, msg)


def test_not_utf8_and_missing_files(root):
    path = root / "tvqa_val.jsonl"
    path.write_bytes(path.read_bytes().replace(b"Castle", b"Castl\xe9"))
    with pytest.raises(MeltrError) as err:
        load_tvqa(root)
    assert _one_line(err).startswith(f"{path}: line 1: expected UTF-8")
    os.remove(path)
    with pytest.raises(MeltrError) as err:
        load_tvqa(root)
    msg = _one_line(err)
    assert msg.startswith(f"{path}: file not found") and "tvqa_qa_release" in msg


def test_unknown_task_and_bad_fps(root):
    with pytest.raises(MeltrError) as err:
        load_tvqa(root, "subtitles")
    assert "qa" in _one_line(err) and "'subtitles'" in str(err.value)
    assert TASKS == {"qa": "multiple_choice"}
    with pytest.raises(MeltrError, match="fps"):
        load_tvqa(root, fps=0)


def test_a_subtitle_that_ends_before_it_starts_is_refused_naming_file_and_block(tmp_path):
    from meltr.data.tvqa import read_srt
    from meltr.errors import MeltrError

    srt = tmp_path / "clip.srt"
    srt.write_text("1\n00:00:01,000 --> 00:00:02,000\n(Penny:) Hi.\n\n2\n00:00:05,000 --> 00:00:04,000\n(Sheldon:) No.\n")
    with pytest.raises(MeltrError, match=r"clip.srt: block 2 \(line 6\): expected the end time after the start"):
        read_srt(srt)


def test_a_zero_length_moment_is_the_whole_clip():
    from meltr.data.tvqa import parse_ts

    assert parse_ts("3-3") is None and parse_ts("3-4.5") == (3.0, 4.5)
