"""sample_frames: mp4 (decord), GIF and JPEG folders (Pillow), one-line errors; synthetic clips are learnable."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from meltr.data.synth import COLOURS, synth_msrvtt
from meltr.data.video import frame_indices, sample_frames
from meltr.errors import MeltrError


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("msrvtt_video")
    synth_msrvtt(root, n_train=12, n_test=6, seconds=2, fps=8, size=32, seed=1)
    return root


def _foreground(frame: np.ndarray, bg: np.ndarray) -> np.ndarray:
    return np.abs(frame.astype(int) - bg).sum(-1) > 90


def test_mp4_colour_and_motion(synth_root):
    attrs = json.loads((synth_root / "synth_attributes.json").read_text())
    data = json.loads((synth_root / "MSRVTT_data.json").read_text())
    for vid, a in attrs.items():
        frames = sample_frames(synth_root / "videos" / f"{vid}.mp4", 8, 32)
        assert frames.shape == (8, 32, 32, 3) and frames.dtype == np.uint8
        # the captions name the same colour as the attributes file
        assert all(a["colour"] in s["caption"].split() for s in data["sentences"] if s["video_id"] == vid)
        bg = np.median(frames[:, [0, 0, -1, -1], [0, -1, 0, -1]].reshape(-1, 3), axis=0)
        masks = [_foreground(f, bg) for f in frames]
        assert all(m.mean() > 0.05 for m in masks), vid  # a large shape in every sampled frame
        mean_rgb = np.mean([f[m].mean(0) for f, m in zip(frames, masks)], axis=0)
        nearest = min(COLOURS, key=lambda c: np.abs(np.array(COLOURS[c]) - mean_rgb).sum())
        assert nearest == a["colour"], (vid, mean_rgb)
        (y0, x0), (y1, x1) = (np.argwhere(masks[0]).mean(0), np.argwhere(masks[-1]).mean(0))
        dx, dy = x1 - x0, y1 - y0
        expected = {"left": -dx, "right": dx, "up": -dy, "down": dy}[a["motion"]]
        assert expected > 6, (vid, dx, dy)  # moved well along the named direction...
        assert abs(dy if a["motion"] in ("left", "right") else dx) < 2, vid  # ...and not across it


def test_mp4_deterministic_decode(synth_root):
    a = sample_frames(synth_root / "videos" / "video0.mp4", 8, 32)
    b = sample_frames(str(synth_root / "videos" / "video0.mp4"), 8, 32)
    assert np.array_equal(a, b)


def test_more_frames_than_video_repeats(synth_root):
    frames = sample_frames(synth_root / "videos" / "video0.mp4", 40, 16)  # clip has 16 frames
    assert frames.shape == (40, 16, 16, 3)
    assert list(frame_indices(3, 8)) == [0, 0, 1, 1, 1, 1, 2, 2]
    assert list(frame_indices(24, 1)) == [0] and list(frame_indices(24, 2)) == [0, 23]


def test_truncated_mp4(synth_root, tmp_path):
    bad = tmp_path / "truncated.mp4"
    bad.write_bytes((synth_root / "videos" / "video0.mp4").read_bytes()[:300])
    with pytest.raises(MeltrError) as err:
        sample_frames(bad, 8, 32)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"{bad}: cannot decode video (") and len(msg) < 300


def test_garbage_file(tmp_path):
    bad = tmp_path / "garbage.webm"
    bad.write_bytes(b"not a video at all\n" * 10)
    with pytest.raises(MeltrError, match="cannot decode video"):
        sample_frames(bad, 4, 16)


def test_missing_path(tmp_path):
    with pytest.raises(MeltrError) as err:
        sample_frames(tmp_path / "nope.mp4", 8, 32)
    assert str(err.value) == f"{tmp_path / 'nope.mp4'}: video file not found"


def test_gif(tmp_path):
    path = tmp_path / "clip.gif"
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    imgs = [Image.new("RGB", (40, 30), c) for c in colours]
    imgs[0].save(path, save_all=True, append_images=imgs[1:], duration=100, loop=0)
    frames = sample_frames(path, 8, 32)
    assert frames.shape == (8, 32, 32, 3) and frames.dtype == np.uint8
    # frames 0,0,1,1,1,1,2,2: red first, blue last
    assert frames[0, 16, 16].argmax() == 0 and frames[3, 16, 16].argmax() == 1 and frames[-1, 16, 16].argmax() == 2


def test_jpeg_folder(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(5):
        Image.new("RGB", (20, 20), (i * 50, 0, 0)).save(folder / f"{i + 1:05d}.jpg", quality=95)
    frames = sample_frames(folder, 3, 8)
    assert frames.shape == (3, 8, 8, 3)
    assert frames[0, 4, 4, 0] < 20 and frames[-1, 4, 4, 0] > 180  # first and last frame, in sorted order
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(MeltrError, match="video has no frames"):
        sample_frames(empty, 3, 8)
