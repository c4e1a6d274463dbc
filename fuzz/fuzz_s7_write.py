"""Fuzz target: the S7 write-var and setup-communication response parsers (edged.drivers.s7.wire)."""
from __future__ import annotations

import struct

from edged.drivers.s7.wire import HeaderError, MalformedResponse, parse_setup, parse_write

EXPECTED = (MalformedResponse, HeaderError)
SEEDS = [
    struct.pack(">BBHHHHBB", 0x32, 3, 0, 5, 2, 1, 0, 0) + bytes([5, 1, 0xFF]),
    struct.pack(">BBHHHHBB", 0x32, 3, 0, 5, 8, 0, 0, 0) + struct.pack(">BBHHH", 0xF0, 0, 1, 1, 480),
    struct.pack(">BBHHHHBB", 0x32, 2, 0, 5, 0, 0, 0x81, 0x04),
]


def TARGET(data: bytes) -> None:
    """Parse as a write acknowledgement and as a setup response; a PDU size must be plausible."""
    try:
        rc = parse_write(data, 5)
        assert 0 <= rc <= 255
    except EXPECTED:
        pass
    size = parse_setup(data, 5, 480)
    assert 64 <= size <= 480
