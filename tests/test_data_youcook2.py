"""YouCook2 loader (official json and UniVL csv+pickle) and UniVL S3D features, from small hand-written files."""
from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from meltr.data.records import check_records
from meltr.data.youcook2 import TASKS, load_youcook2
from meltr.errors import MeltrError
from meltr.features.s3d import clip_features, load_s3d_features

ANN = "youcookii_annotations_trainval.json"

# Invented, in the official format: YouTube ids with '_' and '-', int segments, recipe_type strings.
DATABASE = {
    "AbC123xYz_0": {
        "duration": 212.4, "subset": "validation", "recipe_type": "205",
        "video_url": "https://www.youtube.com/watch?v=AbC123xYz_0",
        "annotations": [{"id": 0, "segment": [31, 44], "sentence": "whisk the eggs with salt and pepper"},
                        {"id": 1, "segment": [52, 70], "sentence": "pour the egg mixture into the hot pan"}]},
    "k-9QwErTy8s": {
        "duration": 95.0, "subset": "training", "recipe_type": "113",
        "video_url": "https://www.youtube.com/watch?v=k-9QwErTy8s",
        "annotations": [{"id": 0, "segment": [5, 12], "sentence": "cut the chicken into strips"},
                        {"id": 1, "segment": [12.5, 20], "sentence": "fry the chicken, then add soy sauce"}]},
    "ZZdeadLink1": {
        "duration": 60.0, "subset": "training", "recipe_type": "113",
        "video_url": "https://www.youtube.com/watch?v=ZZdeadLink1",
        "annotations": [{"id": 0, "segment": [0, 9], "sentence": "boil water"}]},
}


def _one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert "\n" not in msg
    return msg


@pytest.fixture
def official(tmp_path):
    root = tmp_path / "yc2"
    root.mkdir()
    (root / ANN).write_text(json.dumps({"database": DATABASE}))
    # only a webm and an mkv were downloadable; the third link is dead
    (root / "raw_videos" / "validation" / "205").mkdir(parents=True)
    (root / "raw_videos" / "validation" / "205" / "AbC123xYz_0.webm").write_bytes(b"")
    (root / "raw_videos" / "training" / "113").mkdir(parents=True)
    (root / "raw_videos" / "training" / "113" / "k-9QwErTy8s.mkv").write_bytes(b"")
    return root


def test_official_records(official):
    out = load_youcook2(official, "retrieval")
    assert set(out) == {"train", "val"}
    vroot = official / "raw_videos"
    assert out["val"] == [
        {"id": "AbC123xYz_0_0", "video_id": "AbC123xYz_0_0", "video": str(vroot / "validation/205/AbC123xYz_0.webm"),
         "start": 31.0, "end": 44.0, "fps": None, "split": "val", "captions": ["whisk the eggs with salt and pepper"]},
        {"id": "AbC123xYz_0_1", "video_id": "AbC123xYz_0_1", "video": str(vroot / "validation/205/AbC123xYz_0.webm"),
         "start": 52.0, "end": 70.0, "fps": None, "split": "val", "captions": ["pour the egg mixture into the hot pan"]},
    ]
    assert [(r["id"], r["video"], r["start"], r["end"]) for r in out["train"]] == [
        ("k-9QwErTy8s_0", str(vroot / "training/113/k-9QwErTy8s.mkv"), 5.0, 12.0),
        ("k-9QwErTy8s_1", str(vroot / "training/113/k-9QwErTy8s.mkv"), 12.5, 20.0),
        ("ZZdeadLink1_0", str(vroot / "training/113/ZZdeadLink1.mp4"), 0.0, 9.0),  # missing: default .mp4
    ]
    assert out["train"][1]["captions"] == ["fry the chicken, then add soy sauce"]
    assert all(isinstance(r["start"], float) for r in out["train"] + out["val"])
    for split in out.values():
        check_records(split, "retrieval", "youcook2")
    assert load_youcook2(official, "captioning") == out  # one reference per clip for captioning too
    assert TASKS == {"retrieval": "retrieval", "captioning": "captioning"}


