"""Synthetic YouCook2, TGIF-QA and TVQA: files parsed independently against docs/datasets.md §2-§4 and §10,
one correct option per question, determinism, and one-line errors for bad arguments."""
from __future__ import annotations

import csv
import json
import math
import pickle
import re
from pathlib import Path

import numpy as np
import pytest

from meltr.data.synth.common import COLOURS, SHAPES
from meltr.data.synth.tgifqa import ACTION_PHRASES, COUNT_ANSWERS, COUNT_FRAMES, synth_tgifqa
from meltr.data.synth.tvqa import ACTION_3RD, SHOWS, synth_tvqa
from meltr.data.synth.youcook2 import synth_youcook2
from meltr.errors import MeltrError

YC = dict(n_train_videos=3, n_val_videos=2, segments_per_video=2, size=32, fps=4)
TG = dict(n_train=10, n_test=4, size=32)
TV = dict(n_train=7, n_val=3, n_test=3, size=32)


def _rgb_near(frame: np.ndarray, rgb, tol: int = 60) -> int:
    """Number of pixels within `tol` (L1) of the colour."""
    return int((np.abs(frame.astype(int) - np.array(rgb)).sum(-1) < tol).sum())


def _no_temp_files(root: Path) -> None:
    assert not [p for p in root.rglob("*") if p.name.endswith(".tmp")]


# --------------------------------------------------------------------------------------------------- YouCook2

@pytest.fixture(scope="module")
def yc(tmp_path_factory):
    root = tmp_path_factory.mktemp("youcook2")
    return root, synth_youcook2(root, **YC, seed=5)


def test_youcook2_counts_and_layout(yc):
    root, counts = yc
    assert counts == {"train": {"videos": 3, "clips": 6, "captions": 6}, "val": {"videos": 2, "clips": 4, "captions": 4}}
    db = json.loads((root / "youcookii_annotations_trainval.json").read_text())["database"]
    for split, subset in (("train", "training"), ("val", "validation")):
        vids = [k for k, v in db.items() if v["subset"] == subset]
        assert len(vids) == counts[split]["videos"]
        assert sum(len(db[k]["annotations"]) for k in vids) == counts[split]["clips"]
        lines = (root / "splits" / f"{split}_list.txt").read_text().splitlines()
        assert sorted(lines) == sorted(f"{db[k]['recipe_type']}/{k}" for k in vids)
        for k in vids:  # raw_videos/<training|validation>/<recipe_type>/<youtube_id>.mp4
            assert (root / "raw_videos" / subset / db[k]["recipe_type"] / f"{k}.mp4").stat().st_size > 0
        rows = list(csv.reader((root / f"youcookii_{split}.csv").open()))
        assert rows[0] == ["video_id", "feature_file"] and sorted(r[0] for r in rows[1:]) == sorted(vids)
        assert all(r[0] == r[1] for r in rows[1:])
    _no_temp_files(root)


def test_youcook2_exact_schema(yc):
    root, _ = yc
    db = json.loads((root / "youcookii_annotations_trainval.json").read_text())["database"]
    foodtypes = dict(csv.reader((root / "label_foodtype.csv").open()))  # no header: id,name
    assert all(k.isdigit() for k in foodtypes)
    data = pickle.loads((root / "youcookii_data.no_transcript.pickle").read_bytes())
    feats = pickle.loads((root / "youcookii_videos_features.pickle").read_bytes())
    assert set(data) == set(feats) == set(db)
    for vid, v in db.items():
        assert list(v) == ["duration", "subset", "recipe_type", "video_url", "annotations"]
        assert re.fullmatch(r"[A-Za-z0-9_-]{11}", vid) and v["video_url"] == f"https://www.youtube.com/watch?v={vid}"
        assert isinstance(v["duration"], float) and isinstance(v["recipe_type"], str) and v["recipe_type"] in foodtypes
        prev_end = 0
        for k, a in enumerate(v["annotations"]):
            assert set(a) == {"id", "segment", "sentence"} and a["id"] == k
            s, e = a["segment"]
            assert type(s) is int and type(e) is int and prev_end <= s < e <= v["duration"]
            prev_end = e
        d = data[vid]
        assert set(d) == {"start", "end", "text", "transcript"}
        assert all(arr.dtype == object for arr in d.values())
        assert list(d["start"]) == [a["segment"][0] for a in v["annotations"]] == sorted(d["start"])
        assert list(d["end"]) == [a["segment"][1] for a in v["annotations"]]
        assert list(d["text"]) == [a["sentence"] for a in v["annotations"]]
        assert list(d["transcript"]) == ["NONE"] * len(v["annotations"])
        f = feats[vid]
        assert f.dtype == np.float32 and f.shape == (math.ceil(v["duration"]), 1024) and np.isfinite(f).all()


