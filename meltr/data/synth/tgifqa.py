"""Synthetic TGIF-QA in the real YunseokJANG/tgif-qa on-disk format (docs/datasets.md §3, §10).

Every GIF shows one saturated shape over a plain grey background, and every question is answerable from it:
  * Action:     the shape repeats one action (a move in one of four directions, growing, shrinking) 2 or 3
                times; "What does the red ball do 2 times ?", 5 options.
  * Transition: the GIF has two phases with different actions; "What does the red ball do after move up ?"
                and "... before ...", 5 options (the other phase's action is always among the distractors).
  * FrameQA:    "what is the color of the ball ?" (type 2, a colour word) and "what is the red object ?"
                (type 0, a shape word), two questions per GIF.
  * Count:      the shape drifts across the frame and blinks (disappears for one frame) N times,
                N in {0, 2, 3, ..., 10} like the real answers (no 1s); "How many times does the red ball blink ?".
                Every count GIF has COUNT_FRAMES frames, so N is also the number of frames without the shape.

Files written under `root` (same names and formats as the real release):
  {Train,Test}_{action,transition,frameqa,count}_question.csv  TAB-separated, header row, CRLF line endings
  gifs/<gif_name>.gif                                          gif_name = tumblr_<id>_{250,400,500}
plus `synth_attributes.json` ({gif_name: ground truth}), which the real data has not, for tests and probes.

Action, transition and frameqa GIFs have 4-8 frames (§10). Count GIFs need at least 2N+1 frames to show N
blinks (21 for N = 10): §10 asks for both 4-8 frames and answers up to 10, which cannot hold together, and
the answer range is what the count metric (MSE, clipping) depends on. They all have COUNT_FRAMES = 24 frames,
and a feature extractor must sample as many to see every blink (params.yaml gives tgifqa num_frames 24).
"""
from __future__ import annotations

import itertools
import os
import sys
from pathlib import Path

import numpy as np

from ...io import atomic_path, write_json
from .common import ACTIONS, COLOURS, LINEAR, SHAPE_NOUNS, SHAPES, background, check_int, colour_index, cycle, draw_frame, layout, palette, write_bytes

# Base-form verb phrases, as TGIF answers are written ("nod head", "jump").
ACTION_PHRASES = {"left": "move to the left", "right": "move to the right", "up": "move up", "down": "move down",
                  "grow": "grow bigger", "shrink": "shrink"}
COUNT_ANSWERS = (0, 2, 3, 4, 5, 6, 7, 8, 9, 10)  # the real Count answers: zeros, no 1s
# One length for every count GIF: room for 10 one-frame blinks between visible frames, and a length that
# says nothing about the answer (with 2N+1 frames, the share of blank frames was about 1/2 for every N).
COUNT_FRAMES = 24
TASKS = ("action", "transition", "frameqa", "count")
HEADERS = {  # exact column order of the real files (§3.2)
    "action": ("gif_name", "question", "a1", "a2", "a3", "a4", "a5", "answer", "vid_id", "key"),
    "transition": ("gif_name", "question", "a1", "a2", "a3", "a4", "a5", "answer", "vid_id", "key"),
    "frameqa": ("gif_name", "question", "answer", "type", "vid_id", "key", "description"),
    "count": ("gif_name", "question", "answer", "vid_id", "key"),
}
_VID_PREFIX = {"action": "ACTION", "transition": "TRANS", "frameqa": "FRAMEQA", "count": "COUNT"}
FRAMEQA_OBJECT, FRAMEQA_COLOR = 0, 2  # the `type` column: 0 object, 1 number, 2 color, 3 location
_DESC_PHRASES = {"left": "moves to the left", "right": "moves to the right", "up": "moves up",
                 "down": "moves down", "grow": "grows bigger", "shrink": "shrinks"}
_ALNUM = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"))
_GIF_MS = 100  # per-frame delay; what browsers show for a GIF frame without one
# Palette of every GIF/frame: 0 = background grey, 1..6 = COLOURS, 7 = background grey + 3 (used only to
# keep two consecutive frames from being byte-identical, which Pillow would merge into one frame).
_NUDGE = 7


