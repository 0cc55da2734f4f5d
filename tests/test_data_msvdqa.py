"""MSVD-QA (meltr/data/msvdqa.py): the distributed layout, its quirks, and one-line errors for broken files."""
from __future__ import annotations

import json

import pytest

from meltr.cli import main
from meltr.data.msvdqa import load_msvdqa
from meltr.data.registry import check, prepare
from meltr.data.synth.msvdqa import synth_msvdqa
from meltr.errors import MeltrError


def write_layout(root, mapping: str, splits: dict[str, list]) -> None:
    """Hand-made files as xudejing/video-question-answering and MSVD ship them (no media unless asked)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "youtube_mapping.txt").write_bytes(mapping.encode())
    for split in ("train", "val", "test"):
        (root / f"{split}_qa.json").write_text(json.dumps(splits.get(split, [])))


QA = {"train": [{"answer": "man", "id": 0, "question": "who is slicing a tomato?", "video_id": 1},
                {"answer": "slice", "id": 1, "question": "what is the man doing?", "video_id": 1}],
      "val": [{"answer": "dog", "id": 2, "question": "what is running?", "video_id": 2}],
      "test": [{"answer": "guitar", "id": 3, "question": "what is a man playing?", "video_id": 3}]}
# The real file's quirks: CRLF line ends, a blank last line, a name starting with "-", ids not in file order.
MAPPING = "-4wsuPCjDBc_5_15 vid1\r\n-7KMZQEsJW4_205_208 vid3\r\n-8y1Q0rA3n8_108_115 vid2\r\n\r\n"


def test_reads_the_distributed_layout_with_its_quirks(tmp_path):
    write_layout(tmp_path, MAPPING, QA)
    splits = load_msvdqa(tmp_path)
    assert {k: len(v) for k, v in splits.items()} == {"train": 2, "val": 1, "test": 1}
    first = splits["train"][0]
    assert first["id"] == "0" and first["video_id"] == "-4wsuPCjDBc_5_15" and first["answer"] == "man"
    assert first["video"] == str(tmp_path / "YouTubeClips" / "-4wsuPCjDBc_5_15.avi")
    assert splits["test"][0]["video_id"] == "-7KMZQEsJW4_205_208"  # vid3, mapped out of order
    assert splits["val"][0]["question"] == "what is running?"
    report = check("msvdqa", tmp_path)
    assert report["tasks"]["qa"]["train"]["clips"] == 1 and report["tasks"]["qa"]["train"]["questions"] == 2
    assert len(report["missing_media"]) == 3  # no clips written: every one is listed


@pytest.mark.parametrize("damage, expected", [
    (lambda r: (r / "youtube_mapping.txt").write_text("abc vidX\n"), "youtube_mapping.txt:1: expected '<youtube name> vid<N>'"),
    (lambda r: (r / "youtube_mapping.txt").write_text("abc vid1\nxyz vid1\n"), "youtube_mapping.txt:2: vid1 mapped twice"),
    (lambda r: (r / "youtube_mapping.txt").write_text("\n"), "no clips"),
    (lambda r: (r / "youtube_mapping.txt").unlink(), "youtube_mapping.txt: file not found"),
    (lambda r: (r / "train_qa.json").write_text("[{"), "train_qa.json: not valid JSON"),
    (lambda r: (r / "train_qa.json").write_text('{"a": 1}'), "train_qa.json: expected a JSON list"),
    (lambda r: (r / "val_qa.json").write_text(json.dumps([{"id": 2, "question": "q?", "video_id": 2}])),
     "val_qa.json: record 0: missing key 'answer'"),
    (lambda r: (r / "val_qa.json").write_text(json.dumps([{"answer": "a", "id": "2", "question": "q?",
                                                            "video_id": 2}])), "record 0: id '2': expected int"),
    (lambda r: (r / "val_qa.json").write_text(json.dumps([{"answer": "a", "id": 2, "question": "q?",
                                                            "video_id": True}])), "video_id True: expected int"),
    (lambda r: (r / "test_qa.json").write_text(json.dumps([{"answer": "a", "id": 3, "question": "q?",
                                                             "video_id": 9}])), "video_id 9: vid9 is not in"),
    (lambda r: (r / "test_qa.json").write_text(json.dumps([{"answer": " ", "id": 3, "question": "q?",
                                                             "video_id": 3}])), "empty question or answer"),
    (lambda r: (r / "test_qa.json").write_bytes(b'[{"answer": "caf\xe9"}]'), "test_qa.json: line 1: expected UTF-8"),
])
def test_broken_files_give_one_line_errors_naming_them(tmp_path, damage, expected, capsys):
    write_layout(tmp_path, MAPPING, QA)
    damage(tmp_path)
    with pytest.raises(MeltrError) as err:
        load_msvdqa(tmp_path)
    assert expected in str(err.value) and "\n" not in str(err.value)
    assert main(["data", "check", "--dataset", "msvdqa", "--root", str(tmp_path)]) == 2
    assert expected in capsys.readouterr().err


def test_synthetic_stand_in_is_learnable_in_form_and_disjoint(tmp_path):
    written = synth_msvdqa(tmp_path / "raw", n_train=8, n_val=4, n_test=6, size=32, seed=3)
    assert written == {"train": {"clips": 4, "questions": 8}, "val": {"clips": 2, "questions": 4},
                       "test": {"clips": 3, "questions": 6}}
    assert sorted(p.suffix for p in (tmp_path / "raw/YouTubeClips").iterdir()) == [".avi"] * 9
    attrs = json.loads((tmp_path / "raw/synth_attributes.json").read_text())
    for rec in load_msvdqa(tmp_path / "raw")["train"]:  # each answer is what the clip shows
        a = attrs[rec["video_id"]]
        assert rec["answer"] in (a["colour"], a["shape"], a["motion"])
    summary = prepare("msvdqa", "qa", tmp_path / "raw", tmp_path / "prep")
    assert summary["eval_split"] == "test" and summary["family"] == "open_ended"
    assert summary["test"]["missing_media"] == []
    # the clips decode: eight frames of the moving shape
    from meltr.data.video import sample_frames

    clip = next((tmp_path / "raw/YouTubeClips").iterdir())
    assert sample_frames(clip, 8, 32).shape == (8, 32, 32, 3)
