"""Synthetic TVQA in the real jayleicn/TVQA on-disk format (docs/datasets.md §4, §10).

Each clip has one or two "moments". In a moment two shapes act at the same time (each in its own half of
the frame, left/right or top/bottom; moves in four directions, growing, shrinking), and two characters of the
show speak: one says which shape they like, by colour only ("(Penny:) I like the red one."), the other says
something else. Half the questions are answered by the frames, half by the subtitles, as in TVQA where some
answers are seen and some are said:
  * "What does the red one do?"      frames: the red shape moves up
  * "Which one does Penny like?"     subtitles: "(Penny:) I like the red one."
Five options, one correct. The other shape's action is always a distractor of a "what" question, so its
colour has to be grounded in the frames; the other shape's colour, on screen but never said, is always a
distractor of a "which" question, so its answer has to come from the subtitles. Within a clip all colours,
actions and speakers differ, so a question stays answerable from the whole clip when its `ts` is NaN. (The
binding versions, "who likes the red one?" with both characters naming a colour, or the two-hop "what does
the one Penny likes do?", stay at chance for the tiny random-init models of a CPU run.)

Files written under `root` (same names and formats as the real release):
  tvqa_qa_release/tvqa_{train,val,test_public}.jsonl      (test_public without answer_idx)
  tvqa_subtitles/<vid_name>.srt                            (ASCII, "(Name:)" speaker tags, some lines untagged)
  tvqa_preprocessed_subtitles.jsonl                        (TVRetrieval's one line per clip)
  frames_hq/<show>_frames/<vid_name>/00001.jpg ...         (3 fps; <show> is bbt for unprefixed vid_names)
plus `synth_attributes.json` (ground truth per clip and per qid), which the real data has not.
"""
from __future__ import annotations

import json
import math
import os
import re
import sys
from pathlib import Path

import numpy as np

from ...errors import MeltrError
from ...io import atomic_dir, write_json, write_text
from .common import ACTIONS, COLOURS, SHAPES, background, check_int, colour_index, cycle, layout, palette, render_frames

FPS = 3  # frames_hq is extracted at 3 fps
# show prefix -> (show_name exactly as in the jsonl, characters); bbt vid_names carry no prefix.
SHOWS = {
    "bbt": ("The Big Bang Theory", ("Sheldon", "Leonard", "Penny", "Howard", "Raj", "Amy", "Bernadette")),
    "friends": ("Friends", ("Monica", "Joey", "Chandler", "Rachel", "Ross", "Phoebe")),
    "met": ("How I Met You Mother", ("Ted", "Marshall", "Lily", "Robin", "Barney", "Victoria")),  # sic, as released
    "grey": ("Grey's Anatomy", ("Meredith", "Cristina", "Derek", "Izzie", "George", "Alex")),
    "castle": ("Castle", ("Castle", "Beckett", "Esposito", "Ryan", "Lanie", "Alexis")),
    "house": ("House M.D.", ("House", "Wilson", "Cuddy", "Foreman", "Chase", "Cameron")),
}
# 3rd-person phrases for options and questions
ACTION_3RD = {"left": "moves to the left", "right": "moves to the right", "up": "moves up", "down": "moves down",
              "grow": "grows bigger", "shrink": "shrinks"}
_LIKE_LINES = ("I like the {c} one.", "The {c} one is my favorite.", "I really like that {c} one.",
               "Well, I like the {c} one.")
_FILLER = ("Hey.", "Okay.", "What is that?", "Look at this.", "Wait for it.", "Oh, come on.", "Sure.", "Really?",
           "Are you serious?", "Let me see.")
SPLITS = (("train", "tvqa_train.jsonl"), ("val", "tvqa_val.jsonl"), ("test", "tvqa_test_public.jsonl"))


