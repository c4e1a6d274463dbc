"""Line framing shared by the CNC dialects: split a byte stream into text lines, whatever arrives on the wire.

Handles partial lines (kept until their end arrives), CR, LF and CR LF endings, noise bytes (control
characters and bytes above 0x7E are dropped and counted), overlong lines (dropped and counted), and
for Haas the STX ... ETB frames: STX starts a fresh frame (anything half-received before it was noise
or a prompt), ETB ends it like a line end. XON/XOFF bytes are flow control, never data.
"""
from __future__ import annotations

STX = 0x02
ETB = 0x17
XON = 0x11
XOFF = 0x13
_ENDS = frozenset({0x0A, 0x0D})


class FramingError(ValueError):
    """A line that cannot be a protocol line (raised by the dialect parsers, counted as malformed)."""


class LineSplitter:
    """Feed bytes in, get complete lines out; never raises, counts what it had to drop."""

    __slots__ = ("max_len", "framed", "_buf", "_in_frame", "_overflow", "noise", "overflows", "frames")

    def __init__(self, max_len: int = 256, framed: bool = False) -> None:
        self.max_len = max_len
        self.framed = framed  # Haas: STX/ETB frames
        self._buf = bytearray()
        self._in_frame = False
        self._overflow = False
        self.noise = 0  # bytes dropped as noise
        self.overflows = 0  # lines dropped for being too long
        self.frames = 0  # STX..ETB frames completed

    def feed(self, data: bytes) -> list[str]:
        """The lines completed by these bytes (without their endings; empty lines are skipped)."""
        out: list[str] = []
        buf = self._buf
        for b in data:
            if b in _ENDS or (self.framed and b == ETB):
                if self.framed and b == ETB and self._in_frame:
                    self.frames += 1
                self._end(out)
                continue
            if self.framed and b == STX:
                if buf and buf != b">":  # the prompt of the previous answer is no noise
                    self.noise += len(buf)  # a partial line before a frame start: noise or a lost frame
                buf.clear()
                self._overflow = False
                self._in_frame = True
                continue
            if b < 0x20 or b > 0x7E:
                if b not in (XON, XOFF):
                    self.noise += 1
                continue
            if self._overflow:
                continue
            if len(buf) >= self.max_len:
                self._overflow = True
                self.overflows += 1
                buf.clear()
                continue
            buf.append(b)
        return out

    def _end(self, out: list[str]) -> None:
        if self._buf and not self._overflow:
            out.append(self._buf.decode("ascii"))
        self._buf.clear()
        self._overflow = False
        self._in_frame = False

    @property
    def pending(self) -> str:
        """The partial line received so far (e.g. a Haas ``>`` prompt, which has no line end)."""
        return self._buf.decode("ascii")

    def take_pending(self) -> str:
        """Return and forget the partial line."""
        text = self.pending
        self._buf.clear()
        return text

    def reset(self) -> None:
        """Forget any partial line (a new connection)."""
        self._buf.clear()
        self._overflow = False
        self._in_frame = False
