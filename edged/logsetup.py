"""Logging set-up: syslog priority prefixes without timestamps under journald, the classic format elsewhere."""
from __future__ import annotations

import logging
import os
import re
import sys
from typing import TextIO

CLASSIC_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
JOURNAL_FORMAT = "<%(priority)d>%(name)s: %(message)s"
_DEVICE = re.compile(r"^device ([A-Za-z0-9_.-]+)")  # DeviceRunner's messages start "device NAME: ..."


def priority(levelno: int) -> int:
    """The syslog priority of a logging level (journald reads it from a "<N>" line prefix)."""
    if levelno >= logging.CRITICAL:
        return 2
    if levelno >= logging.ERROR:
        return 3
    if levelno >= logging.WARNING:
        return 4
    if levelno >= logging.INFO:
        return 6
    return 7


class JournalFormatter(logging.Formatter):
    """"<N>logger: message" lines; a traceback's lines each get the prefix so journald keeps the priority."""

    def __init__(self) -> None:
        super().__init__(JOURNAL_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        """One record as journal lines."""
        record.priority = priority(record.levelno)
        text = super().format(record)
        prefix = f"<{record.priority}>"
        return "\n".join(ln if ln.startswith(prefix) else prefix + ln for ln in text.split("\n"))


class DeviceField(logging.Filter):
    """Set ``record.device`` (for formats and handlers that use it) from an explicit extra or the message."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Add the field; never drops a record."""
        if not hasattr(record, "device"):
            m = _DEVICE.match(record.msg) if isinstance(record.msg, str) else None
            if m is None and isinstance(record.msg, str) and record.msg.startswith("device %s") and record.args:
                record.device = str(record.args[0]) if isinstance(record.args, tuple) else ""
            else:
                record.device = m.group(1) if m else ""
        return True


def under_journald(stream: TextIO = sys.stderr) -> bool:
    """True when ``stream`` is connected to the journal ($JOURNAL_STREAM names its device and inode)."""
    value = os.environ.get("JOURNAL_STREAM", "")
    dev, sep, ino = value.partition(":")
    if not sep:
        return False
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return f"{st.st_dev}:{st.st_ino}" == f"{dev}:{ino}"


def setup(level: str = "info", stream: TextIO = sys.stderr) -> None:
    """Configure the root logger once: the journal format when stderr goes to journald, else the classic one."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JournalFormatter() if under_journald(stream) else logging.Formatter(CLASSIC_FORMAT))
    handler.addFilter(DeviceField())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
