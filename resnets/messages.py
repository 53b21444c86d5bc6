"""The one way an exception becomes part of a one-line message (a leaf: standard library only)."""

from __future__ import annotations

import re

_COLOURS = re.compile(r"\x1b\[[0-9;]*m")  # some exporters colour their messages for a terminal


def _lines(err: BaseException) -> list[str]:
    return _COLOURS.sub("", str(err)).strip().splitlines()


def first_line(err: BaseException) -> str:
    """The first line of the exception's message, or its type's name when it has none."""
    lines = _lines(err)
    return lines[0] if lines else type(err).__name__


def described(err: BaseException) -> str:
    """'TypeName: first line of the message' (for errors whose type says what went wrong)."""
    lines = _lines(err)
    return f"{type(err).__name__}: {lines[0] if lines else ''}"