def test_youcook2_videos_show_the_captioned_events(yc):
    import av

    root, _ = yc
    db = json.loads((root / "youcookii_annotations_trainval.json").read_text())["database"]
    attrs = json.loads((root / "synth_attributes.json").read_text())
    for vid, v in db.items():
        with av.open(str(root / "raw_videos" / v["subset"] / v["recipe_type"] / f"{vid}.mp4")) as c:
            stream = c.streams.video[0]
            assert stream.average_rate == YC["fps"] and stream.width == stream.height == YC["size"]
            frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
        assert len(frames) == attrs[vid]["n_frames"]
        assert abs(len(frames) / YC["fps"] - v["duration"]) < 1e-6  # decodes to the annotated duration
        combos = set()
        for a, seg in zip(v["annotations"], attrs[vid]["segments"]):
            assert seg["colour"] in a["sentence"].split()
            mid = frames[int((a["segment"][0] + a["segment"][1]) / 2 * YC["fps"])]
            assert _rgb_near(mid, COLOURS[seg["colour"]]) >= 20  # the event's shape is on screen
            combos.add((seg["colour"], seg["shape"], seg["motion"]))
        assert len(combos) == len(v["annotations"])  # a different event per segment
        first = v["annotations"][0]["segment"][0]
        if first > 0:  # before the first segment the frame is empty
            f0 = frames[0].astype(int)
            assert np.abs(f0 - f0[0, 0]).sum(-1).max() < 60


def test_youcook2_features_follow_the_content(yc):
    root, _ = yc
    db = json.loads((root / "youcookii_annotations_trainval.json").read_text())["database"]
    feats = pickle.loads((root / "youcookii_videos_features.pickle").read_bytes())
    vid, v = next(iter(db.items()))
    a = v["annotations"]
    f = feats[vid]
    in_seg = [f[s] for s, e in (x["segment"] for x in a)]
    assert not np.allclose(in_seg[0], in_seg[1])  # different events give different features


# --------------------------------------------------------------------------------------------------- TGIF-QA

TGIF_HEADERS = {
    "action": "gif_name question a1 a2 a3 a4 a5 answer vid_id key",
    "transition": "gif_name question a1 a2 a3 a4 a5 answer vid_id key",
    "frameqa": "gif_name question answer type vid_id key description",
    "count": "gif_name question answer vid_id key",
}


@pytest.fixture(scope="module")
def tg(tmp_path_factory):
    root = tmp_path_factory.mktemp("tgif")
    return root, synth_tgifqa(root, **TG, seed=5)


def _tgif_rows(path: Path) -> list[dict]:
    raw = path.read_bytes()
    assert b"\t" in raw and b"\r\n" in raw and raw.endswith(b"\r\n")
    assert raw.count(b"\n") == raw.count(b"\r\n") and b'"' not in raw  # CRLF only, no quoting
    lines = raw.decode("ascii").split("\r\n")[:-1]
    header = lines[0].split("\t")
    rows = [dict(zip(header, line.split("\t"), strict=True)) for line in lines[1:]]
    return header, rows


def _gif_frames(path: Path) -> list[np.ndarray]:
    from PIL import Image, ImageSequence

    with Image.open(path) as im:
        return [np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(im)]


def test_tgif_files_and_headers(tg):
    import pandas as pd

    root, counts = tg
    for task, header in TGIF_HEADERS.items():
        for split in ("Train", "Test"):
            path = root / f"{split}_{task}_question.csv"
            cols, rows = _tgif_rows(path)
            assert cols == header.split()
            df = pd.read_csv(path, sep="\t")  # how the real files are read
            assert list(df.columns) == header.split() and len(df) == len(rows)
            assert len(rows) == counts[task][split.lower()]["questions"] == TG[f"n_{split.lower()}"]
            assert len({r["gif_name"] for r in rows}) == counts[task][split.lower()]["gifs"]
            for r in rows:
                assert r["question"].endswith(" ?")
                assert re.fullmatch(r"tumblr_\w+_(250|400|500)", r["gif_name"])
                assert r["key"].isdigit() and re.fullmatch(r"(ACTION|TRANS|FRAMEQA|COUNT)\d+", r["vid_id"])
                assert (root / "gifs" / f"{r['gif_name']}.gif").is_file()
    assert len(list((root / "gifs").iterdir())) == counts["gifs"]
    _no_temp_files(root)


