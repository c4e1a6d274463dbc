"""Fuzz target: bytes from a Haas line through the STX/ETB framing, the Q-command answer parser and the
conversation's keyword matching.

Besides raising nothing but FramingError, an answer that parses carries only the values its command
defines, of the right types.
"""
from __future__ import annotations

from edged.driver import DriverStats
from edged.drivers.cnc import haas
from edged.drivers.cnc.conversation import HaasConversation
from edged.drivers.cnc.framing import FramingError, LineSplitter

EXPECTED = (FramingError,)
SEEDS = [
    b"\x02SERIAL NUMBER, 1234567\x17\r\n>", b"\x02MODE, (MEM)\x17\r\n>",
    b"\x02PROGRAM, O00110, IDLE, PARTS, 4523\x17\r\n>", b"\x02STATUS, BUSY\x17\r\n>",
    b"\x02MACRO, 5041, 12.500000\x17\r\n>", b"\x02P.O. TIME, 00027:50:59\x17\r\n>\x02M30 #1, 553\x17",
    b"\x02UNKNOWN\x17\r\n>", b"junk\x02\x02\x17\x17,,,\r\n>",
]
_KINDS = {"program": str, "status": str, "parts": int, "error": str}


class _NoStream:
    """A stream that is never read (lines are fed directly)."""

    def write(self, data: bytes) -> None:
        """Discard."""

    def close(self) -> None:
        """Nothing to close."""


def TARGET(data: bytes) -> None:  # noqa: N802
    """Feed the bytes to the framing and the answer parser; also to a conversation with nothing waiting."""
    conv = HaasConversation("fuzz", _NoStream(), DriverStats(), 1.0)  # type: ignore[arg-type]
    conv._logged_malformed = True  # no log lines from the fuzzer
    sp = LineSplitter(framed=True)
    for line in sp.feed(data):
        try:
            ans = haas.parse_answer(line)
        except FramingError:
            continue
        assert ans.number == 0 or ans.number in haas.Q, ans
        for key, value in ans.values.items():
            if key == "value":
                assert isinstance(value, (int, float, str)) and not isinstance(value, bool), ans
            else:
                assert isinstance(value, _KINDS[key]), ans
        try:
            conv.on_line(line)
        except FramingError:
            pass
    assert conv.late >= 0
