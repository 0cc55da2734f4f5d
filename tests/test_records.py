"""The prepared-record contract, checked when a manifest is read (meltr/data/records.py), and the refusal of
non-finite scores at evaluation."""
from __future__ import annotations

import json

import pytest

from meltr.data.records import read_records
from meltr.errors import MeltrError

GOOD = {
    "retrieval": {"id": "v0", "video_id": "v0", "video": "v0.mp4", "start": None, "end": None, "fps": None,
                  "split": "train", "captions": ["a red ball moves left"]},
    "multiple_choice": {"id": "q0", "video_id": "c0", "video": "frames/c0", "start": 1.0, "end": 4.0, "fps": 3.0,
                        "split": "val", "question": "Which one?", "options": ["a", "b", "c", "d", "e"],
                        "answer": 2, "subtitles": ""},
    "open_ended": {"id": "q1", "video_id": "g0", "video": "g0.gif", "start": None, "end": None, "fps": None,
                   "split": "train", "question": "what is the color of the ball ?", "answer": "red"},
    "count": {"id": "q2", "video_id": "g1", "video": "g1.gif", "start": None, "end": None, "fps": None,
              "split": "train", "question": "How many times does it blink ?", "answer": 3},
}


def _manifest(tmp_path, family, **change):
    path = tmp_path / "train.jsonl"
    bad = {**GOOD[family], **change}
    path.write_text(json.dumps(GOOD[family]) + "\n\n" + json.dumps(bad) + "\n")  # the bad record on line 3
    return path


@pytest.mark.parametrize("family", list(GOOD))
def test_a_good_manifest_reads(tmp_path, family):
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps(GOOD[family]) + "\n")
    assert read_records(path, family) == [GOOD[family]]


@pytest.mark.parametrize("family, change, expected", [
    ("retrieval", {"captions": "a red ball"}, "captions: expected a non-empty list of non-empty strings"),
    ("retrieval", {"captions": ["ok", ""]}, "captions: expected a non-empty list"),
    ("retrieval", {"captions": []}, "captions: expected a non-empty list"),
    ("retrieval", {"video_id": ""}, "video_id: expected a non-empty string"),
    ("retrieval", {"start": 5.0, "end": 2.0}, "end 2.0: expected after start 5.0"),
    ("retrieval", {"start": -1.0}, "start: expected seconds >= 0 or null"),
    ("retrieval", {"fps": 0}, "fps: expected a frame rate > 0 or null"),
    ("multiple_choice", {"answer": 5}, "answer: expected an option index in 0..4 or null"),
    ("multiple_choice", {"answer": "2"}, "answer: expected an option index"),
    ("multiple_choice", {"answer": True}, "answer: expected an option index"),
    ("multiple_choice", {"options": ["only one"]}, "options: expected a list of at least 2"),
    ("multiple_choice", {"subtitles": None}, "subtitles: expected a string"),
    ("open_ended", {"answer": ""}, "answer: expected a non-empty string"),
    ("open_ended", {"question": 7}, "question: expected a non-empty string"),
    ("count", {"answer": -1}, "answer: expected an integer count >= 0"),
    ("count", {"answer": 2.5}, "answer: expected an integer count >= 0"),
])
def test_a_record_that_breaks_the_contract_names_file_line_and_what_was_expected(tmp_path, family, change,
                                                                                  expected):
    path = _manifest(tmp_path, family, **change)
    with pytest.raises(MeltrError) as err:
        read_records(path, family)
    assert str(err.value).startswith(f"{path}: line 3 (id ") and expected in str(err.value)


def test_evaluation_refuses_non_finite_scores():
    from meltr.evaluate import _check_finite

    _check_finite({"t2v": {"R1": 10.0}, "n_test": 60, "chance_p_value": 1e-9}, "model.pt")
    with pytest.raises(MeltrError, match=r"model.pt: metric t2v.R1 is nan; expected finite scores"):
        _check_finite({"t2v": {"R1": float("nan")}}, "model.pt")