def test_tgif_multiple_choice_has_one_correct_answer(tg):
    root, _ = tg
    attrs = json.loads((root / "synth_attributes.json").read_text())
    for task in ("action", "transition"):
        for split in ("Train", "Test"):
            _, rows = _tgif_rows(root / f"{split}_{task}_question.csv")
            for r in rows:
                a = attrs[r["gif_name"]]
                options = [r[f"a{i}"] for i in range(1, 6)]
                if task == "action":
                    truth = ACTION_PHRASES[a["action"]]
                    assert f" do {a['reps']} times ?" in r["question"]
                else:  # "... do after X ?" -> the second phase; "... do before Y ?" -> the first
                    first, second = (ACTION_PHRASES[x] for x in a["actions"])
                    m = re.fullmatch(r"What does the .+ do (after|before) (.+) \?", r["question"])
                    assert m and m.group(2) == (first if m.group(1) == "after" else second)
                    truth = second if m.group(1) == "after" else first
                assert len(set(options)) == 5 and options.count(truth) == 1
                assert options[int(r["answer"])] == truth
                assert a["colour"] in r["question"].split()


def test_tgif_frameqa_and_count_answers(tg):
    root, _ = tg
    attrs = json.loads((root / "synth_attributes.json").read_text())
    for split in ("Train", "Test"):
        _, rows = _tgif_rows(root / f"{split}_frameqa_question.csv")
        for r in rows:
            a = attrs[r["gif_name"]]
            assert " " not in r["answer"] and r["description"].endswith(" .")
            assert r["answer"] == {"2": a["colour"], "0": a["shape"]}[r["type"]]
            assert r["answer"] in set(COLOURS) | set(SHAPES)
    _, rows = _tgif_rows(root / "Train_count_question.csv")
    answers = [int(r["answer"]) for r in rows]
    assert set(answers) == set(COUNT_ANSWERS) and 1 not in answers  # n_train = 10: every value once
    for r in rows:
        assert attrs[r["gif_name"]]["count"] == int(r["answer"])


def test_tgif_gifs_show_what_is_asked(tg):
    root, _ = tg
    attrs = json.loads((root / "synth_attributes.json").read_text())
    for name, a in attrs.items():
        frames = _gif_frames(root / "gifs" / f"{name}.gif")
        assert len(frames) == a["frames"] and frames[0].shape == (32, 32, 3)
        visible = [_rgb_near(f, COLOURS[a["colour"]]) >= 4 for f in frames]
        if a["task"] == "count":
            n = a["count"]
            assert len(frames) == COUNT_FRAMES  # one length for every answer: it must not give the count away
            blinks = sum(1 for prev, cur in zip(visible, visible[1:]) if prev and not cur)
            assert blinks == n and visible[0] and visible[-1]
        else:
            assert 4 <= len(frames) <= 8 and all(visible)


# --------------------------------------------------------------------------------------------------- TVQA

TVQA_KEYS = {"a0", "a1", "a2", "a3", "a4", "answer_idx", "q", "qid", "show_name", "ts", "vid_name"}
SRT_TIME = r"(\d\d):(\d\d):(\d\d),(\d\d\d)"


@pytest.fixture(scope="module")
def tv(tmp_path_factory):
    root = tmp_path_factory.mktemp("tvqa")
    return root, synth_tvqa(root, **TV, seed=5)


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _parse_srt(path: Path) -> list[tuple[float, float, str]]:
    text = path.read_bytes().decode("iso-8859-1")  # how TVQA's preprocessing opens them (pysrt)
    path.read_bytes().decode("ascii")
    subs = []
    for i, block in enumerate(text.strip("\n").split("\n\n"), 1):
        lines = block.split("\n")
        assert lines[0] == str(i)
        m = re.fullmatch(f"{SRT_TIME} --> {SRT_TIME}", lines[1])
        g = [int(x) for x in m.groups()]
        s, e = (g[0] * 3600 + g[1] * 60 + g[2] + g[3] / 1000), (g[4] * 3600 + g[5] * 60 + g[6] + g[7] / 1000)
        assert 0 <= s < e and len(lines) >= 3
        subs.append((s, e, "\n".join(lines[2:])))
    assert [s for s, _, _ in subs] == sorted(s for s, _, _ in subs)
    return subs


def _frames_dir(root: Path, vid_name: str) -> Path:
    show = vid_name.split("_")[0]
    return root / "frames_hq" / f"{show if show in SHOWS else 'bbt'}_frames" / vid_name  # All-in-one's rule


def _all_questions(root: Path) -> dict[str, list[dict]]:
    rel = root / "tvqa_qa_release"
    return {s: _jsonl(rel / f"tvqa_{f}.jsonl") for s, f in (("train", "train"), ("val", "val"), ("test", "test_public"))}


