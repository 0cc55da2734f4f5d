"""Synthetic MSRVTT: on-disk formats, determinism, loader round trip and one-line errors for bad input."""
from __future__ import annotations

import csv
import json
import re
import shutil

import pytest

from meltr.data.msrvtt import load_msrvtt, prepare_msrvtt
from meltr.data.synth import COLOURS, SHAPES, synth_msrvtt
from meltr.errors import MeltrError
from meltr.io import read_jsonl

SMALL = dict(n_train=12, n_test=6, seconds=2, fps=8, size=32)
CSVS = ("MSRVTT_train.9k.csv", "MSRVTT_train.7k.csv", "MSRVTT_JSFUSION_test.csv")


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("msrvtt")
    counts = synth_msrvtt(root, **SMALL, seed=3)
    return root, counts


@pytest.fixture
def copy_root(synth_root, tmp_path):
    """A private copy to corrupt (videos are not needed for the annotation checks)."""
    root = tmp_path / "copy"
    shutil.copytree(synth_root[0], root, ignore=shutil.ignore_patterns("videos"))
    return root


def _one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert "\n" not in msg
    return msg


def test_counts_and_files(synth_root):
    root, counts = synth_root
    assert counts == {"videos": 18, "train_9k": 12, "train_7k": counts["train_7k"], "test": 6, "sentences": 90}
    for i in range(18):
        assert (root / "videos" / f"video{i}.mp4").stat().st_size > 0
    assert not list(root.rglob("*.tmp"))  # no temp files left behind


def test_exact_formats(synth_root):
    root, counts = synth_root
    data = json.loads((root / "MSRVTT_data.json").read_text())
    assert set(data) == {"info", "videos", "sentences"}
    assert [v["video_id"] for v in data["videos"]] == [f"video{i}" for i in range(18)]
    for i, v in enumerate(data["videos"]):
        assert set(v) == {"id", "video_id", "category", "url", "start time", "end time", "split"}
        assert v["id"] == i and 0 <= v["category"] < 20 and v["end time"] > v["start time"]
        assert re.fullmatch(r"https://www\.youtube\.com/watch\?v=[A-Za-z0-9_-]{11}", v["url"])
    splits = [v["split"] for v in data["videos"]]
    # official split by position: train, then validate, then test; the test range holds the 1k-A test set
    assert splits == sorted(splits, key=["train", "validate", "test"].index)
    assert set(splits) == {"train", "validate", "test"} and splits.count("test") >= 6
    assert [s["sen_id"] for s in data["sentences"]] == list(range(90))
    assert all(set(s) == {"sen_id", "video_id", "caption"} for s in data["sentences"])

    lines9k = (root / "MSRVTT_train.9k.csv").read_text().splitlines()
    assert lines9k == ["video_id"] + [f"video{i}" for i in range(12)]
    lines7k = (root / "MSRVTT_train.7k.csv").read_text().splitlines()
    n_trval = splits.index("test")
    assert lines7k == ["video_id"] + [f"video{i}" for i in range(n_trval)] and counts["train_7k"] == n_trval

    rows = list(csv.reader((root / "MSRVTT_JSFUSION_test.csv").open()))
    assert rows[0] == ["key", "vid_key", "video_id", "sentence"]
    for k, (key, vid_key, vid, _sentence) in enumerate(rows[1:]):
        n = int(vid.removeprefix("video"))
        assert key == f"ret{k}" and vid_key == f"msr{n}" and splits[n] == "test"


def test_determinism(tmp_path, synth_root):
    root, _ = synth_root
    again = tmp_path / "again"
    other = tmp_path / "other"
    synth_msrvtt(again, **SMALL, seed=3)
    synth_msrvtt(other, **SMALL, seed=4)
    for name in ("MSRVTT_data.json",) + CSVS:
        assert (again / name).read_bytes() == (root / name).read_bytes(), name
    assert (other / "MSRVTT_data.json").read_bytes() != (root / "MSRVTT_data.json").read_bytes()
    assert (other / "MSRVTT_JSFUSION_test.csv").read_bytes() != (root / "MSRVTT_JSFUSION_test.csv").read_bytes()


def test_captions_and_distinct_test_combos(synth_root):
    root, _ = synth_root
    data = json.loads((root / "MSRVTT_data.json").read_text())
    attrs = json.loads((root / "synth_attributes.json").read_text())
    caps: dict[str, list[str]] = {}
    for s in data["sentences"]:
        caps.setdefault(s["video_id"], []).append(s["caption"])
    for vid, a in attrs.items():
        assert len(caps[vid]) == 5 and len(set(caps[vid])) == 5  # five different paraphrases
        for cap in caps[vid]:
            assert a["colour"] in cap.split() and cap == cap.lower()
            assert not (set(cap.split()) & (set(COLOURS) - {a["colour"]}))  # no other colour named
    test_ids = [r[2] for r in list(csv.reader((root / "MSRVTT_JSFUSION_test.csv").open()))[1:]]
    combos = [tuple(attrs[v][k] for k in ("colour", "shape", "motion")) for v in test_ids]
    assert len(set(combos)) == len(combos)
    assert {attrs[v]["shape"] for v in attrs} <= set(SHAPES)


