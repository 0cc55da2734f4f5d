"""User-facing errors: one line, naming the file/record/key and what was expected.

The CLI turns a `MeltrError` into a single line on stderr and exit code 2, never a traceback.
"""
from __future__ import annotations


class MeltrError(ValueError):
    """Bad input or configuration. `str(err)` is the whole one-line message."""

    exit_code = 2

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))  # always one line


def bad_input(where: str, expected: str, got: object = None) -> MeltrError:
    """Build the standard message: '<where>: expected <expected>[, got <got>]'."""
    msg = f"{where}: expected {expected}"
    if got is not None:
        msg += f", got {got!r}"
    return MeltrError(msg)
