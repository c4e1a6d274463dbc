"""Fuzz target: bytes from a GRBL line through the shared framing, the GRBL line parser and the conversation.

Besides raising nothing but FramingError, every input must leave the conversation consistent: every
tag field yields None or a value of its type, positions are finite, counters never go negative.
"""
from __future__ import annotations

import math

from edged.driver import DriverStats
from edged.drivers.cnc import grbl
from edged.drivers.cnc.conversation import GrblConversation
from edged.drivers.cnc.framing import FramingError, LineSplitter
from edged.tag import DataType

EXPECTED = (FramingError,)
SEEDS = [
    b"<Idle|MPos:0.000,0.000,0.000|FS:0,0|WCO:0.000,0.000,0.000>\r\n",
    b"<Run|MPos:19.656,5.000,0.000|FS:128,0>\r\nok\r\nerror:22\r\n",
    b"<Hold:1|WPos:1.000,-2.500,3.250|Bf:14,120|Ln:42|Pn:XZP|Ov:110,50,90|A:SFM>\n",
    b"ALARM:1\r\n[MSG:Reset to continue]\r\n\r\nGrbl 1.1h ['$' for help]\r\n",
    b"[VER:1.1h.20190825:]\r\n[OPT:V,15,128]\r\nok\r\n$110=500.000\r\n",
    b"noise<Idle|MPos:1,2,3,4,5,6|FS:1,2>\r\n", b"\x00\xff<<>>|||::\r\r\n\n",
]


class _NoStream:
    """A stream that is never read (lines are fed directly)."""

    def write(self, data: bytes) -> None:
        """Discard."""

    def close(self) -> None:
        """Nothing to close."""


_TYPES = {DataType.STRING: str, DataType.BOOL: bool, DataType.FLOAT64: float}


def TARGET(data: bytes) -> None:  # noqa: N802
    """Feed the bytes, in two reads split by the first byte, to a fresh conversation."""
    conv = GrblConversation("fuzz", _NoStream(), DriverStats(), 1.0)  # type: ignore[arg-type]
    conv._logged_malformed = True  # no log lines from the fuzzer
    sp = LineSplitter()
    cut = data[0] % (len(data) + 1) if data else 0
    for part in (data[:cut], data[cut:]):
        for line in sp.feed(part):
            try:
                conv.on_line(line)
            except FramingError:
                pass
    m = conv.model
    for name, (dtype, get, _needs) in grbl.FIELDS.items():
        v = get(m)
        if v is None:
            continue
        want = _TYPES.get(dtype, int)
        assert isinstance(v, want) or (want is float and isinstance(v, int)), (name, v)
        if isinstance(v, float):
            assert math.isfinite(v), (name, v)
        if isinstance(v, int) and not isinstance(v, bool) and name.startswith("count."):
            assert v >= 0
    try:
        grbl.parse_line(data.decode("latin-1"))
    except FramingError:
        pass
