"""Drawing and writing helpers shared by the synthetic dataset writers: the colours, shapes and motions every
synthetic clip is made of, the renderers (RGB frames for mp4, palette frames for GIF and jpg folders), the mp4
encoder, caption paraphrases and small argument checks.
"""
from __future__ import annotations

import csv
import io
import itertools
import os
from pathlib import Path

import numpy as np

from ...errors import MeltrError
from ...io import atomic_path

# Well separated, saturated RGB colours (they must survive yuv420p chroma subsampling and a 32x32 downscale).
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (230, 30, 30),
    "green": (30, 200, 50),
    "blue": (40, 80, 255),
    "yellow": (240, 220, 30),
    "white": (245, 245, 245),
    "purple": (170, 40, 220),
}


SHAPES = ("circle", "square", "triangle", "cross")


MOTIONS = ("left", "right", "up", "down")


COMBOS = tuple(itertools.product(COLOURS, SHAPES, MOTIONS))  # 96 (colour, shape, motion) triples


# Caption vocabulary: nouns and adjectives per shape, verb phrases per motion (3rd person singular present).
SHAPE_NOUNS = {
    "circle": ("circle", "ball", "disc", "dot"),
    "square": ("square", "box", "block"),
    "triangle": ("triangle", "wedge", "triangle shape"),
    "cross": ("cross", "plus sign", "plus shape"),
}


_SHAPE_ADJ = {"circle": "round", "square": "square", "triangle": "triangular", "cross": "cross shaped"}


_MOTION_PHRASES = {
    "left": ("moves to the left", "slides left across the screen", "travels leftward", "goes left",
             "drifts toward the left side", "heads left"),
    "right": ("moves to the right", "slides right across the screen", "travels rightward", "goes right",
              "drifts toward the right side", "heads right"),
    "up": ("moves up", "rises toward the top", "floats upward", "goes up", "climbs up the screen",
           "travels upward"),
    "down": ("moves down", "falls toward the bottom", "sinks downward", "goes down", "drops down the screen",
             "travels downward"),
}


_TEMPLATES = (
    "a {c} {n} {m}",
    "the {c} {n} {m}",
    "something {c} and {a} {m}",
    "there is a {c} {n} that {m}",
    "a {c} {n} {m} on a dark background",
    "we see a {c} {n} as it {m}",
    "{c} {n} {m}",
    "a video of a {c} {n} that {m}",
    "a single {a} {c} object {m}",
    "in this clip a {c} {n} {m}",
)


ID_CHARS = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"))


def captions(rng: np.random.Generator, colour: str, shape: str, motion: str, k: int) -> list[str]:
    """k different paraphrases (different templates first, then synonyms)."""
    out: list[str] = []
    templates = rng.permutation(len(_TEMPLATES))
    for attempt in range(50 * k):
        t = _TEMPLATES[templates[attempt % len(templates)]]
        nouns, phrases = SHAPE_NOUNS[shape], _MOTION_PHRASES[motion]
        cap = t.format(c=colour, a=_SHAPE_ADJ[shape], n=nouns[int(rng.integers(len(nouns)))],
                       m=phrases[int(rng.integers(len(phrases)))])
        if cap not in out:
            out.append(cap)
            if len(out) == k:
                return out
    raise MeltrError(f"synth_msrvtt: captions_per_video: expected at most {len(out)} distinct paraphrases, got {k}")


def render_params(rng: np.random.Generator, size: int, n_frames: int) -> dict:
    side = size * rng.uniform(0.40, 0.48)  # >= ~35% of the frame side even after the 32x32 downscale
    half = side / 2
    margin = size * 0.08
    return {
        "side": side,
        "bg": int(rng.integers(15, 60)),
        # start/end along the motion axis: near opposite edges, jittered a little
        "from": half + rng.uniform(0, margin), "to": size - half - rng.uniform(0, margin),
        # position across the motion axis: near the middle
        "across": size / 2 + rng.uniform(-margin, margin),
    }