def test_official_mp4_preferred_and_other_places(official, tmp_path):
    d = official / "raw_videos" / "validation" / "205"
    (d / "AbC123xYz_0.mp4").write_bytes(b"")
    assert load_youcook2(official, "retrieval")["val"][0]["video"] == str(d / "AbC123xYz_0.mp4")
    # the official tarball keeps the json in annotations/; an absolute video_dir is used as given
    nested = tmp_path / "nested"
    (nested / "annotations").mkdir(parents=True)
    (nested / "annotations" / ANN).write_text((official / ANN).read_text())
    out = load_youcook2(nested, "retrieval", video_dir=str(official / "raw_videos"))
    assert out["val"][0]["video"] == str(d / "AbC123xYz_0.mp4")


def _corrupt(root, edit):
    data = json.loads((root / ANN).read_text())
    edit(data["database"])
    (root / ANN).write_text(json.dumps(data))
    return root / ANN


@pytest.mark.parametrize("edit, expected", [
    (lambda db: db["AbC123xYz_0"]["annotations"][1].pop("segment"),
     "database['AbC123xYz_0']: annotations[1]: expected key(s) 'segment'"),
    (lambda db: db["AbC123xYz_0"]["annotations"][0].update(segment=[31]),
     "database['AbC123xYz_0']: annotations[0]: segment: expected two numbers of seconds [start, end], got [31]"),
    (lambda db: db["AbC123xYz_0"]["annotations"][0].update(segment=["31", 44]),
     "annotations[0]: segment: expected two numbers of seconds [start, end], got ['31', 44]"),
    (lambda db: db["AbC123xYz_0"]["annotations"][0].update(segment=[44, 31]),
     "database['AbC123xYz_0']: annotations[0]: segment: expected 0 <= start < end, got [44, 31]"),
    (lambda db: db["AbC123xYz_0"]["annotations"][0].update(segment=[31, 31]),
     "annotations[0]: segment: expected 0 <= start < end, got [31, 31]"),
    (lambda db: db["k-9QwErTy8s"].update(subset="testing"),
     "database['k-9QwErTy8s']: subset: expected 'training' or 'validation' (the test subset has no sentences), "
     "got 'testing'"),
    (lambda db: db["k-9QwErTy8s"].update(subset="train"), "subset: expected 'training' or 'validation'"),
    (lambda db: db["k-9QwErTy8s"].pop("recipe_type"), "database['k-9QwErTy8s']: expected key(s) 'recipe_type'"),
    (lambda db: db["k-9QwErTy8s"].update(annotations={}), "database['k-9QwErTy8s']: annotations: expected a list"),
    (lambda db: db["k-9QwErTy8s"]["annotations"][1].update(id=0), "annotations[1]: id: expected ids unique"),
    (lambda db: db["k-9QwErTy8s"]["annotations"][1].update(sentence=None), "annotations[1]: sentence: expected a string"),
    (lambda db: db.update(ZZdeadLink1=[1, 2]), "database['ZZdeadLink1']: expected an object, got list"),
])
def test_official_malformed(official, edit, expected):
    path = _corrupt(official, edit)
    with pytest.raises(MeltrError) as err:
        load_youcook2(official, "retrieval")
    msg = _one_line(err)
    assert msg.startswith(f"{path}: ") and expected in msg, msg