def test_tvqa_jsonl_schema(tv):
    root, counts = tv
    qs = _all_questions(root)
    show_names = {v[0]: k for k, v in SHOWS.items()}
    qids = []
    for split, rows in qs.items():
        assert len(rows) == counts[split]["questions"] == TV[f"n_{split}"]
        assert len({r["vid_name"] for r in rows}) == counts[split]["clips"]
        for r in rows:
            assert set(r) == (TVQA_KEYS - {"answer_idx"} if split == "test" else TVQA_KEYS)
            assert list(r) == sorted(r)  # keys sorted, like the released files
            assert r["q"].endswith("?") and isinstance(r["qid"], int)
            show = show_names[r["show_name"]]
            m = re.fullmatch(r"(?:(friends|met|grey|castle|house)_)?s\d\de\d\d_seg\d\d_clip_\d\d", r["vid_name"])
            assert m and (m.group(1) or "bbt") == show  # Big Bang Theory clips carry no prefix
            if split != "test":
                assert r["answer_idx"] in range(5)
            qids.append(r["qid"])
    assert qids == sorted(set(qids))
    all_names = {r["show_name"] for rows in qs.values() for r in rows}
    assert "How I Met You Mother" in all_names and "The Big Bang Theory" in all_names and len(all_names) == 6
    nan = [r for rows in qs.values() for r in rows if "NaN" in r["ts"]]
    assert [r["ts"] for r in nan] == ["NaN-NaN"] and nan[0] in qs["train"]
    for rows in qs.values():
        for r in rows:
            if r not in nan:
                assert re.fullmatch(r"\d+(\.\d{1,2})?-\d+(\.\d{1,2})?", r["ts"])
                s, e = map(float, r["ts"].split("-"))
                assert 0 <= s < e
    _no_temp_files(root)


def test_tvqa_subtitles_and_frames_cover_ts(tv):
    from PIL import Image

    root, counts = tv
    qs = _all_questions(root)
    clips = {r["vid_name"] for rows in qs.values() for r in rows}
    assert {p.stem for p in (root / "tvqa_subtitles").iterdir()} == clips
    pre = _jsonl(root / "tvqa_preprocessed_subtitles.jsonl")
    assert sorted(p["vid_name"] for p in pre) == sorted(clips)
    n_jpg = 0
    for p in pre:
        subs = _parse_srt(root / "tvqa_subtitles" / f"{p['vid_name']}.srt")
        assert [(round(s, 3), round(e, 3)) for s, e, _ in subs] == [(x["start"], x["end"]) for x in p["sub"]]
        for (_, _, text), x in zip(subs, p["sub"]):
            assert x["text"].replace(" ( ", "(").replace(" :  ) ", ":) ").strip() == text.replace("\n", " ")
    for vid in clips:
        files = sorted(_frames_dir(root, vid).iterdir())
        n_jpg += len(files)
        assert [f.name for f in files] == [f"{k:05d}.jpg" for k in range(1, len(files) + 1)]  # 1-based, 5 digits
        with Image.open(files[0]) as im:
            assert im.format == "JPEG" and im.size == (32, 32)
        for r in (r for rows in qs.values() for r in rows if r["vid_name"] == vid and "NaN" not in r["ts"]):
            s, e = map(float, r["ts"].split("-"))
            assert len(files) >= math.ceil(e * 3)  # 3 fps frames cover the moment
    assert n_jpg == counts["frames"]