def render_video(size: int, n_frames: int, colour: str, shape: str, motion: str, p: dict) -> np.ndarray:
    """(T, size, size, 3) uint8 RGB frames of the shape moving linearly across the frame."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5  # pixel centres
    frames = np.full((n_frames, size, size, 3), p["bg"], np.uint8)
    rgb = np.array(COLOURS[colour], np.uint8)
    for t in range(n_frames):
        along = p["from"] + (p["to"] - p["from"]) * t / max(n_frames - 1, 1)
        if motion in ("left", "up"):
            along = size - along  # same path, mirrored
        cx, cy = (along, p["across"]) if motion in ("left", "right") else (p["across"], along)
        frames[t][shape_mask(shape, xx - cx, yy - cy, p["side"] / 2)] = rgb
    return frames


def shape_mask(shape: str, dx: np.ndarray, dy: np.ndarray, h: float) -> np.ndarray:
    """Boolean mask of a shape of half-size h centred at dx = dy = 0."""
    if shape == "circle":
        return dx * dx + dy * dy <= h * h
    if shape == "square":
        return (np.abs(dx) <= h * 0.9) & (np.abs(dy) <= h * 0.9)  # a bit smaller: similar area to the circle
    if shape == "triangle":  # apex up, base down
        return (dy >= -h) & (dy <= h) & (np.abs(dx) <= (dy + h) / 2)
    if shape == "cross":
        arm = h / 3
        return ((np.abs(dx) <= h) & (np.abs(dy) <= arm)) | ((np.abs(dy) <= h) & (np.abs(dx) <= arm))
    raise ValueError(shape)


def write_mp4(path: Path, frames: np.ndarray, fps: int) -> None:
    """H.264 yuv420p mp4 via PyAV, written to a temp name then renamed."""
    # Lossless (qp 0): x264's lossy decisions differ with the environment (the same frames encoded under
    # OMP_NUM_THREADS=1 and unset decode to pixels up to 10 levels apart), so a lossy file would make clean runs
    # on two machines disagree. Lossless, every run decodes the same pixels; it also keeps the colours exact.
    # Keyframes often, so truncated files and seeking readers behave.
    _encode(path, frames, fps, "mp4", "libx264", {"qp": "0", "preset": "veryfast", "threads": "1", "g": str(fps)})


def write_avi(path: Path, frames: np.ndarray, fps: int) -> None:
    """MPEG-4 Part 2 in AVI (what MSVD's YouTubeClips hold) via PyAV, written to a temp name then renamed.
    Single-threaded at a fixed quantiser, so the same frames give the same bytes everywhere."""
    _encode(path, frames, fps, "avi", "mpeg4", {"qscale": "2", "threads": "1", "g": str(fps)})


def _encode(path: Path, frames: np.ndarray, fps: int, container_format: str, codec: str, options: dict) -> None:
    """(T, H, W, 3) uint8 RGB frames as a yuv420p video, frame i at pts i."""
    import av

    with atomic_path(path) as tmp:
        with av.open(str(tmp), mode="w", format=container_format) as container:
            stream = container.add_stream(codec, rate=fps)
            stream.width, stream.height = frames.shape[2], frames.shape[1]
            stream.pix_fmt = "yuv420p"
            stream.codec_context.options = options
            for i, f in enumerate(frames):
                frame = av.VideoFrame.from_ndarray(f, format="rgb24")
                frame.pts = i  # explicit timestamps: x264's rate control reads them
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)


def csv_text(rows: list[tuple]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()


# Actions a shape can perform: the four linear moves of synth.py plus two size changes, so that there are
# six candidates and a 5-way multiple choice always has 4 wrong options.
ACTIONS = ("left", "right", "up", "down", "grow", "shrink")


LINEAR = ("left", "right", "up", "down")


def layout(rng: np.random.Generator, box: tuple[float, float, float, float], action: str) -> dict:
    """Random placement of one shape performing `action` inside box = (x0, y0, w, h) pixels."""
    x0, y0, w, h = box
    m = min(w, h)
    half = m * rng.uniform(0.40, 0.48) / 2
    jit = m * 0.08
    horizontal = action in ("left", "right")
    lo, span = (x0, w) if horizontal else (y0, h)
    return {
        "half": half,
        # linear moves: start/end along the motion axis near opposite edges of the box, centred across it
        "from": lo + half + rng.uniform(0, jit), "to": lo + span - half - rng.uniform(0, jit),
        "across": (y0 + h / 2 if horizontal else x0 + w / 2) + rng.uniform(-jit, jit),
        # size changes: a fixed centre near the middle of the box
        "cx": x0 + w / 2 + rng.uniform(-jit / 2, jit / 2), "cy": y0 + h / 2 + rng.uniform(-jit / 2, jit / 2),
    }


def draw_frame(size: int, objects: list[tuple]) -> np.ndarray:
    """(size, size) uint8 palette indices; objects = [(shape, action, progress u in [0, 1], layout, index)]."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5  # pixel centres
    out = np.zeros((size, size), np.uint8)
    for shape, action, u, p, value in objects:
        if action in LINEAR:
            along = p["from"] + (p["to"] - p["from"]) * u
            if action in ("left", "up"):
                along = p["from"] + p["to"] - along  # same path, reversed
            cx, cy = (along, p["across"]) if action in ("left", "right") else (p["across"], along)
            h = p["half"]
        else:
            g = u if action == "grow" else 1.0 - u
            cx, cy, h = p["cx"], p["cy"], p["half"] * (0.35 + 0.65 * g)
        out[shape_mask(shape, xx - cx, yy - cy, h)] = value
    return out


def render_frames(objects_per_frame: list[list[tuple]], size: int) -> np.ndarray:
    """(T, size, size) palette-index frames, one list of objects per frame (see `draw_frame`)."""
    return np.stack([draw_frame(size, objs) for objs in objects_per_frame])


def palette(bg: int) -> np.ndarray:
    """(8, 3) uint8 RGB of the palette indices used by the frames."""
    return np.array([(bg,) * 3, *COLOURS.values(), (bg + 3,) * 3], np.uint8)


def colour_index(colour: str) -> int:
    return 1 + list(COLOURS).index(colour)


def background(rng) -> int:
    return int(rng.integers(15, 60))  # dark grey, as synth.py


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def check_int(fn: str, name: str, val, lo: int) -> None:
    if isinstance(val, bool) or not isinstance(val, (int, np.integer)) or val < lo:
        raise MeltrError(f"{fn}: {name}: expected an integer >= {lo}, got {val!r}")


def cycle(rng: np.random.Generator, items: list):
    """Endless seeded shuffled passes over items (every item once per pass)."""
    while True:
        for j in rng.permutation(len(items)):
            yield items[int(j)]

