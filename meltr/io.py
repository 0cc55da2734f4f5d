"""Atomic file output: write to a temporary name in the same folder, then rename.

A killed job therefore leaves either the old file or the new one, never half of either.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory beside `path`; swap it in for `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        # The swap holds an exclusive lock on the parent folder (flock on its descriptor: no lock file left
        # behind): two writers of one store take turns, each swapping a whole folder in (the last one wins),
        # and never rename into each other's half-swap. The lock goes with the descriptor, even on a kill.
        lock = os.open(path.parent, os.O_RDONLY)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if path.exists():
                old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
                os.replace(path, old / path.name)
                os.replace(tmp, path)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, path)
        finally:
            os.close(lock)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def ensure_writable(folder: str | os.PathLike) -> Path:
    """Create `folder` and prove a file can be written in it, before long work whose output goes there: a
    read-only, missing or full place is a one-line MeltrError now, not after the last training step."""
    from .errors import MeltrError

    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-check.", dir=folder)
        try:
            os.write(fd, b"0" * 4096)
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as exc:
        raise MeltrError(f"{folder}: expected a folder this job can write its outputs to ({exc.strerror})") from None
    return folder


def write_jsonl(path: str | os.PathLike, records: Iterable[dict]) -> None:
    write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in records))


def read_json_object(path: str | os.PathLike, missing: str = "") -> dict:
    """Read a JSON file that must hold an object; every failure is a one-line MeltrError naming the file
    (and the line and column of a syntax error). `missing` explains what the file is, when absent."""
    from .errors import MeltrError

    try:
        with open(path, encoding="utf-8") as f:
            obj = json.load(f)
    except FileNotFoundError:
        raise MeltrError(f"{path}: file not found" + (f" (expected {missing})" if missing else "")) from None
    except OSError as exc:
        raise MeltrError(f"{path}: cannot read ({exc.strerror})") from None
    except json.JSONDecodeError as exc:
        raise MeltrError(f"{path}:{exc.lineno}:{exc.colno}: invalid JSON ({exc.msg})") from None
    except UnicodeDecodeError as exc:
        raise MeltrError(f"{path}: expected UTF-8 JSON ({exc.reason} at byte {exc.start})") from None
    except ValueError as exc:  # an integer past Python's 4300-digit limit
        raise MeltrError(f"{path}: invalid JSON ({str(exc).split(';')[0]})") from None
    if not isinstance(obj, dict):
        raise MeltrError(f"{path}: expected a JSON object, got {type(obj).__name__}")
    return obj


def read_jsonl(path: str | os.PathLike, with_lines: bool = False) -> list:
    """Read a JSONL file; a malformed line raises MeltrError naming file and line. `with_lines`: (line number,
    record) pairs, for checks that name the line of a bad record."""
    from .errors import MeltrError

    out = []
    lines = read_utf8(path, expected="UTF-8 JSON lines").splitlines()
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise MeltrError(f"{path}:{i}: expected one JSON object per line ({exc.msg})") from None
        except ValueError as exc:  # an integer past Python's 4300-digit limit
            raise MeltrError(f"{path}:{i}: expected one JSON object per line ({str(exc).split(';')[0]})") from None
        if not isinstance(rec, dict):
            raise MeltrError(f"{path}:{i}: expected a JSON object, got {type(rec).__name__}")
        out.append((i, rec) if with_lines else rec)
    return out


def read_utf8(path: str | os.PathLike, *, expected: str = "UTF-8 text", missing: str = "") -> str:
    """A text file's contents (a UTF-8 BOM dropped), or a one-line MeltrError: not found (with `missing`, a hint
    of what the file is), unreadable, or not UTF-8 (naming the line of the first bad byte)."""
    from .errors import MeltrError

    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise MeltrError(f"{path}: file not found" + (f" ({missing})" if missing else "")) from None
    except OSError as exc:
        raise MeltrError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise MeltrError(f"{path}: line {line}: expected {expected} ({exc.reason} at byte {exc.start})") from None