def test_official_bad_files_and_arguments(official, tmp_path):
    (official / ANN).write_text('{"database": {\n "x": }')
    with pytest.raises(MeltrError) as err:
        load_youcook2(official, "retrieval")
    assert f"{official / ANN}:2:" in _one_line(err) and "invalid JSON" in str(err.value)
    (official / ANN).write_text(json.dumps({"videos": {}}))
    with pytest.raises(MeltrError, match="expected top-level key 'database' holding an object, got no such key"):
        load_youcook2(official, "retrieval")
    with pytest.raises(MeltrError) as err:
        load_youcook2(tmp_path / "nowhere", "retrieval")
    assert _one_line(err).startswith(f"{tmp_path / 'nowhere' / ANN}: file not found")
    with pytest.raises(MeltrError, match="youcook2 task: expected one of retrieval, captioning, got 'qa'"):
        load_youcook2(official, "qa")
    with pytest.raises(MeltrError, match="youcook2 variant: expected one of official, univl, got 'clip4clip'"):
        load_youcook2(official, "retrieval", variant="clip4clip")


# -------------------------------------------------------------------------------------------------- UniVL variant

def _obj(values):
    return np.array(values, dtype=object)


def _univl_data():
    return {
        "AbC123xYz_0": {"start": _obj([31, 52]), "end": _obj([44, 70]),
                        "text": _obj(["whisk the eggs with salt and pepper", "pour the egg mixture into the hot pan"]),
                        "transcript": _obj(["NONE", "NONE"])},
        "k-9QwErTy8s": {"start": _obj([5, 12.5]), "end": _obj([12, 20]),
                        "text": _obj(["cut the chicken into strips", "fry the chicken, then add soy sauce"]),
                        "transcript": _obj(["so now we cut", "and fry it"])},
    }


@pytest.fixture
def univl(tmp_path):
    root = tmp_path / "youcookii"
    root.mkdir()
    (root / "youcookii_train.csv").write_text("video_id,feature_file\nk-9QwErTy8s,k-9QwErTy8s\n")
    (root / "youcookii_val.csv").write_text("video_id,feature_file\nAbC123xYz_0,AbC123xYz_0\n")
    with open(root / "youcookii_data.no_transcript.pickle", "wb") as f:
        pickle.dump(_univl_data(), f)
    (root / "raw_videos" / "validation" / "205").mkdir(parents=True)
    (root / "raw_videos" / "validation" / "205" / "AbC123xYz_0.mkv").write_bytes(b"")
    return root


def test_univl_records(univl):
    out = load_youcook2(univl, "retrieval", variant="univl")
    mkv = str(univl / "raw_videos" / "validation" / "205" / "AbC123xYz_0.mkv")
    assert out["val"] == [
        {"id": "AbC123xYz_0_0", "video_id": "AbC123xYz_0_0", "video": mkv, "start": 31.0, "end": 44.0, "fps": None,
         "split": "val", "captions": ["whisk the eggs with salt and pepper"], "feature_file": "AbC123xYz_0",
         "transcript": ""},
        {"id": "AbC123xYz_0_1", "video_id": "AbC123xYz_0_1", "video": mkv, "start": 52.0, "end": 70.0, "fps": None,
         "split": "val", "captions": ["pour the egg mixture into the hot pan"], "feature_file": "AbC123xYz_0",
         "transcript": ""},
    ]
    train = out["train"]
    assert [(r["id"], r["start"], r["end"], r["transcript"]) for r in train] == [
        ("k-9QwErTy8s_0", 5.0, 12.0, "so now we cut"), ("k-9QwErTy8s_1", 12.5, 20.0, "and fry it")]
    assert train[0]["video"] == str(univl / "raw_videos" / "k-9QwErTy8s.mp4")  # not downloaded: flat default
    for split in out.values():
        check_records(split, "captioning", "youcook2 univl")

    # same ids and segments as the official json builds (UniVL's pickle is made from it)
    official = univl / "official"
    official.mkdir()
    (official / ANN).write_text(json.dumps({"database": {k: DATABASE[k] for k in ("AbC123xYz_0", "k-9QwErTy8s")}}))
    off = load_youcook2(official, "captioning")
    for split in ("train", "val"):
        assert [(r["id"], r["start"], r["end"], r["captions"]) for r in off[split]] == \
               [(r["id"], r["start"], r["end"], r["captions"]) for r in out[split]]


