"""MSRVTT loader: synthetic data (formats, determinism, round trip), hand-written files in every variant
(CLIP4Clip csv/json, captioning split, Frozen/All-in-one lists) and one-line errors for bad input."""
from __future__ import annotations

import csv
import json
import pickle
import re
import shutil

import pytest

from meltr.data.msrvtt import TASKS, load_msrvtt, prepare_msrvtt
from meltr.data.records import check_records
from meltr.data.synth.common import COLOURS, SHAPES
from meltr.data.synth.msrvtt import synth_msrvtt
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


# ------------------------------------------------------------- hand-written files: records, captioning, Frozen variant

HAND_VIDEOS = [  # official order and split field; note the spaces in "start time" / "end time"
    {"id": 0, "video_id": "video0", "category": 3, "url": "https://www.youtube.com/watch?v=AbCdEfGhIjK",
     "start time": 12.5, "end time": 27.1, "split": "train"},
    {"id": 1, "video_id": "video1", "category": 9, "url": "https://www.youtube.com/watch?v=ZyXwVuTsRqP",
     "start time": 3.0, "end time": 18.4, "split": "train"},
    {"id": 2, "video_id": "video2", "category": 0, "url": "https://www.youtube.com/watch?v=Qq_-Qq_-Qq0",
     "start time": 40.0, "end time": 52.0, "split": "validate"},
    {"id": 3, "video_id": "video3", "category": 14, "url": "https://www.youtube.com/watch?v=Mm1Mm1Mm1Mm",
     "start time": 0.0, "end time": 10.0, "split": "test"},
    {"id": 4, "video_id": "video4", "category": 7, "url": "https://www.youtube.com/watch?v=Nn2Nn2Nn2Nn",
     "start time": 100.2, "end time": 121.0, "split": "test"},
]
HAND_CAPTIONS = {  # not 20 per video: counts differ
    "video0": ["a man slices an onion on a board", "someone is cooking"],
    "video1": ["two kids play football in a yard"],
    "video2": ["a cat sleeps", "a cat is sleeping on a sofa"],
    "video3": ["a dog chases a ball, then stops", "a dog runs", "a puppy plays outside"],
    "video4": ["a car drives down a road", "traffic on a highway"],
}


def _hand_msrvtt(root, jsfusion_sep=","):
    root.mkdir(parents=True, exist_ok=True)
    sentences = [{"sen_id": i, "video_id": v, "caption": c}
                 for i, (v, c) in enumerate((v, c) for v, caps in HAND_CAPTIONS.items() for c in caps)]
    (root / "MSRVTT_data.json").write_text(json.dumps({"info": {"year": "2016"}, "videos": HAND_VIDEOS,
                                                       "sentences": sentences}))
    (root / "MSRVTT_train.9k.csv").write_text("video_id\nvideo0\nvideo1\nvideo2\n")
    (root / "MSRVTT_train.7k.csv").write_text("video_id\nvideo0\nvideo1\nvideo2\n")
    if jsfusion_sep == ",":
        body = 'key,vid_key,video_id,sentence\nret0,msr4,video4,a car drives down a road\n' \
               'ret1,msr3,video3,"a dog chases a ball, then stops"\n'
    else:
        body = "key;vid_key;video_id;sentence\nret0;msr4;video4;a car drives down a road\n" \
               "ret1;msr3;video3;a dog chases a ball, then stops\n"
    (root / "MSRVTT_JSFUSION_test.csv").write_text(body)
    (root / "videos").mkdir(exist_ok=True)
    for v in ("video0", "video1", "video2", "video4"):
        (root / "videos" / f"{v}.mp4").write_bytes(b"")
    (root / "videos" / "video3.webm").write_bytes(b"")  # CLIP4Clip's .webm fallback
    return root


def _rec(root, vid, split, captions, ext="mp4", sub="videos"):
    return {"id": vid, "video_id": vid, "video": str(root / sub / f"{vid}.{ext}"), "start": None, "end": None,
            "fps": None, "split": split, "captions": captions}


@pytest.mark.parametrize("sep", [",", ";"])
def test_hand_written_retrieval_records(tmp_path, sep):
    root = _hand_msrvtt(tmp_path / "m", jsfusion_sep=sep)
    out = load_msrvtt(root)
    assert out["test"] == [_rec(root, "video4", "test", ["a car drives down a road"]),
                           _rec(root, "video3", "test", ["a dog chases a ball, then stops"], ext="webm")]
    assert out["train"] == [_rec(root, v, "train", HAND_CAPTIONS[v]) for v in ("video0", "video1", "video2")]
    # the "start time"/"end time" of MSRVTT_data.json locate the clip in its YouTube source: not clip bounds
    assert all(r["start"] is None and r["end"] is None for r in out["train"] + out["test"])
    check_records(out["train"], "retrieval", "msrvtt")
    check_records(out["test"], "retrieval", "msrvtt")
    assert load_msrvtt(root, task="retrieval", variant="clip4clip") == out
    assert TASKS == {"retrieval": "retrieval", "captioning": "captioning"}


