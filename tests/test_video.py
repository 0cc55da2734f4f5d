"""sample_frames: mp4 (decord), GIF and JPEG folders (Pillow), one-line errors; synthetic clips are learnable."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from meltr.data.synth.common import COLOURS
from meltr.data.synth.msrvtt import synth_msrvtt
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


# ------------------------------------------------------------------------- windows: sample_frames(start=, end=, fps=)

STEP = 6  # brightness step between consecutive frames: frame i is uniform grey i*STEP


def _write_video(path, n: int, fps: int, fmt: str = "mp4", codec: str = "libx264", size: int = 32) -> None:
    import av

    with av.open(str(path), mode="w", format=fmt) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        if codec == "libx264":
            stream.codec_context.options = {"qp": "0", "preset": "veryfast", "threads": "1"}
        for i in range(n):
            frame = np.full((size, size, 3), i * STEP, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _grey_index(frames: np.ndarray, step: int = STEP) -> list[int]:
    """Which source frame each sampled frame is, from its brightness."""
    return [int(round(f[8:24, 8:24].mean() / step)) for f in frames]


@pytest.fixture(scope="module", params=[("mp4", "libx264"), ("webm", "libvpx")])
def graded_video(request, tmp_path_factory):
    """40 frames at 10 fps (4 s): frame i shows [i/10, (i+1)/10) s."""
    fmt, codec = request.param
    path = tmp_path_factory.mktemp("graded") / f"long.{fmt}"
    _write_video(path, 40, 10, fmt, codec)
    return path


def test_video_window_picks_the_right_frames(graded_video):
    assert _grey_index(sample_frames(graded_video, 40, 32)) == list(range(40))  # the encoding round trip holds
    # [1, 2) s = frames 10..19; uniform over them
    assert _grey_index(sample_frames(graded_video, 5, 32, start=1.0, end=2.0)) == [10, 12, 14, 17, 19]
    # float32 timestamps: 0.3 must still start at frame 3, 0.6 end before frame 6
    assert _grey_index(sample_frames(graded_video, 3, 32, start=0.3, end=0.6)) == [3, 4, 5]
    # mid-frame bounds: start 0.35 is inside frame 3, end 0.61 reaches frame 6
    assert _grey_index(sample_frames(graded_video, 4, 32, start=0.35, end=0.61)) == [3, 4, 5, 6]
    # a window inside one frame repeats it
    assert _grey_index(sample_frames(graded_video, 2, 32, start=2.01, end=2.05)) == [20, 20]
    # open ends, and an end past the video clamped to its last frame
    assert _grey_index(sample_frames(graded_video, 2, 32, end=1.0)) == [0, 9]
    assert _grey_index(sample_frames(graded_video, 2, 32, start=3.5)) == [35, 39]
    assert _grey_index(sample_frames(graded_video, 2, 32, start=3.5, end=99)) == [35, 39]
    # fps is for frame folders; a video file keeps its own timing
    assert _grey_index(sample_frames(graded_video, 2, 32, start=1.0, end=2.0, fps=3)) == [10, 19]


def test_no_window_is_unchanged(graded_video):
    whole = sample_frames(graded_video, 6, 32)
    assert np.array_equal(whole, sample_frames(graded_video, 6, 32, start=None, end=None, fps=None))
    assert _grey_index(whole) == list(frame_indices(40, 6))


def test_bad_windows_name_file_and_segment(graded_video):
    cases = [
        (dict(start=5.0, end=6.0), "segment [5.0, 6.0] s lies outside the video (0 to 4.000 s"),
        (dict(start=4.0), "segment [4.0, end] s lies outside the video"),
        (dict(start=2.0, end=2.0), "segment [2.0, 2.0] s: expected end > start"),
        (dict(start=3.0, end=1.0), "segment [3.0, 1.0] s: expected end > start"),
        (dict(end=0.0), "segment [start, 0.0] s: expected end > start"),
        (dict(start=-1.0, end=1.0), "segment [-1.0, 1.0] s: expected start >= 0"),
        (dict(start=float("nan"), end=1.0), "expected finite numbers of seconds"),
        (dict(start="abc", end=1.0), "segment [abc, 1.0] s: expected numbers of seconds"),
    ]
    for kwargs, expected in cases:
        with pytest.raises(MeltrError) as err:
            sample_frames(graded_video, 4, 32, **kwargs)
        msg = str(err.value)
        assert "\n" not in msg and msg.startswith(f"{graded_video}: ") and expected in msg, (kwargs, msg)


def test_jpeg_folder_window_at_3fps(tmp_path):
    """TVQA layout: 00001.jpg... at 3 fps; sorted file k (0-based) covers [k/3, (k+1)/3) s."""
    folder = tmp_path / "friends_s01e01_seg01_clip_00"
    folder.mkdir()
    for k in range(12):  # 4 s
        Image.new("RGB", (16, 16), (k * 20,) * 3).save(folder / f"{k + 1:05d}.jpg", quality=100)

    def which(frames):
        return _grey_index(frames, step=20)

    assert which(sample_frames(folder, 3, 16, start=1.0, end=2.0, fps=3)) == [3, 4, 5]
    assert which(sample_frames(folder, 2, 16, start=0.5, end=1.1, fps=3.0)) == [1, 3]
    assert which(sample_frames(folder, 2, 16, start=3.0, end=10.0, fps=3)) == [9, 11]  # clamped to 12 frames
    assert which(sample_frames(folder, 3, 16, fps=3)) == which(sample_frames(folder, 3, 16)) == [0, 6, 11]
    with pytest.raises(MeltrError) as err:
        sample_frames(folder, 3, 16, start=1.0, end=2.0)
    assert str(err.value) == (f"{folder}: segment [1.0, 2.0] s: a frame folder needs fps > 0 to map seconds to "
                              f"frames, got fps=None")
    with pytest.raises(MeltrError, match="needs fps > 0"):
        sample_frames(folder, 3, 16, start=1.0, end=2.0, fps=0)
    with pytest.raises(MeltrError) as err:
        sample_frames(folder, 3, 16, start=4.0, end=6.0, fps=3)
    assert str(err.value).startswith(f"{folder}: segment [4.0, 6.0] s lies outside the video (0 to 4.000 s, 12 frames)")


def test_gif_window_uses_frame_durations(tmp_path):
    path = tmp_path / "durations.gif"
    durations = [100, 300, 50, 200, 350]  # frames start at 0, .1, .4, .45, .65; end at 1.0 s
    imgs = [Image.new("RGB", (16, 16), (k * 50,) * 3) for k in range(5)]
    imgs[0].save(path, save_all=True, append_images=imgs[1:], duration=durations, loop=0)

    def which(frames):
        return _grey_index(frames, step=50)

    assert which(sample_frames(path, 3, 16, start=0.42, end=0.7)) == [2, 3, 4]
    assert which(sample_frames(path, 2, 16, start=0.1, end=0.4)) == [1, 1]  # one 300 ms frame
    assert which(sample_frames(path, 2, 16, start=0.05, end=0.45)) == [0, 2]
    assert which(sample_frames(path, 5, 16)) == [0, 1, 2, 3, 4]
    with pytest.raises(MeltrError, match=r"segment \[1.0, 2.0\] s lies outside the video \(0 to 1.000 s, 5 frames\)"):
        sample_frames(path, 2, 16, start=1.0, end=2.0)

    plain = tmp_path / "no_durations.gif"  # no delay stored: 100 ms a frame, as browsers play it
    imgs[0].save(plain, save_all=True, append_images=imgs[1:4], loop=0)
    assert which(sample_frames(plain, 2, 16, start=0.25, end=0.4)) == [2, 3]


def test_a_frame_folder_is_read_in_natural_numeric_order(tmp_path):
    """frame_1 .. frame_12 without zero padding: text order would read frame_10, frame_11, frame_12 second."""
    from PIL import Image

    folder = tmp_path / "frames"
    folder.mkdir()
    for k in range(1, 13):
        Image.new("RGB", (16, 16), (k * 20,) * 3).save(folder / f"frame_{k}.jpg", quality=100)
    frames = sample_frames(folder, 12, 16)
    brightness = [int(f.mean()) for f in frames]
    assert brightness == sorted(brightness) and brightness[0] < 30 and brightness[-1] > 230
