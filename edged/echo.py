"""Bounded, escaped text of values from outside (the wire, upstream commands) for logs, errors and responses."""
from __future__ import annotations

import re
from typing import Any

# How much of a value a message, a command response or an audit line repeats (a command may carry megabytes).
ECHO_CHARS = 80
# Text that may stand bare as a ``key=value`` field of a log line: no spaces, quotes, ``=`` or control characters.
_TOKEN = re.compile(r"[\w.:/@+\-]{1,128}", re.ASCII)


def echo(value: Any, limit: int = ECHO_CHARS) -> str:
    """A bounded, escaped repr of a value from outside, safe to put in a log line or a response.

    ``repr`` escapes newlines, quotes and unprintable characters, so a value can never start a
    forged log line; anything longer than ``limit`` characters is cut and ends with ``...``.
    """
    cut = False
    if isinstance(value, (str, bytes, bytearray)) and len(value) > 4 * limit:
        value, cut = value[:4 * limit], True  # no repr of a megabyte only to cut it
    try:
        shown = repr(value)
    except Exception:  # a repr that fails (or recurses too deep) says nothing useful anyway
        shown = f"<{type(value).__name__}>"
    if cut or len(shown) > limit:
        return shown[:max(0, limit - 3)] + "..."
    return shown


def token(text: Any, limit: int = ECHO_CHARS) -> str:
    """A ``key=value`` field of a log line: bare when it is a plain word (``mqtt:up``, ``r1``), else ``echo``."""
    if isinstance(text, str) and len(text) <= limit and _TOKEN.fullmatch(text):
        return text
    return echo(text, limit)


def message(text: str, limit: int = 400) -> str:
    """Free text that may quote outside data: as is when printable and short, else escaped and cut."""
    if len(text) <= limit and text.isprintable():
        return text
    return echo(text, limit)