def synth_tvqa(root: str | os.PathLike, *, n_train: int = 120, n_val: int = 40, n_test: int = 40, seed: int = 0,
               size: int = 48, n_nan_ts: int = 1) -> dict:
    """Write a synthetic TVQA under `root`; return {split: {"clips", "questions"}, "frames": jpgs written}.

    n_* are numbers of questions; clips hold two questions each (the last one of a split may hold one).
    n_nan_ts train questions get ts "NaN-NaN": the real files may hold NaN there (TVQA's preprocessing.py
    counts them and substitutes [10, 30]); the exact spelling in the release is not verified. Everything is
    byte-identical for the same arguments.
    """
    for name, val, lo in (("n_train", n_train, 1), ("n_val", n_val, 1), ("n_test", n_test, 1), ("size", size, 16),
                          ("seed", seed, 0), ("n_nan_ts", n_nan_ts, 0)):
        check_int("synth_tvqa", name, val, lo)
    if size % 2:
        raise MeltrError(f"synth_tvqa: size: expected an even number (two half-frame boxes), got {size}")
    if n_nan_ts > n_train:
        raise MeltrError(f"synth_tvqa: n_nan_ts: expected at most n_train = {n_train}, got {n_nan_ts}")
    root = Path(root)
    rng = np.random.default_rng(seed)
    shows = cycle(rng, list(SHOWS))
    vid_names = _unique_vid_names(rng)
    qid = int(rng.integers(100_000, 140_000))

    clips: list[dict] = []
    questions: dict[str, list[dict]] = {}
    q_attrs: dict[int, dict] = {}
    summary: dict = {}
    for split, n_q in (("train", n_train), ("val", n_val), ("test", n_test)):
        split_qs: list[dict] = []
        n_clips = 0
        while len(split_qs) < n_q:
            show = next(shows)
            body = next(vid_names)
            vid_name = body if show == "bbt" else f"{show}_{body}"  # Big Bang Theory clips have no prefix
            clip = _make_clip(rng, show, vid_name, min(2, n_q - len(split_qs)), size)
            clip["split"] = split
            clips.append(clip)
            n_clips += 1
            for ev in clip["events"]:
                q, a = _make_question(rng, clip, ev)
                qid += int(rng.integers(1, 4))  # increasing over train, val, test, with gaps like the real qids
                q["qid"] = qid
                split_qs.append(q)
                q_attrs[q["qid"]] = dict(a, vid_name=clip["vid_name"], split=split)
        questions[split] = split_qs
        summary[split] = {"clips": n_clips, "questions": len(split_qs)}
    if n_nan_ts:
        for j in sorted(rng.choice(len(questions["train"]), size=n_nan_ts, replace=False)):
            questions["train"][int(j)]["ts"] = "NaN-NaN"  # convert_ts in TVQA's preprocessing.py reads it
            q_attrs[questions["train"][int(j)]["qid"]]["nan_ts"] = True

    # Frames and subtitles first, question files last: an interrupted run leaves no jsonl pointing at clips
    # whose media are missing.
    from tqdm import tqdm

    n_jpg = 0
    for clip in tqdm(clips, desc="synth tvqa clips", unit="clip", file=sys.stderr):
        n_jpg += _write_frames(root / "frames_hq" / f"{clip['show']}_frames" / clip["vid_name"], clip, size)
        write_text(root / "tvqa_subtitles" / f"{clip['vid_name']}.srt", _srt(clip["subs"]))
    write_text(root / "tvqa_preprocessed_subtitles.jsonl",
               "".join(json.dumps({"vid_name": c["vid_name"], "sub": [_preprocessed(s) for s in c["subs"]]},
                                  sort_keys=True) + "\n" for c in clips))
    for split, fname in SPLITS:
        lines = []
        for q in questions[split]:
            if split == "test":
                q = {k: v for k, v in q.items() if k != "answer_idx"}  # labels are hidden in test_public
            lines.append(json.dumps(q, sort_keys=True) + "\n")
        write_text(root / "tvqa_qa_release" / fname, "".join(lines))
    clip_attrs = {c["vid_name"]: {k: c[k] for k in ("split", "show", "show_name", "duration", "n_frames", "bg",
                                                     "events")} for c in clips}
    write_json(root / "synth_attributes.json", {"clips": clip_attrs, "questions": {str(k): v for k, v in
                                                                                  q_attrs.items()}})
    summary["frames"] = n_jpg
    return summary