def test_captioning_full_split(tmp_path):
    root = _hand_msrvtt(tmp_path / "m")
    (root / "MSRVTT_train.9k.csv").unlink()  # captioning reads only MSRVTT_data.json
    (root / "MSRVTT_JSFUSION_test.csv").unlink()
    out = load_msrvtt(root, task="captioning")
    # train = split train + validate (MELTR's 7,010), test = split test with every caption as a reference
    assert out == {"train": [_rec(root, v, "train", HAND_CAPTIONS[v]) for v in ("video0", "video1", "video2")],
                   "test": [_rec(root, "video3", "test", HAND_CAPTIONS["video3"], ext="webm"),
                            _rec(root, "video4", "test", HAND_CAPTIONS["video4"])]}
    check_records(out["test"], "captioning", "msrvtt")

    prepared = prepare_msrvtt(root, tmp_path / "prep", task="captioning")
    assert prepared["task"] == "captioning" and "variant" not in prepared
    assert prepared["test"] == {"videos": 2, "records": 2, "captions": 5, "missing_media": []}
    assert read_jsonl(tmp_path / "prep" / "test.jsonl") == out["test"]


def test_captioning_bad_split_field(tmp_path):
    root = _hand_msrvtt(tmp_path / "m")
    path = root / "MSRVTT_data.json"
    data = json.loads(path.read_text())
    data["videos"][2]["split"] = "val"
    path.write_text(json.dumps(data))
    assert len(load_msrvtt(root)["train"]) == 3  # retrieval does not read the split field
    with pytest.raises(MeltrError) as err:
        load_msrvtt(root, task="captioning")
    assert _one_line(err) == f"{path}: videos[2]: split: expected one of train, validate, test, got 'val'"
    del data["videos"][1]["split"]
    path.write_text(json.dumps(data))
    with pytest.raises(MeltrError) as err:
        load_msrvtt(root, task="captioning")
    assert _one_line(err) == f"{path}: videos[1]: expected key 'split'"
    data = json.loads(path.read_text())
    data["videos"][1]["split"] = "train"
    data["videos"][2]["split"] = "validate"
    data["sentences"] = [s for s in data["sentences"] if s["video_id"] != "video4"]
    path.write_text(json.dumps(data))
    with pytest.raises(MeltrError) as err:
        load_msrvtt(root, task="captioning")
    assert _one_line(err) == f"{path}: videos[4]: video_id 'video4' has no caption in sentences"


def test_bad_task_and_variant(tmp_path):
    root = _hand_msrvtt(tmp_path / "m")
    with pytest.raises(MeltrError, match="msrvtt task: expected one of retrieval, captioning, got 'qa'"):
        load_msrvtt(root, task="qa")
    with pytest.raises(MeltrError, match="msrvtt variant: expected one of clip4clip, frozen, got 'violet'"):
        load_msrvtt(root, variant="violet")
    with pytest.raises(MeltrError, match="variant 'frozen' supports only 'retrieval'"):
        load_msrvtt(root, task="captioning", variant="frozen")


FROZEN_ANNOTATIONS = [{"image_id": v, "caption": c, "id": i}
                      for i, (v, c) in enumerate((v, c) for v, caps in HAND_CAPTIONS.items() for c in caps)]


def _frozen(root, layout):
    """layout 'frozen': annotation/ + high-quality/structured-symlinks/ + videos/all/;
    'meltr': MELTR-All-in-one's flat data/msrvtt/ (lists and json beside videos/)."""
    lists = root / "high-quality" / "structured-symlinks" if layout == "frozen" else root
    jdir = root / "annotation" if layout == "frozen" else root
    vdir = root / "videos" / "all" if layout == "frozen" else root / "videos"
    for d in (lists, jdir, vdir):
        d.mkdir(parents=True, exist_ok=True)
    (jdir / "MSR_VTT.json").write_text(json.dumps({"annotations": FROZEN_ANNOTATIONS,
                                                   "images": [{"id": v} for v in HAND_CAPTIONS]}))
    train_9k = "train_list_jsfusion.txt" if layout == "frozen" else "train_list_9k.txt"
    (lists / train_9k).write_text("video0\nvideo1\nvideo2\n")  # no header
    (lists / "val_list_jsfusion.txt").write_text("video3\nvideo4\n\n")
    for v in HAND_CAPTIONS:
        (vdir / f"{v}.mp4").write_bytes(b"")
    return lists