def test_prepare_round_trip(synth_root, tmp_path):
    root, _ = synth_root
    out = tmp_path / "prepared"
    summary = prepare_msrvtt(root, out)
    train, test = read_jsonl(out / "train.jsonl"), read_jsonl(out / "test.jsonl")
    assert json.loads((out / "summary.json").read_text()) == summary
    assert summary["train"]["videos"] == len(train) == 12 and summary["test"]["videos"] == len(test) == 6
    assert summary["train"]["captions"] == 60 and summary["test"]["captions"] == 6
    assert summary["train"]["missing_media"] == summary["test"]["missing_media"] == []

    data = json.loads((root / "MSRVTT_data.json").read_text())
    caps: dict[str, list[str]] = {}
    for s in data["sentences"]:
        caps.setdefault(s["video_id"], []).append(s["caption"])
    assert not {r["video_id"] for r in train} & {r["video_id"] for r in test}
    for r in train:
        assert r["split"] == "train" and r["captions"] == caps[r["video_id"]]
    for r in test:
        assert r["split"] == "test" and len(r["captions"]) == 1 and r["captions"][0] in caps[r["video_id"]]
    for r in train + test:
        assert r["video"] == str(root / "videos" / f"{r['video_id']}.mp4")
        assert (root / "videos" / f"{r['video_id']}.mp4").is_file()

    seven = load_msrvtt(root, train_list="7k")
    assert [r["video_id"] for r in seven["train"]] == [f"video{i}" for i in range(len(seven["train"]))]


def test_absolute_video_dir(synth_root):
    root, _ = synth_root
    recs = load_msrvtt(root, video_dir="/elsewhere/vids")
    assert recs["test"][0]["video"].startswith("/elsewhere/vids/video")


def test_semicolon_jsfusion(copy_root):
    path = copy_root / "MSRVTT_JSFUSION_test.csv"
    expected = load_msrvtt(copy_root)["test"]
    path.write_text(path.read_text().replace(",", ";"))
    assert load_msrvtt(copy_root)["test"] == expected


def test_malformed_json(copy_root):
    path = copy_root / "MSRVTT_data.json"
    path.write_text('{"videos": [\n  {"video_id": "video0",}\n]}')
    with pytest.raises(MeltrError) as err:
        load_msrvtt(copy_root)
    msg = _one_line(err)
    assert str(path) in msg and ":2:" in msg and "invalid JSON" in msg


def test_missing_caption_key(copy_root):
    path = copy_root / "MSRVTT_data.json"
    data = json.loads(path.read_text())
    del data["sentences"][3]["caption"]
    path.write_text(json.dumps(data))
    with pytest.raises(MeltrError) as err:
        load_msrvtt(copy_root)
    assert _one_line(err) == f"{path}: sentences[3]: expected key 'caption'"


def test_other_bad_annotations(copy_root):
    path = copy_root / "MSRVTT_data.json"
    data = json.loads(path.read_text())
    path.write_text(json.dumps({"videos": data["videos"]}))
    with pytest.raises(MeltrError, match="expected top-level key 'sentences'"):
        load_msrvtt(copy_root)
    data["sentences"][5]["caption"] = 7
    path.write_text(json.dumps(data))
    with pytest.raises(MeltrError, match=r"sentences\[5\]: caption: expected a string"):
        load_msrvtt(copy_root)


def test_unknown_ids_and_columns(copy_root):
    csv9k = copy_root / "MSRVTT_train.9k.csv"
    csv9k.write_text(csv9k.read_text() + "video999\n")
    with pytest.raises(MeltrError) as err:
        load_msrvtt(copy_root)
    assert f"{csv9k}: line 14: video_id 'video999' has no entry in" in _one_line(err)
    csv9k.write_text("vid\nvideo0\n")
    with pytest.raises(MeltrError) as err:
        load_msrvtt(copy_root)
    assert str(csv9k) in _one_line(err) and "'video_id'" in str(err.value)


def test_unknown_train_list(copy_root):
    with pytest.raises(MeltrError) as err:
        load_msrvtt(copy_root, train_list="5k")
    msg = _one_line(err)
    assert "MSRVTT_train.9k.csv" in msg and "'5k'" in msg


def test_missing_files(copy_root, tmp_path):
    (copy_root / "MSRVTT_train.7k.csv").unlink()
    with pytest.raises(MeltrError) as err:
        load_msrvtt(copy_root, train_list="7k")
    assert str(copy_root / "MSRVTT_train.7k.csv") in _one_line(err)
    with pytest.raises(MeltrError) as err:
        load_msrvtt(tmp_path / "nowhere")
    assert "MSRVTT_data.json: file not found" in _one_line(err)


def test_missing_video_file(synth_root, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(synth_root[0], root)
    (root / "videos" / "video14.mp4").unlink()
    out = tmp_path / "out"
    with pytest.raises(MeltrError) as err:
        prepare_msrvtt(root, out)
    msg = _one_line(err)
    assert str(root / "videos" / "video14.mp4") in msg and "video14" in msg
    assert not out.exists()  # nothing half-written
    summary = prepare_msrvtt(root, out, check_media=False)
    assert summary["test"]["missing_media"] == [str(root / "videos" / "video14.mp4")]
