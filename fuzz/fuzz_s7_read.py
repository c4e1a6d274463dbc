"""Fuzz target: the S7 read-var response parser (edged.drivers.s7.wire.parse_read) with the items of a typical plan."""
from __future__ import annotations

import struct

from edged.drivers.s7.wire import HeaderError, ItemSpec, MalformedResponse, parse_read

ITEMS = [ItemSpec(0x84, 1, 0, 3), ItemSpec(0x83, 0, 20, 2), ItemSpec(0x1D, 0, 3, 1, 0x1D)]
EXPECTED = (MalformedResponse, HeaderError)


def _ack(params: bytes, data: bytes, err: int = 0) -> bytes:
    return struct.pack(">BBHHHHBB", 0x32, 3, 0, 7, len(params), len(data), err >> 8, err & 0xFF) + params + data


SEEDS = [
    _ack(bytes([4, 3]), bytes([0xFF, 4, 0, 24]) + b"abc\0" + bytes([0xFF, 4, 0, 16]) + b"xy"
         + bytes([0xFF, 9, 0, 2]) + b"\x10\x25"),
    _ack(bytes([4, 3]), bytes([0x0A, 0, 0, 0]) * 2 + bytes([0x05, 0, 0, 0])),
    _ack(b"", b"", err=0x8104),
]


def TARGET(data: bytes) -> None:
    """Parse one response; every result item must match what was requested."""
    for rc, payload in parse_read(data, 7, ITEMS):
        if rc == 0xFF:
            assert payload is not None
        else:
            assert payload is None
    for item, (rc, payload) in zip(ITEMS, parse_read(data, 7, ITEMS)):
        if payload is not None:
            assert len(payload) == item.byte_length