def test_univl_other_pickle_names(univl):
    (univl / "youcookii_data.no_transcript.pickle").rename(univl / "youcookii_data.transcript_v4.pickle")
    assert len(load_youcook2(univl, "captioning", variant="univl")["train"]) == 2
    (univl / "youcookii_data.transcript_v4.pickle").rename(univl / "mine.pickle")
    with pytest.raises(MeltrError) as err:
        load_youcook2(univl, "captioning", variant="univl")
    assert _one_line(err).startswith(f"{univl / 'youcookii_data.no_transcript.pickle'}: file not found")
    assert len(load_youcook2(univl, "captioning", variant="univl", data_pickle="mine.pickle")["val"]) == 2


def _write_pickle(root, data):
    path = root / "youcookii_data.no_transcript.pickle"
    with open(path, "wb") as f:
        pickle.dump(data, f)
    return path


def test_univl_malformed(univl):
    path = univl / "youcookii_data.no_transcript.pickle"

    def fails(expected, data=None):
        if data is not None:
            _write_pickle(univl, data)
        with pytest.raises(MeltrError) as err:
            load_youcook2(univl, "retrieval", variant="univl")
        msg = _one_line(err)
        assert expected in msg, msg
        return msg

    good = _univl_data()
    bad = _univl_data()
    bad["AbC123xYz_0"]["end"] = _obj([44, 52])
    bad["AbC123xYz_0"]["start"] = _obj([31, 60])
    assert fails("segment 1: expected 0 <= start < end, got [60, 52]", bad).startswith(f"{path}: ['AbC123xYz_0']")
    bad = _univl_data()
    del bad["k-9QwErTy8s"]["text"]
    fails(f"{path}: ['k-9QwErTy8s']: expected key(s) 'text'", bad)
    bad = _univl_data()
    bad["k-9QwErTy8s"]["end"] = _obj([12])
    fails(f"{path}: ['k-9QwErTy8s']: expected start, end, text (and transcript) of equal length, "
          "got start: 2, end: 1, text: 2, transcript: 2", bad)
    bad = _univl_data()
    bad["k-9QwErTy8s"]["start"] = _obj(["5", 12.5])
    fails("['k-9QwErTy8s']: segment 0: expected two numbers of seconds [start, end], got ['5', 12]", bad)
    bad = _univl_data()
    bad["k-9QwErTy8s"]["text"] = _obj(["cut", 3])
    fails("['k-9QwErTy8s']: segment 1: text: expected a string, got int", bad)
    fails(f"{path}: expected a dict video_id -> {{start, end, text, transcript}}, got list", [good])
    bad = dict(good)
    del bad["k-9QwErTy8s"]
    fails(f"{univl / 'youcookii_train.csv'}: line 2: video_id 'k-9QwErTy8s' has no entry in {path}", bad)
    path.write_bytes(pickle.dumps(good)[:40])  # truncated
    fails(f"{path}: expected a pickle of dict video_id -> {{start, end, text, transcript}} arrays (")
    _write_pickle(univl, good)
    (univl / "youcookii_val.csv").write_text("video_id\nAbC123xYz_0\n")
    fails(f"{univl / 'youcookii_val.csv'}: expected column(s) 'feature_file'")


# --------------------------------------------------------------------------------------------------- S3D features

@pytest.fixture
def features_pickle(tmp_path):
    rng = np.random.default_rng(0)
    feats = {"AbC123xYz_0": rng.standard_normal((80, 1024)).astype(np.float32),
             "k-9QwErTy8s": rng.standard_normal((21, 1024)).astype(np.float32)}
    path = tmp_path / "youcookii_videos_features.pickle"
    with open(path, "wb") as f:
        pickle.dump(feats, f)
    return path, feats


