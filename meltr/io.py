"""Atomic file output: write to a temporary name in the same folder, then rename.

A killed job therefore leaves either the old file or the new one, never half of either.
"""
from __future__ import annotations

import contextlib
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
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


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
    if not isinstance(obj, dict):
        raise MeltrError(f"{path}: expected a JSON object, got {type(obj).__name__}")
    return obj


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Read a JSONL file; a malformed line raises MeltrError naming file and line."""
    from .errors import MeltrError

    out = []
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as exc:
        raise MeltrError(f"{path}: cannot read ({exc.strerror})") from None
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise MeltrError(f"{path}:{i}: expected one JSON object per line ({exc.msg})") from None
        if not isinstance(rec, dict):
            raise MeltrError(f"{path}:{i}: expected a JSON object, got {type(rec).__name__}")
        out.append(rec)
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
