"""Read a fixed number of uniformly spaced RGB frames from a video file, a GIF or a folder of JPEG frames.

One entry point, `sample_frames`, so dataset code need not care whether MSRVTT mp4s, TGIF gifs or TVQA frame
folders are behind a path. Sampling matches CLIP4Clip's `--slice_framepos 2` (uniform over the whole clip).
"""
from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np

from ..errors import MeltrError

FRAME_EXTS = (".jpg", ".jpeg", ".png")


def sample_frames(path: str | os.PathLike, num_frames: int, size: int) -> np.ndarray:
    """Return (num_frames, size, size, 3) uint8 RGB frames sampled uniformly over the clip.

    Indices are `round(linspace(0, n-1, num_frames))`, so a clip shorter than num_frames repeats frames.
    Frames are resized to size x size (aspect ratio not kept). Bad input raises a one-line MeltrError.
    """
    if int(num_frames) < 1 or int(size) < 1:
        raise MeltrError(f"{path}: expected num_frames >= 1 and size >= 1, got {num_frames} and {size}")
    num_frames, size = int(num_frames), int(size)
    p = Path(path)
    if not p.exists():
        raise MeltrError(f"{path}: video file not found")
    if p.is_dir():
        frames = _read_frame_dir(p, num_frames, size)
    elif p.suffix.lower() == ".gif":
        frames = _read_gif(p, num_frames, size)  # decord cannot open GIFs written by Pillow
    else:
        frames = _read_decord(p, num_frames, size)
    return np.ascontiguousarray(frames, dtype=np.uint8)


def frame_indices(n: int, num_frames: int) -> np.ndarray:
    """Uniform frame indices over n frames (repeats when n < num_frames)."""
    return np.round(np.linspace(0, n - 1, num_frames)).astype(np.int64)


def _short(exc: BaseException | str) -> str:
    """First non-empty line of an error, cut short: decord errors carry C++ stack traces and
    '[12:00:00] /src/video_reader.cc:151: Check failed: ... ERROR ' prefixes that say nothing to a user."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    msg = lines[0] if lines else type(exc).__name__
    msg = re.sub(r"^\[[\d:]+\]\s+\S+:\d+:\s*", "", msg)  # timestamp and C++ source location
    if " ERROR " in msg:
        msg = msg.split(" ERROR ", 1)[1]
    return msg if len(msg) <= 120 else msg[:117] + "..."


_stderr_lock = threading.Lock()


@contextlib.contextmanager
def _captured_stderr():
    """Send the C-level stderr (fd 2) to a temp file while decord opens a file: decord logs
    'ERROR opening: <path>, <reason>' there before raising. Yields a callable returning the captured text."""
    with _stderr_lock, tempfile.TemporaryFile() as buf:
        captured: list[str] = []
        try:
            sys.stderr.flush()  # pending Python output belongs on the real stderr
            saved = os.dup(2)
        except (OSError, ValueError, AttributeError):  # no usable stderr: nothing to silence
            yield lambda: ""
            return
        os.dup2(buf.fileno(), 2)
        try:
            yield lambda: "".join(captured)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            buf.seek(0)
            captured.append(buf.read().decode("utf-8", "replace"))


_decord = None


def _get_decord():
    """Import decord once and silence FFmpeg's log output (e.g. 'moov atom not found') that it prints."""
    global _decord
    if _decord is None:
        import decord

        decord.logging.set_level(decord.logging.QUIET)
        _decord = decord
    return _decord


def _read_decord(p: Path, num_frames: int, size: int) -> np.ndarray:
    decord = _get_decord()
    # decord 0.6 fails in get_batch ('Check failed: from_size == to_size', dmlc/decord#336) unless the output
    # width is a multiple of 32, so decode at the next such width and finish the resize with Pillow.
    width = -(-size // 32) * 32
    error = None
    with _captured_stderr() as logged:
        try:
            vr = decord.VideoReader(str(p), ctx=decord.cpu(0), width=width, height=size, num_threads=1)
            n = len(vr)
        except Exception as exc:  # DECORDError / RuntimeError, possibly multi-line
            error = exc
    if error is not None:
        # 'Error reading <path>...' says less than decord's log line 'ERROR opening: <path>, <reason>'
        m = re.search(r"ERROR opening: .*?, (.+)", logged())
        raise MeltrError(f"{p}: cannot decode video ({_short(m.group(1) if m else error)})") from None
    if n == 0:
        raise MeltrError(f"{p}: video has no frames")
    try:
        frames = vr.get_batch(list(frame_indices(n, num_frames))).asnumpy()
    except Exception as exc:  # e.g. a truncated file whose index lists frames that are not there
        raise MeltrError(f"{p}: cannot decode video ({_short(exc)})") from None
    if frames.shape != (num_frames, size, width, 3):
        raise MeltrError(f"{p}: cannot decode video (got frames of shape {frames.shape})")
    if width != size:
        from PIL import Image

        frames = np.stack([_resize(Image.fromarray(f), size) for f in frames])
    return frames


def _resize(img, size: int) -> np.ndarray:
    from PIL import Image

    img = img.convert("RGB")
    if img.size != (size, size):
        img = img.resize((size, size), Image.BICUBIC)
    return np.asarray(img, dtype=np.uint8)


def _read_gif(p: Path, num_frames: int, size: int) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(p) as im:
            n = getattr(im, "n_frames", 1)
            if n == 0:
                raise MeltrError(f"{p}: video has no frames")
            out = []
            for i in frame_indices(n, num_frames):
                im.seek(int(i))  # Pillow composes GIF frames (disposal, palettes) on seek
                out.append(_resize(im, size))
    except MeltrError:
        raise
    except Exception as exc:
        raise MeltrError(f"{p}: cannot decode video ({_short(exc)})") from None
    return np.stack(out)


def _read_frame_dir(p: Path, num_frames: int, size: int) -> np.ndarray:
    from PIL import Image

    files = sorted(f for f in p.iterdir() if f.suffix.lower() in FRAME_EXTS and f.is_file())
    if not files:
        raise MeltrError(f"{p}: video has no frames (expected {'/'.join(FRAME_EXTS)} files in the folder)")
    out = []
    for i in frame_indices(len(files), num_frames):
        try:
            with Image.open(files[i]) as im:
                out.append(_resize(im, size))
        except Exception as exc:
            raise MeltrError(f"{files[i]}: cannot decode frame ({_short(exc)})") from None
    return np.stack(out)