def _make_clip(rng: np.random.Generator, show: str, vid_name: str, n_events: int, size: int) -> dict:
    show_name, cast = SHOWS[show]
    colours = [list(COLOURS)[int(i)] for i in rng.choice(len(COLOURS), size=2 * n_events, replace=False)]
    actions = [ACTIONS[int(i)] for i in rng.choice(len(ACTIONS), size=2 * n_events, replace=False)]
    speakers = [cast[int(i)] for i in rng.choice(len(cast), size=2 * n_events, replace=False)]
    subs: list[tuple[float, float, str]] = []
    events = []
    t = _r(rng.uniform(0.5, 2.0))
    if t >= 1.0:
        subs.append(_filler(rng, cast, 0.1, t - 0.1))
    for k in range(n_events):
        s, e = t, _r(t + rng.uniform(3.5, 5.0))
        sides, boxes = _halves(size, actions[2 * k: 2 * k + 2])
        liked = int(rng.integers(2))
        objs = []
        for j in range(2):
            i = 2 * k + j
            act = actions[i]
            objs.append({"colour": colours[i], "shape": SHAPES[int(rng.integers(len(SHAPES)))], "action": act,
                         "side": sides[j], "liked_by": speakers[i] if j == liked else None,
                         "layout": layout(rng, boxes[j], act)})
        # the moment's two lines, "I like the X one." and another, in random order, inside (s, e) so TVQA's
        # located-subtitle rule (ts[0] < sub start < ts[1]) picks them
        line_t = _r(s + rng.uniform(0.2, 0.6))
        for j in [int(j) for j in rng.permutation(2)]:
            dur = _r(rng.uniform(1.0, 1.3))
            if j == liked:
                text = _LIKE_LINES[int(rng.integers(len(_LIKE_LINES)))].format(c=objs[j]["colour"])
            else:
                text = _FILLER[int(rng.integers(len(_FILLER)))]
            subs.append((line_t, _r(line_t + dur), f"({speakers[2 * k + j]}:) {text}"))
            line_t = _r(line_t + dur + rng.uniform(0.1, 0.3))
        events.append({"start": s, "end": e, "objects": objs})
        gap = _r(rng.uniform(1.0, 2.0))
        if k + 1 < n_events:  # gaps are >= 1 s: room for a line
            subs.append(_filler(rng, cast, e + 0.1, e + gap - 0.1))
        t = _r(e + gap)
    duration = _r(events[-1]["end"] + rng.uniform(0.5, 2.0))
    if duration - events[-1]["end"] >= 1.0:
        subs.append(_filler(rng, cast, events[-1]["end"] + 0.1, duration - 0.1))
    subs.sort()
    return {"vid_name": vid_name, "show": show, "show_name": show_name, "cast": cast, "duration": duration,
            "n_frames": math.ceil(duration * FPS - 1e-6), "bg": background(rng), "events": events, "subs": subs}


def _halves(size: int, actions: list[str]):
    """Split the frame between two shapes so that a horizontal move gets the full width (top/bottom halves)
    unless more of the two move vertically (left/right halves)."""
    n_h = sum(a in ("left", "right") for a in actions)
    n_v = sum(a in ("up", "down") for a in actions)
    half = size / 2
    if n_h > n_v:
        return ("top", "bottom"), ((0, 0, size, half), (0, half, size, half))
    return ("left", "right"), ((0, 0, half, size), (half, 0, half, size))


def _make_question(rng: np.random.Generator, clip: dict, ev: dict) -> tuple[dict, dict]:
    kind = ("what", "which")[int(rng.integers(2))]
    if kind == "what":  # either shape
        j = int(rng.integers(2))
    else:  # the liked one
        j = next(i for i, o in enumerate(ev["objects"]) if o["liked_by"])
    target, other = ev["objects"][j], ev["objects"][1 - j]
    if kind == "what":
        q = f"What does the {target['colour']} one do?"
        rest = [a for a in ACTIONS if a not in (target["action"], other["action"])]
        cands = [target["action"], other["action"]] + [rest[int(i)] for i in rng.choice(len(rest), 3, replace=False)]
        texts = [f"It {ACTION_3RD[a]}." for a in cands]
    else:
        q = f"Which one does {target['liked_by']} like?"
        rest = [c for c in COLOURS if c not in (target["colour"], other["colour"])]
        cands = [target["colour"], other["colour"]] + [rest[int(i)] for i in rng.choice(len(rest), 3, replace=False)]
        texts = [f"The {c} one." for c in cands]
    order = [int(i) for i in rng.permutation(5)]
    options = [texts[i] for i in order]
    answer_idx = order.index(0)
    rec = {f"a{i}": o for i, o in enumerate(options)}
    rec.update({"answer_idx": answer_idx, "q": q, "qid": 0, "show_name": clip["show_name"],
                "ts": f"{_fmt(ev['start'])}-{_fmt(ev['end'])}", "vid_name": clip["vid_name"]})
    attrs = {"kind": kind, "answer_idx": answer_idx, "answer": options[answer_idx], "target_side": target["side"],
             "colour": target["colour"], "action": target["action"], "speaker": target["liked_by"]}
    return rec, attrs


