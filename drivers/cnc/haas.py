"""Haas machine data collection ("Q commands"): requests, response parsing by keyword, and the tag fields.

A request is ``?Qnnn`` (``?Q600 nnnn`` for a macro variable) and CR LF. The answer is framed
``STX text ETB CR LF >``; its first word says which command it answers (``SERIAL NUMBER``,
``MODE``, ``M30 #1``...), so a late answer to an earlier request is recognised and never taken for
another. While a program runs, Q500 answers ``STATUS, BUSY``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from edged.tag import DataType

from .framing import FramingError

STX = b"\x02"
ETB = b"\x17"
PROMPT = ">"


@dataclass(frozen=True, slots=True)
class QCommand:
    """One Q command: its number, the keyword its answer starts with, and the value kind."""

    number: int
    keyword: str
    kind: str  # text, int, duration (seconds from HH:MM:SS), q500, macro


Q = {
    100: QCommand(100, "SERIAL NUMBER", "text"),
    101: QCommand(101, "SOFTWARE VERSION", "text"),
    102: QCommand(102, "MODEL", "text"),
    104: QCommand(104, "MODE", "mode"),
    200: QCommand(200, "TOOL CHANGES", "int"),
    201: QCommand(201, "USING TOOL", "int"),
    300: QCommand(300, "P.O. TIME", "duration"),
    301: QCommand(301, "C.S. TIME", "duration"),
    303: QCommand(303, "LAST CYCLE", "duration"),
    304: QCommand(304, "PREV CYCLE", "duration"),
    402: QCommand(402, "M30 #1", "int"),
    403: QCommand(403, "M30 #2", "int"),
    500: QCommand(500, "PROGRAM", "q500"),
    600: QCommand(600, "MACRO", "macro"),
}
KEYWORDS = {c.keyword: c for c in Q.values()}
# Q500 status words -> normalized machine state
Q500_STATES = {"IDLE": "idle", "FEED HOLD": "hold", "ALARM ON": "alarm", "BUSY": "running"}
MACRO_MAX = 99999

_TEXT = re.compile(r"[ -~]{0,80}\Z")
_INT = re.compile(r"\d{1,10}\Z")
_DURATION = re.compile(r"(\d{1,6}):([0-5]\d):([0-5]\d)\Z")
_NUMBER = re.compile(r"-?\d{1,12}(?:\.\d{1,9})?\Z")
_PROGRAM = re.compile(r"[A-Z0-9._-]{1,40}\Z")


def request(number: int, arg: int | None = None) -> bytes:
    """The bytes of one request, e.g. ``?Q500`` or ``?Q600 5041`` with CR LF."""
    text = f"?Q{number}" if arg is None else f"?Q{number} {arg}"
    return text.encode("ascii") + b"\r\n"


@dataclass(frozen=True, slots=True)
class Answer:
    """One parsed answer: the command it answers, and its values (by field name)."""

    number: int
    values: dict[str, Any]
    arg: int | None = None  # the macro variable of a Q600 answer


def parse_answer(text: str) -> Answer:
    """Parse the text of one framed answer; FramingError when it fits no Q command.

    ``UNKNOWN`` and ``INVALID ...`` answers (refused requests) parse to number 0.
    """
    parts = [p.strip() for p in text.split(",")]
    head = parts[0]
    if head == "UNKNOWN" or head.startswith("INVALID"):
        return Answer(0, {"error": text.strip()})
    if head == "STATUS":
        if len(parts) != 2 or parts[1] != "BUSY":
            raise FramingError(f"Q500: expected STATUS, BUSY, found {text[:60]!r}")
        return Answer(500, {"status": "BUSY"})
    cmd = KEYWORDS.get(head)
    if cmd is None:
        raise FramingError(f"not a Q command answer: {text[:60]!r}")
    if cmd.kind == "q500":
        # PROGRAM, O00110, IDLE, PARTS, 4523
        if len(parts) != 5 or parts[3] != "PARTS" or not _PROGRAM.match(parts[1]) \
                or parts[2] not in Q500_STATES or not _INT.match(parts[4]):
            raise FramingError(f"Q500: expected PROGRAM, Onnnnn, STATUS, PARTS, n, found {text[:60]!r}")
        return Answer(500, {"program": parts[1], "status": parts[2], "parts": int(parts[4])})
    if cmd.kind == "macro":
        if len(parts) != 3 or not _INT.match(parts[1]) or not _NUMBER.match(parts[2]):
            raise FramingError(f"Q600: expected MACRO, n, value, found {text[:60]!r}")
        return Answer(600, {"value": float(parts[2])}, arg=int(parts[1]))
    if len(parts) != 2:
        raise FramingError(f"Q{cmd.number}: expected {cmd.keyword}, value, found {text[:60]!r}")
    raw = parts[1]
    if cmd.kind == "int":
        if not _INT.match(raw):
            raise FramingError(f"Q{cmd.number}: expected an integer, found {raw[:30]!r}")
        return Answer(cmd.number, {"value": int(raw)})
    if cmd.kind == "duration":
        m = _DURATION.match(raw)
        if not m:
            raise FramingError(f"Q{cmd.number}: expected HH:MM:SS, found {raw[:30]!r}")
        return Answer(cmd.number, {"value": int(m.group(1)) * 3600 + int(m.group(2)) * 60 + int(m.group(3))})
    if cmd.kind == "mode":
        if not (raw.startswith("(") and raw.endswith(")")) or not _TEXT.match(raw):
            raise FramingError(f"Q104: expected (MODE), found {raw[:30]!r}")
        return Answer(104, {"value": raw[1:-1]})
    if not raw or not _TEXT.match(raw):
        raise FramingError(f"Q{cmd.number}: expected printable text, found {raw[:30]!r}")
    return Answer(cmd.number, {"value": raw})


# field name -> (type, Q command, value key in the answer)
FIELDS: dict[str, tuple[DataType, int, str]] = {
    "q100.serial": (DataType.STRING, 100, "value"),
    "q101.version": (DataType.STRING, 101, "value"),
    "q102.model": (DataType.STRING, 102, "value"),
    "q104.mode": (DataType.STRING, 104, "value"),
    "q200.tool_changes": (DataType.INT64, 200, "value"),
    "q201.tool": (DataType.INT32, 201, "value"),
    "q300.power_on_s": (DataType.INT64, 300, "value"),
    "q301.cycle_start_s": (DataType.INT64, 301, "value"),
    "q303.last_cycle_s": (DataType.INT64, 303, "value"),
    "q304.prev_cycle_s": (DataType.INT64, 304, "value"),
    "q402.m30_1": (DataType.INT64, 402, "value"),
    "q403.m30_2": (DataType.INT64, 403, "value"),
    "q500.program": (DataType.STRING, 500, "program"),
    "q500.status": (DataType.STRING, 500, "status"),
    "q500.parts": (DataType.INT64, 500, "parts"),
}
MACRO_PREFIX = "macro:"


def machine_state(answer: Answer) -> str:
    """Normalized machine state from a Q500 answer."""
    return Q500_STATES.get(answer.values.get("status", ""), "idle")