def test_load_and_clip_features(features_pickle, univl):
    path, feats = features_pickle
    loaded = load_s3d_features(path)
    assert set(loaded) == set(feats) and all(np.array_equal(loaded[k], feats[k]) for k in feats)
    f = loaded["AbC123xYz_0"]
    # UniVL: rows int(start) .. int(end) inclusive -> [31, 44] is 14 rows
    assert np.array_equal(clip_features(f, 31, 44), f[31:45]) and len(clip_features(f, 31, 44)) == 14
    assert np.array_equal(clip_features(f, 12.5, 20.7), f[12:21])
    assert np.array_equal(clip_features(f, 70, 95), f[70:80])  # clamped to the 80 rows there are
    assert np.array_equal(clip_features(f, 0, 60, max_frames=48), f[:48])  # retrieval max_frames
    assert np.array_equal(clip_features(f, 10, 15, framerate=2.0), f[20:31])
    # the records of the UniVL variant find their rows through feature_file
    rec = load_youcook2(univl, "retrieval", variant="univl")["train"][1]
    assert np.array_equal(clip_features(loaded[rec["feature_file"]], rec["start"], rec["end"]),
                          feats["k-9QwErTy8s"][12:21])
    with pytest.raises(MeltrError) as err:
        clip_features(f, 80, 90, name="AbC123xYz_0")
    assert _one_line(err) == ("AbC123xYz_0: segment [80, 90] starts after the last feature row "
                              "(80 rows = 80 s at 1 per second)")
    with pytest.raises(MeltrError, match=r"vid: segment \[5, 5\]: expected finite 0 <= start < end"):
        clip_features(f, 5, 5, name="vid")
    with pytest.raises(MeltrError, match="expected a \\(seconds, D\\) feature array, got shape \\(1024,\\)"):
        clip_features(f[0], 0, 1)


@pytest.mark.parametrize("data, expected", [
    ([np.zeros((3, 1024), np.float32)], "expected a dict video_id -> float array (seconds, 1024), got list"),
    ({"v1": np.zeros((3, 512), np.float32)}, "['v1']: expected shape (seconds >= 1, 1024), got (3, 512)"),
    ({"v1": np.zeros((0, 1024), np.float32)}, "['v1']: expected shape (seconds >= 1, 1024), got (0, 1024)"),
    ({"v1": np.zeros(1024, np.float32)}, "['v1']: expected shape (seconds >= 1, 1024), got (1024,)"),
    ({"v1": np.zeros((3, 1024), np.int64)}, "['v1']: expected a float array, got dtype int64"),
    ({"v1": [[0.0] * 1024]}, "['v1']: expected a numpy float array (seconds, 1024), got list"),
    ({7: np.zeros((3, 1024), np.float32)}, "[7]: expected string video ids as keys, got int"),
])
def test_bad_feature_pickles(tmp_path, data, expected):
    path = tmp_path / "feats.pickle"
    with open(path, "wb") as f:
        pickle.dump(data, f)
    with pytest.raises(MeltrError) as err:
        load_s3d_features(path)
    msg = _one_line(err)
    assert msg.startswith(f"{path}: ") and expected in msg, msg


def test_feature_pickle_unreadable(tmp_path):
    path = tmp_path / "feats.pickle"
    path.write_bytes(b"not a pickle")
    with pytest.raises(MeltrError) as err:
        load_s3d_features(path)
    assert _one_line(err).startswith(f"{path}: expected a pickle of dict video_id -> float array (seconds, 1024) (")
    with pytest.raises(MeltrError, match="file not found"):
        load_s3d_features(tmp_path / "missing.pickle")
    ok = tmp_path / "small.pickle"
    with open(ok, "wb") as f:
        pickle.dump({"a": np.zeros((2, 8)), "b": np.zeros((5, 8))}, f)
    assert set(load_s3d_features(ok, dim=None)) == {"a", "b"}
    with open(ok, "wb") as f:
        pickle.dump({"a": np.zeros((2, 8)), "b": np.zeros((5, 9))}, f)
    with pytest.raises(MeltrError, match=r"\['b'\]: expected shape \(seconds >= 1, 8\), got \(5, 9\)"):
        load_s3d_features(ok, dim=None)