def synth_tgifqa(root: str | os.PathLike, *, n_train: int = 120, n_test: int = 40, seed: int = 0,
                 size: int = 48) -> dict:
    """Write a synthetic TGIF-QA under `root`; return {task: {split: {"gifs", "questions"}}, "gifs": total}.

    n_train / n_test are numbers of questions per task (FrameQA and Transition ask two questions per GIF,
    like the real data, so they use about half as many GIFs). Everything is byte-identical for the same
    arguments.
    """
    for name, val, lo in (("n_train", n_train, 1), ("n_test", n_test, 1), ("size", size, 16)):
        check_int("synth_tgifqa", name, val, lo)
    check_int("synth_tgifqa", "seed", seed, 0)
    root = Path(root)
    rng = np.random.default_rng(seed)
    names = _unique_names(rng)
    key_counter = itertools.count(int(rng.integers(1, 1000)))

    rows: dict[tuple[str, str], list[tuple]] = {}
    gifs: list[tuple[str, np.ndarray, int]] = []  # (gif_name, index frames, background grey)
    attrs: dict[str, dict] = {}
    summary: dict = {}
    for task in TASKS:
        summary[task] = {}
        vid_counter = itertools.count(1)  # vid_id numbers run on from Train into Test, like one enumeration
        for split, n_q in (("Train", n_train), ("Test", n_test)):
            make = _MAKERS[task]
            if task == "count":  # every answer value in turn, so that 0 and 2-10 all occur
                counts = cycle(rng, list(COUNT_ANSWERS))
                make = lambda *a, _c=counts: _make_count(*a, count=next(_c))  # noqa: E731
            out_rows, n_gifs = [], 0
            combos = cycle(rng, list(itertools.product(COLOURS, SHAPES)))
            q_left = n_q
            while q_left > 0:
                gif_name, key, vid_id = next(names), next(key_counter), f"{_VID_PREFIX[task]}{next(vid_counter)}"
                colour, shape = next(combos)
                frames, bg, a, qrows = make(rng, size, colour, shape, min(q_left, 2))
                for q in qrows:
                    out_rows.append(_row(task, gif_name, vid_id, key, q))
                q_left -= len(qrows)
                n_gifs += 1
                gifs.append((gif_name, frames, bg))
                attrs[gif_name] = {"task": task, "split": split.lower(), "key": key, "vid_id": vid_id,
                                   "colour": colour, "shape": shape, "frames": len(frames), **a,
                                   "questions": [{"question": q["question"], "answer": q["answer"]} for q in qrows]}
            rows[(split, task)] = out_rows
            summary[task][split.lower()] = {"gifs": n_gifs, "questions": len(out_rows)}
    summary["gifs"] = len(gifs)

    # GIFs first, question files last: an interrupted run leaves no csv that points at missing GIFs.
    from tqdm import tqdm

    for gif_name, frames, bg in tqdm(gifs, desc="synth tgif-qa gifs", unit="gif", file=sys.stderr):
        _write_gif(root / "gifs" / f"{gif_name}.gif", frames, bg)
    for (split, task), task_rows in rows.items():
        write_bytes(root / f"{split}_{task}_question.csv", _tsv_crlf([HEADERS[task]] + task_rows))
    write_json(root / "synth_attributes.json", attrs)
    return summary


# ---------------------------------------------------------------------------------------------------------
# Per-task GIF + question makers: (rng, size, colour, shape, max_questions) -> (frames, bg, attrs, questions)

def _make_action(rng, size, colour, shape, _max_q):
    action = ACTIONS[int(rng.integers(len(ACTIONS)))]
    reps = int(rng.choice([2, 3]))
    per_rep = int(rng.integers(3, 5)) if reps == 2 else 2  # 6-8 frames
    bg = background(rng)
    p = layout(rng, (0, 0, size, size), action)
    us = [k / (per_rep - 1) for k in range(per_rep)] * reps
    frames = np.stack([draw_frame(size, [(shape, action, u, p, colour_index(colour))]) for u in us])
    options, answer = _options(rng, action, must=())
    q = {"question": f"What does the {colour} {_noun(rng, shape)} do {reps} times ?",
         "options": [ACTION_PHRASES[o] for o in options], "answer": answer}
    return frames, bg, {"action": action, "reps": reps}, [q]


def _make_transition(rng, size, colour, shape, max_q):
    first, second = (ACTIONS[int(i)] for i in rng.choice(len(ACTIONS), size=2, replace=False))
    n1, n2 = int(rng.integers(3, 5)), int(rng.integers(3, 5))  # 6-8 frames in all
    bg = background(rng)
    p1, p2 = layout(rng, (0, 0, size, size), first), layout(rng, (0, 0, size, size), second)
    c = colour_index(colour)
    frames = np.stack([draw_frame(size, [(shape, first, k / (n1 - 1), p1, c)]) for k in range(n1)]
                      + [draw_frame(size, [(shape, second, k / (n2 - 1), p2, c)]) for k in range(n2)])
    noun = _noun(rng, shape)
    qs = []
    # Two questions per GIF, like the real file (6,232 test questions over 3,116 GIFs); random order.
    for when in [("after", "before")[int(i)] for i in rng.permutation(2)][:max_q]:
        asked, correct = (first, second) if when == "after" else (second, first)
        options, answer = _options(rng, correct, must=(asked,))
        qs.append({"question": f"What does the {colour} {noun} do {when} {ACTION_PHRASES[asked]} ?",
                   "options": [ACTION_PHRASES[o] for o in options], "answer": answer})
    return frames, bg, {"actions": [first, second], "phase_frames": [n1, n2]}, qs


