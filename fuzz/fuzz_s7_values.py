"""Fuzz target: the S7 value decoders (strings, dates, times, BCD timers/counters) on bytes a PLC might send."""
from __future__ import annotations

from edged.drivers.s7.address import parse_address
from edged.drivers.s7.codec import ValueDecodeError, decoder

EXPECTED = (ValueDecodeError,)
ADDRESSES = [parse_address(a) for a in ("DB1:0:STRING[10]", "DB1:0:WSTRING[4]", "DB1:0:DATE", "DB1:0:TOD",
                                        "DB1:0:DT", "DB1:0:DTL", "%T1", "%C1", "DB1:0:WCHAR", "DB1:0:REAL[2]")]
SEEDS = [bytes(16), bytes([10, 3]) + b"abc" + bytes(11), b"\x24\x05\x01\x12\x30\x00\x50\x01" + bytes(8)]


def TARGET(data: bytes) -> None:
    """Decode the input as each type (when long enough)."""
    for a in ADDRESSES:
        if len(data) >= a.size:
            decoder(a)(data, 0)
