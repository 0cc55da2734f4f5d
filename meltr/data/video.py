"""Read a fixed number of uniformly spaced RGB frames from a video file, a GIF or a folder of JPEG frames.

One entry point, `sample_frames`, so dataset code need not care whether MSRVTT mp4s, TGIF gifs or TVQA frame
folders are behind a path. Sampling matches CLIP4Clip's `--slice_framepos 2` (uniform over the whole clip), or
uniform over a [start, end] window in seconds (YouCook2 segments of long videos, TVQA `ts` moments of 3 fps
frame folders).

Time of a frame: video files use the frame timestamps decord reads from the container (so a variable frame rate
is handled); GIFs use Pillow's per-frame durations (a missing or zero duration counts as 100 ms, as browsers
play it); a frame folder needs `fps`, and its k-th file in natural order (frame_2 before frame_10; 0-based) covers [k/fps, (k+1)/fps).
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
GIF_DEFAULT_DURATION_MS = 100  # what browsers show for a GIF frame without a (non-zero) delay
_EPS = 1e-4  # seconds; absorbs float32 timestamps (0.3 stored as 0.30000001) at frame boundaries


def sample_frames(path: str | os.PathLike, num_frames: int, size: int, *, start: float | None = None,
                  end: float | None = None, fps: float | None = None, notes: dict | None = None) -> np.ndarray:
    """Return (num_frames, size, size, 3) uint8 RGB frames sampled uniformly over the clip or a window of it.

    Without start/end: indices `round(linspace(0, n-1, num_frames))` over all n frames, so a clip shorter
    than num_frames repeats frames. With start and/or end (seconds; None = from 0 / to the end), the same
    uniform sampling runs over the frames [lo, hi] of the window: lo = the frame showing at `start`, hi = the
    last frame that starts before `end`. An `end` past the end of the clip is clamped to it (TVQA `ts` and
    YouCook2 segments may overrun a file by a little); a window that starts at or after the end of the clip,
    a negative or non-finite bound, or end <= start is a MeltrError naming the file and the window.
    `fps` gives the frame rate of a frame folder and is required there when a window is given; video files
    and GIFs carry their own timing and ignore it.
    Frames are resized to size x size (aspect ratio not kept). Bad input raises a one-line MeltrError.
    `notes` (a dict), when given, receives `clamped_s`: how far past the clip's end the window's `end` was.
    """
    if int(num_frames) < 1 or int(size) < 1:
        raise MeltrError(f"{path}: expected num_frames >= 1 and size >= 1, got {num_frames} and {size}")
    num_frames, size = int(num_frames), int(size)
    window = None if start is None and end is None else _check_window(path, start, end)
    p = Path(path)
    if not p.exists():
        raise MeltrError(f"{path}: video file not found")
    if p.is_dir():
        frames = _read_frame_dir(p, num_frames, size, window, fps, notes)
    elif p.suffix.lower() == ".gif":
        frames = _read_gif(p, num_frames, size, window, notes)  # decord cannot open GIFs written by Pillow
    else:
        frames = _read_decord(p, num_frames, size, window, notes)
    return np.ascontiguousarray(frames, dtype=np.uint8)


def frame_indices(n: int, num_frames: int) -> np.ndarray:
    """Uniform frame indices over n frames (repeats when n < num_frames)."""
    return np.round(np.linspace(0, n - 1, num_frames)).astype(np.int64)


def _fmt_window(start: float | None, end: float | None) -> str:
    return f"segment [{'start' if start is None else start}, {'end' if end is None else end}] s"


def _check_window(path, start, end) -> tuple[float | None, float | None]:
    """Validate what can be checked without opening the file; return (start, end) as floats or None."""
    where = f"{path}: {_fmt_window(start, end)}"
    try:
        s = None if start is None else float(start)
        e = None if end is None else float(end)
    except (TypeError, ValueError):
        raise MeltrError(f"{where}: expected numbers of seconds") from None
    if any(v is not None and not np.isfinite(v) for v in (s, e)):
        raise MeltrError(f"{where}: expected finite numbers of seconds")
    if (s or 0.0) < 0:
        raise MeltrError(f"{where}: expected start >= 0")
    if e is not None and e <= (s or 0.0):
        raise MeltrError(f"{where}: expected end > start")
    return s, e


def _window_indices(path, times: np.ndarray, duration: float, window: tuple[float | None, float | None],
                   num_frames: int, notes: dict | None = None) -> np.ndarray:
    """Uniform indices over the frames of `window` (seconds). times: start time of each frame, ascending;
    duration: end time of the last frame."""
    start, end = window
    s = 0.0 if start is None else start
    if s >= duration - _EPS:
        raise MeltrError(f"{path}: {_fmt_window(start, end)} lies outside the video "
                         f"(0 to {duration:.3f} s, {len(times)} frames)")
    e = duration if end is None else min(end, duration)
    if notes is not None and end is not None and end > duration + _EPS:
        notes["clamped_s"] = end - duration
    times = np.asarray(times, dtype=np.float64)
    lo = max(0, int(np.searchsorted(times, s + _EPS, side="right")) - 1)
    hi = max(lo, min(len(times) - 1, int(np.searchsorted(times, e - _EPS, side="left")) - 1))
    return lo + frame_indices(hi - lo + 1, num_frames)


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


def _read_decord(p: Path, num_frames: int, size: int, window=None, notes=None) -> np.ndarray:
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
    if window is None:
        indices = frame_indices(n, num_frames)
    else:
        try:
            ts = np.asarray(vr.get_frame_timestamp(np.arange(n)), dtype=np.float64)  # (n, 2): start, end
        except Exception as exc:
            raise MeltrError(f"{p}: cannot read frame timestamps ({_short(exc)})") from None
        indices = _window_indices(p, ts[:, 0], float(ts[-1, 1]), window, num_frames, notes)
    try:
        frames = vr.get_batch(list(indices)).asnumpy()
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


def _read_gif(p: Path, num_frames: int, size: int, window=None, notes=None) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(p) as im:
            n = getattr(im, "n_frames", 1)
            if n == 0:
                raise MeltrError(f"{p}: video has no frames")
            if window is None:
                indices = frame_indices(n, num_frames)
            else:
                durations = []
                for i in range(n):
                    im.seek(i)
                    ms = im.info.get("duration") or 0
                    durations.append((ms if ms > 0 else GIF_DEFAULT_DURATION_MS) / 1000.0)
                ends = np.cumsum(durations)
                indices = _window_indices(p, ends - np.asarray(durations), float(ends[-1]), window, num_frames,
                                          notes)
            out = []
            for i in indices:
                im.seek(int(i))  # Pillow composes GIF frames (disposal, palettes) on seek
                out.append(_resize(im, size))
    except MeltrError:
        raise
    except Exception as exc:
        raise MeltrError(f"{p}: cannot decode video ({_short(exc)})") from None
    return np.stack(out)


def natural_key(path: Path) -> list:
    """Sort key of a file name with its runs of digits compared as numbers: 00001.jpg < 2.jpg < 10.jpg."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def _read_frame_dir(p: Path, num_frames: int, size: int, window=None, fps: float | None = None,
                    notes=None) -> np.ndarray:
    from PIL import Image

    if window is not None:
        try:
            ok = fps is not None and np.isfinite(float(fps)) and float(fps) > 0
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise MeltrError(f"{p}: {_fmt_window(*window)}: a frame folder needs fps > 0 to map seconds to "
                             f"frames, got fps={fps!r}")
    # Natural order: frame_2 before frame_10 (text order would put frame_10 .. frame_19 before frame_2).
    files = sorted((f for f in p.iterdir() if f.suffix.lower() in FRAME_EXTS and f.is_file()), key=natural_key)
    if not files:
        raise MeltrError(f"{p}: video has no frames (expected {'/'.join(FRAME_EXTS)} files in the folder)")
    if window is None:
        indices = frame_indices(len(files), num_frames)
    else:
        n, rate = len(files), float(fps)
        indices = _window_indices(p, np.arange(n) / rate, n / rate, window, num_frames, notes)
    out = []
    for i in indices:
        try:
            with Image.open(files[i]) as im:
                out.append(_resize(im, size))
        except Exception as exc:
            raise MeltrError(f"{files[i]}: cannot decode frame ({_short(exc)})") from None
    return np.stack(out)