def _make_frameqa(rng, size, colour, shape, max_q):
    action = ACTIONS[int(rng.integers(len(ACTIONS)))]
    n = int(rng.integers(4, 9))
    bg = background(rng)
    p = layout(rng, (0, 0, size, size), action)
    frames = np.stack([draw_frame(size, [(shape, action, k / (n - 1), p, colour_index(colour))]) for k in range(n)])
    desc = f"a {colour} {_noun(rng, shape)} {_DESC_PHRASES[action]} ."
    by_type = {
        FRAMEQA_COLOR: {"question": f"what is the color of the {_noun(rng, shape)} ?", "answer": colour},
        FRAMEQA_OBJECT: {"question": f"what is the {colour} object ?", "answer": shape},
    }
    qs = [dict(by_type[t], type=t, description=desc) for t in
          [(FRAMEQA_COLOR, FRAMEQA_OBJECT)[int(i)] for i in rng.permutation(2)][:max_q]]
    return frames, bg, {"action": action}, qs


def _make_count(rng, size, colour, shape, _max_q, *, count=None):
    count = int(rng.choice(COUNT_ANSWERS)) if count is None else count
    # N blinks: the shape is hidden in N of the odd frames (never two in a row, never the first or last), so
    # each hidden frame is one blink. It drifts along a straight line meanwhile, so that no two consecutive
    # frames are the same.
    n = COUNT_FRAMES
    hidden = {int(k) for k in rng.choice(np.arange(1, n - 1, 2), size=count, replace=False)}
    drift = LINEAR[int(rng.integers(len(LINEAR)))]
    bg = background(rng)
    p = layout(rng, (0, 0, size, size), drift)
    c = colour_index(colour)
    frames = np.stack([draw_frame(size, [] if k in hidden else [(shape, drift, k / (n - 1), p, c)])
                       for k in range(n)])
    q = {"question": f"How many times does the {colour} {_noun(rng, shape)} blink ?", "answer": count}
    return frames, bg, {"count": count, "drift": drift, "hidden_frames": sorted(hidden)}, [q]


_MAKERS = {"action": _make_action, "transition": _make_transition, "frameqa": _make_frameqa, "count": _make_count}


def _row(task: str, gif_name: str, vid_id: str, key: int, q: dict) -> tuple:
    if task in ("action", "transition"):
        return (gif_name, q["question"], *q["options"], q["answer"], vid_id, key)
    if task == "frameqa":
        return (gif_name, q["question"], q["answer"], q["type"], vid_id, key, q["description"])
    return (gif_name, q["question"], q["answer"], vid_id, key)


def _options(rng, correct: str, must: tuple[str, ...]) -> tuple[list[str], int]:
    """Five distinct actions in random order: the correct one, `must` (hard distractors), random others."""
    others = [a for a in ACTIONS if a != correct and a not in must]
    picked = [others[int(i)] for i in rng.choice(len(others), size=4 - len(must), replace=False)]
    options = [correct, *must, *picked]
    order = rng.permutation(5)
    options = [options[int(i)] for i in order]
    return options, options.index(correct)


# ---------------------------------------------------------------------------------------------------------
# Rendering shared with synth_tvqa: palette-index frames of shapes performing ACTIONS inside a box.













def _write_gif(path: Path, frames: np.ndarray, bg: int) -> None:
    """Palette GIF, one frame per array, 100 ms each, looping; written to a temp name then renamed."""
    from PIL import Image

    frames = frames.copy()
    for t in range(1, len(frames)):
        if np.array_equal(frames[t], frames[t - 1]):  # Pillow would merge them into one longer frame
            frames[t, 0, 0] = _NUDGE if frames[t - 1, 0, 0] != _NUDGE else 0
    pal = palette(bg).reshape(-1).tolist()
    pal += [0] * (768 - len(pal))
    h, w = frames.shape[1:]
    imgs = []
    for f in frames:
        im = Image.frombytes("P", (w, h), np.ascontiguousarray(f).tobytes())
        im.putpalette(pal)
        imgs.append(im)
    with atomic_path(path) as tmp:
        imgs[0].save(tmp, format="GIF", save_all=True, append_images=imgs[1:], duration=_GIF_MS, loop=0)


# ---------------------------------------------------------------------------------------------------------
# Small helpers shared by the synthetic writers



def _tsv_crlf(rows: list[tuple]) -> bytes:
    """TAB-separated, CRLF-terminated, no quoting: the real files are read with pd.read_csv(sep='\\t')."""
    lines = []
    for r in rows:
        cells = [str(c) for c in r]
        if any(ch in c for c in cells for ch in "\t\r\n\""):
            raise AssertionError(f"cell needs quoting: {cells}")  # our vocabulary never does
        lines.append("\t".join(cells))
    return ("\r\n".join(lines) + "\r\n").encode("ascii")






def _noun(rng, shape: str) -> str:
    nouns = SHAPE_NOUNS[shape]
    return nouns[int(rng.integers(len(nouns)))]


def _unique_names(rng):
    """tumblr_<15 chars>o1_<250|400|500>, never repeated."""
    seen: set[str] = set()
    while True:
        name = f"tumblr_{''.join(rng.choice(_ALNUM, size=15))}o1_{int(rng.choice([250, 400, 500]))}"
        if name not in seen:
            seen.add(name)
            yield name
