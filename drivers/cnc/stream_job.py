"""G-code streaming to GRBL as a command: character counting against the 128-byte RX buffer, with progress.

Lines go out as long as the bytes not yet answered fit GRBL's receive buffer (the fastest method the
GRBL 1.1 documentation describes); every ``ok`` frees its line's bytes. The stream stops at the first
``error:N`` or ``ALARM:N``, a controller reset, or a lost line, and says why in ``stream.error``.
"""
from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Any

from . import grbl

log = logging.getLogger("edged.drivers.cnc")

MAX_LINE = 80  # GRBL's line buffer (LINE_BUFFER_SIZE); longer lines get error:11


def clean_lines(text: str) -> list[str]:
    """G-code lines without comments (``;...``, ``(...)``), blanks and ``%`` program markers."""
    out = []
    for raw in text.splitlines():
        line = raw.split(";", 1)[0]
        while "(" in line and ")" in line[line.index("("):]:
            a = line.index("(")
            line = line[:a] + line[line.index(")", a) + 1:]
        line = line.strip()
        if line and line != "%":
            out.append(line)
    return out


class GcodeStreamer:
    """One streaming job at a time; its progress is read through the ``stream.*`` fields."""

    def __init__(self, folder: str | None) -> None:
        self.folder = folder
        self.state = "idle"  # idle, streaming, done, failed, stopped
        self.name = ""
        self.lines = 0  # sent
        self.acked = 0
        self.total = 0
        self.error = ""
        self._task: asyncio.Task | None = None

    @property
    def active(self) -> bool:
        """True while a job runs."""
        return self._task is not None and not self._task.done()

    def value(self, f: str) -> Any:
        """The value of a ``stream.*`` field (``cmd.stream`` reads the file being or last streamed)."""
        return {"cmd.stream": self.name, "stream.state": self.state, "stream.lines": self.lines,
                "stream.acked": self.acked, "stream.total": self.total,
                "stream.progress": (self.acked / self.total) if self.total else 0.0,
                "stream.error": self.error}[f]

    def start(self, conv: Any, name: str) -> None:
        """Start streaming a file of the folder; ``""`` stops the running job. ValueError when refused."""
        if name == "":
            self.abort("stopped by a write")
            return
        if self.active:
            raise ValueError(f"a stream of {self.name!r} is running; write \"\" to stop it first")
        if self.folder is None or os.sep in name or name in (".", "..") or "\0" in name:
            raise ValueError(f"expected a file name in stream_dir, found {name!r}")
        path = Path(self.folder) / name
        try:
            text = path.read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"cannot read {path}: {exc}") from None
        lines = clean_lines(text)
        long = [ln for ln in lines if len(ln) + 1 > MAX_LINE]
        if long:
            raise ValueError(f"{name}: line longer than {MAX_LINE - 1} characters: {long[0][:40]!r}...")
        self.name, self.total, self.lines, self.acked, self.error = name, len(lines), 0, 0, ""
        self.state = "streaming"
        self._task = asyncio.create_task(self._run(conv, lines), name=f"gcode-stream:{name}")

    def abort(self, why: str) -> None:
        """Stop a running job (a reset, a lost line, a write of ``""``)."""
        if self.active:
            self._task.cancel()  # type: ignore[union-attr]
            self.state, self.error = ("stopped" if why.startswith("stopped") else "failed"), why
            log.warning("G-code stream of %s ended: %s", self.name, why)

    async def _run(self, conv: Any, lines: list[str]) -> None:
        pending: list[asyncio.Future] = []
        alarms = conv.model.alarms
        try:
            for line in lines:
                need = len(line) + 1
                while pending and conv.in_flight + need > grbl.RX_BUFFER:
                    await self._ack(pending.pop(0))
                if conv.model.alarms != alarms:
                    raise RuntimeError(f"ALARM:{conv.model.last_alarm} ({grbl.alarm_text(conv.model.last_alarm)})")
                pending.append(conv.queue_command(line))
                self.lines += 1
            while pending:
                await self._ack(pending.pop(0))
            self.state = "done"
            log.info("G-code stream of %s done: %d lines", self.name, self.total)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # error:N, a reset, a lost line
            self.state, self.error = "failed", str(exc)
            log.warning("G-code stream of %s failed at line %d: %s", self.name, self.acked + 1, exc)

    async def _ack(self, fut: asyncio.Future) -> None:
        await fut
        self.acked += 1