def test_frozen_layout_jsfusion(tmp_path):
    root = tmp_path / "MSRVTT"
    lists = _frozen(root, "frozen")
    with open(lists / "jsfusion_val_caption_idx.pkl", "wb") as f:
        pickle.dump({"video3": 2, "video4": 0}, f)
    out = load_msrvtt(root, variant="frozen")
    sub = "videos/all"
    assert out["train"] == [_rec(root, v, "train", HAND_CAPTIONS[v], sub=sub) for v in ("video0", "video1", "video2")]
    assert out["test"] == [_rec(root, "video3", "test", ["a puppy plays outside"], sub=sub),
                           _rec(root, "video4", "test", ["a car drives down a road"], sub=sub)]
    summary = prepare_msrvtt(root, tmp_path / "prep", variant="frozen")
    assert summary["variant"] == "frozen" and summary["test"]["captions"] == 2

    for cut, train_name, test_name in (("miech", "train_list_miech.txt", "test_list_miech.txt"),
                                       ("full", "train_list_full.txt", "test_list_full.txt")):
        (lists / train_name).write_text("video0\nvideo2\n")
        (lists / test_name).write_text("video3\n")
        got = load_msrvtt(root, variant="frozen", train_list=cut)
        assert [r["video_id"] for r in got["train"]] == ["video0", "video2"]
        assert got["test"] == [_rec(root, "video3", "test", ["a dog chases a ball, then stops"], sub=sub)]  # first


def test_meltr_flat_layout_with_series_index(tmp_path):
    import pandas as pd

    root = tmp_path / "data" / "msrvtt"
    _frozen(root, "meltr")
    (root / "train_list_7k.txt").write_text("video1\nvideo0\n")
    pd.Series({"video3": 1, "video4": 1}).to_pickle(root / "jsfusion_val_caption_idx.pkl")
    out = load_msrvtt(root, variant="frozen", train_list="7k")
    assert [r["video_id"] for r in out["train"]] == ["video1", "video0"]  # list order
    assert out["test"] == [_rec(root, "video3", "test", ["a dog runs"]),
                           _rec(root, "video4", "test", ["traffic on a highway"])]
    assert len(load_msrvtt(root, variant="frozen")["train"]) == 3  # 9k: train_list_9k.txt


def test_frozen_malformed(tmp_path):
    root = tmp_path / "MSRVTT"
    lists = _frozen(root, "frozen")
    idx = lists / "jsfusion_val_caption_idx.pkl"

    def fails(expected, **kwargs):
        with pytest.raises(MeltrError) as err:
            load_msrvtt(root, variant="frozen", **kwargs)
        msg = _one_line(err)
        assert expected in msg, msg
        return msg

    fails(f"{idx}: file not found (expected the 1k-A test caption index pickle)")
    with open(idx, "wb") as f:
        pickle.dump({"video3": 3, "video4": 0}, f)
    fails(f"{idx}: ['video3']: expected a caption index < 3 (its captions in {root / 'annotation' / 'MSR_VTT.json'}), "
          "got 3")
    with open(idx, "wb") as f:
        pickle.dump({"video3": 0}, f)
    fails(f"{idx}: expected a caption index for video_id 'video4' ({lists / 'val_list_jsfusion.txt'} line 2)")
    with open(idx, "wb") as f:
        pickle.dump({"video3": "0", "video4": 0}, f)
    fails(f"{idx}: ['video3']: expected a video id mapped to a caption index >= 0, got '0'")
    idx.write_bytes(b"garbage")
    fails(f"{idx}: expected a pickle of dict video_id -> caption index (")
    with open(idx, "wb") as f:
        pickle.dump({"video3": 0, "video4": 0}, f)
    assert len(load_msrvtt(root, variant="frozen")["test"]) == 2

    (lists / "val_list_jsfusion.txt").write_text("video3\nvideo9\n")
    fails(f"{lists / 'val_list_jsfusion.txt'}: line 2: video_id 'video9' has no caption in "
          f"{root / 'annotation' / 'MSR_VTT.json'}: annotations")
    (lists / "val_list_jsfusion.txt").write_text("videoid,x\n")
    fails(f"{lists / 'val_list_jsfusion.txt'}: line 1: expected one video id a line, got 'videoid,x'")
    fails("train_list: expected one of 9k, 7k, miech, full for variant 'frozen', got '5k'", train_list="5k")
    fails(f"{lists / 'train_list_7k.txt'}: file not found", train_list="7k")
    (root / "annotation" / "MSR_VTT.json").write_text(json.dumps({"annotations": [{"image_id": "video0"}]}))
    fails(f"{root / 'annotation' / 'MSR_VTT.json'}: annotations[0]: expected key 'caption'")
    (root / "annotation" / "MSR_VTT.json").write_text(json.dumps({"images": []}))
    fails("MSR_VTT.json: expected top-level key 'annotations' holding a list, got no such key")
    (root / "annotation" / "MSR_VTT.json").unlink()
    fails(f"{root / 'annotation' / 'MSR_VTT.json'}: file not found")


def test_prepared_records_have_common_keys(synth_root, tmp_path):
    root, _ = synth_root
    prepare_msrvtt(root, tmp_path / "p")
    rec = read_jsonl(tmp_path / "p" / "test.jsonl")[0]
    assert set(rec) == {"id", "video_id", "video", "start", "end", "fps", "split", "captions"}
    assert rec["id"] == rec["video_id"] and rec["start"] is None and rec["fps"] is None
    assert set(json.loads((tmp_path / "p" / "summary.json").read_text())) == {
        "root", "video_dir", "train_list", "train", "test"}