def test_tvqa_one_option_is_correct_from_subtitles_or_frames(tv):
    """Answer each question the way a viewer would: the subtitles say who likes which colour, the frames
    inside ts show what the shape of that colour does; exactly one option must match, at answer_idx."""
    from PIL import Image

    root, _ = tv
    attrs = json.loads((root / "synth_attributes.json").read_text())
    like = re.compile(r"\((\w+):\) .*\b(" + "|".join(COLOURS) + r") one\b")
    for split, rows in _all_questions(root).items():
        for r in rows:
            clip = attrs["clips"][r["vid_name"]]
            likes = dict(m.groups() for _, _, t in _parse_srt(root / "tvqa_subtitles" / f"{r['vid_name']}.srt")
                         for m in [like.search(t)] if m)  # speaker -> colour
            action_of = {o["colour"]: o["action"] for ev in clip["events"] for o in ev["objects"]}
            options = [r[f"a{i}"] for i in range(5)]
            m_what = re.fullmatch(r"What does the (\w+) one do\?", r["q"])
            if m_what:  # seen: the frames
                truth = f"It {ACTION_3RD[action_of[m_what.group(1)]]}."
            else:  # said: the subtitles
                name = re.fullmatch(r"Which one does (\w+) like\?", r["q"]).group(1)
                truth = f"The {likes[name]} one."
                moment = next(ev["objects"] for ev in clip["events"] if likes[name] in
                              {o["colour"] for o in ev["objects"]})
                unsaid = next(o["colour"] for o in moment if o["colour"] != likes[name])
                assert f"The {unsaid} one." in options  # on screen beside it, never said: a distractor
            assert len(set(options)) == 5 and options.count(truth) == 1
            answer_idx = r.get("answer_idx", attrs["questions"][str(r["qid"])]["answer_idx"])
            assert options[answer_idx] == truth
            if "NaN" not in r["ts"]:  # the colour in question is on screen inside ts
                s, e = map(float, r["ts"].split("-"))
                k = int((s + e) / 2 * 3)
                frame = np.asarray(Image.open(_frames_dir(root, r["vid_name"]) / f"{k + 1:05d}.jpg").convert("RGB"))
                colour = attrs["questions"][str(r["qid"])]["colour"]
                assert _rgb_near(frame, COLOURS[colour], tol=90) >= 4


# --------------------------------------------------------------------------------------------------- all three

WRITERS = {
    "youcook2": (synth_youcook2, YC, ["youcookii_annotations_trainval.json", "splits/train_list.txt",
                                      "splits/val_list.txt", "youcookii_train.csv", "youcookii_val.csv",
                                      "label_foodtype.csv", "youcookii_data.no_transcript.pickle",
                                      "youcookii_videos_features.pickle", "synth_attributes.json"]),
    "tgif": (synth_tgifqa, TG, [f"{s}_{t}_question.csv" for s in ("Train", "Test") for t in TGIF_HEADERS]
             + ["synth_attributes.json"]),
    "tvqa": (synth_tvqa, TV, [f"tvqa_qa_release/tvqa_{s}.jsonl" for s in ("train", "val", "test_public")]
             + ["tvqa_preprocessed_subtitles.jsonl", "synth_attributes.json"]),
}


@pytest.mark.parametrize("name", list(WRITERS))
def test_determinism(name, tmp_path, yc, tg, tv):
    fn, kw, files = WRITERS[name]
    root = {"youcook2": yc, "tgif": tg, "tvqa": tv}[name][0]
    fn(tmp_path / "again", **kw, seed=5)
    fn(tmp_path / "other", **kw, seed=6)
    for f in files:
        assert (tmp_path / "again" / f).read_bytes() == (root / f).read_bytes(), f
    assert (tmp_path / "other" / files[0]).read_bytes() != (root / files[0]).read_bytes()
    if name == "tgif":  # the media too
        for p in sorted((root / "gifs").iterdir())[:5]:
            assert (tmp_path / "again" / "gifs" / p.name).read_bytes() == p.read_bytes()
    if name == "tvqa":
        srts = sorted((root / "tvqa_subtitles").iterdir())
        assert [p.read_bytes() for p in srts] == [(tmp_path / "again" / "tvqa_subtitles" / p.name).read_bytes()
                                                  for p in srts]


@pytest.mark.parametrize("name, bad", [
    ("youcook2", dict(n_train_videos=0)), ("youcook2", dict(n_val_videos=-1)), ("youcook2", dict(segments_per_video=0)),
    ("youcook2", dict(fps=0)), ("youcook2", dict(size=33)), ("youcook2", dict(size=8)), ("youcook2", dict(seed=-1)),
    ("youcook2", dict(n_train_videos=2.5)),
    ("tgif", dict(n_train=0)), ("tgif", dict(n_test=0)), ("tgif", dict(size=4)), ("tgif", dict(n_train="3")),
    ("tvqa", dict(n_train=0)), ("tvqa", dict(n_val=0)), ("tvqa", dict(n_test=0)), ("tvqa", dict(size=31)),
    ("tvqa", dict(n_nan_ts=-1)), ("tvqa", dict(n_train=1, n_nan_ts=2)), ("tvqa", dict(n_train=True)),
])
def test_bad_arguments(name, bad, tmp_path):
    fn, kw, _ = WRITERS[name]
    with pytest.raises(MeltrError) as err:
        fn(tmp_path / "x", **{**kw, **bad})
    msg = str(err.value)
    assert "\n" not in msg and next(iter(bad)) in msg
    assert not (tmp_path / "x").exists()  # nothing written


def test_summary_is_json(yc, tg, tv):
    for _, counts in (yc, tg, tv):
        assert json.loads(json.dumps(counts)) == counts