def _write_frames(folder: Path, clip: dict, size: int) -> int:
    """00001.jpg ... at 3 fps: file k (0-based) covers [k/3, (k+1)/3) and shows the clip at its middle."""
    from PIL import Image

    per_frame = []
    for k in range(clip["n_frames"]):
        t = (k + 0.5) / FPS
        objs = []
        for ev in clip["events"]:
            if ev["start"] <= t < ev["end"]:
                u = (t - ev["start"]) / (ev["end"] - ev["start"])
                objs += [(o["shape"], o["action"], u, o["layout"], colour_index(o["colour"])) for o in ev["objects"]]
        per_frame.append(objs)
    rgb = palette(clip["bg"])[render_frames(per_frame, size)]
    with atomic_dir(folder) as tmp:
        for k, f in enumerate(rgb, 1):
            # 4:4:4 chroma: 4:2:0 would smear the colours of shapes ~10 px wide
            Image.fromarray(f).save(tmp / f"{k:05d}.jpg", format="JPEG", quality=90, subsampling=0)
    return len(rgb)


def _srt(subs: list[tuple[float, float, str]]) -> str:
    out = []
    for i, (s, e, text) in enumerate(subs, 1):
        out.append(f"{i}\n{_srt_time(s)} --> {_srt_time(e)}\n{text}\n")
    text = "\n".join(out)
    text.encode("ascii")  # iso-8859-1 safe by construction; fail loudly otherwise
    return text


def _srt_time(t: float) -> str:
    ms = int(round(t * 1000))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d},{ms:03d}"


_TAG = re.compile(r"\((\w[\w .'-]*):\)")


def _preprocessed(sub: tuple[float, float, str]) -> dict:
    """TVRetrieval's subtitle entry: '(Chase:) Hi.' -> ' ( Chase :  ) Hi.', lines joined by a space."""
    s, e, text = sub
    text = " ".join(_TAG.sub(lambda m: f" ( {m.group(1)} :  ) ", line).replace("  )  ", "  ) ")
                    for line in text.split("\n"))
    return {"text": text, "start": round(s, 3), "end": round(e, 3)}


def _filler(rng: np.random.Generator, cast: tuple[str, ...], s: float, e: float) -> tuple[float, float, str]:
    """A line that says nothing about the shapes; untagged a quarter of the time (TVQA's preprocessing then
    adds "(<UNKNAME>:)"), two speakers on two lines a quarter of the time."""
    def pick(seq):
        return seq[int(rng.integers(len(seq)))]

    r = rng.uniform()
    if r < 0.25:
        text = pick(_FILLER)
    elif r < 0.5:
        a, b = (cast[int(i)] for i in rng.choice(len(cast), 2, replace=False))
        text = f"({a}:) {pick(_FILLER)}\n({b}:) {pick(_FILLER)}"
    else:
        text = f"({pick(cast)}:) {pick(_FILLER)}"
    return (_r(s), _r(e), text)


def _unique_vid_names(rng: np.random.Generator):
    """Never-repeated vid_name bodies sSSeEE_segNN_clip_CC (the show prefix is added by the caller)."""
    seen: set[str] = set()
    while True:
        body = (f"s{int(rng.integers(1, 11)):02d}e{int(rng.integers(1, 25)):02d}_seg{int(rng.integers(1, 3)):02d}"
                f"_clip_{int(rng.integers(0, 30)):02d}")
        if body not in seen:
            seen.add(body)
            yield body


def _r(x: float) -> float:
    return round(float(x), 2)


def _fmt(x: float) -> str:
    """'48.62', '0', '58.9': at most two decimals, no trailing zeros, as in the released ts strings."""
    return f"{x:.2f}".rstrip("0").rstrip(".")
