"""S7 responses checked field by field, value codecs at their limits, and the read plan for a tag set and PDU."""
from __future__ import annotations

import struct

import pytest

from edged.drivers.s7.address import parse_address
from edged.drivers.s7.codec import ValueDecodeError, decoder, encode
from edged.drivers.s7.plan import build_plan
from edged.drivers.s7.wire import (HeaderError, ItemSpec, MalformedResponse, build_read, parse_read, parse_setup,
                                   parse_write)
from edged.tag import Tag

ITEMS = [ItemSpec(0x84, 1, 0, 3), ItemSpec(0x83, 0, 20, 2)]


def ack(seq: int, params: bytes, data: bytes, err: int = 0, rosctr: int = 3) -> bytes:
    return struct.pack(">BBHHHHBB", 0x32, rosctr, 0, seq, len(params), len(data), err >> 8, err & 0xFF) + params + data


def good_read(seq: int = 7) -> bytes:
    data = bytes([0xFF, 0x04, 0, 24]) + b"abc" + b"\0" + bytes([0xFF, 0x04, 0, 16]) + b"xy"
    return ack(seq, bytes([0x04, 2]), data)


def test_read_response_parsed_per_item() -> None:
    assert parse_read(good_read(), 7, ITEMS) == [(0xFF, b"abc"), (0xFF, b"xy")]
    mixed = ack(7, bytes([0x04, 2]), bytes([0x0A, 0x00, 0, 0]) + bytes([0xFF, 0x09, 0, 2]) + b"xy")
    assert parse_read(mixed, 7, ITEMS) == [(0x0A, None), (0xFF, b"xy")]


@pytest.mark.parametrize("mutate, words", [
    (lambda p: p[:11], "shorter than an S7 header"),
    (lambda p: b"\x33" + p[1:], "protocol id"),
    (lambda p: p[:1] + b"\x07" + p[2:], "PDU type"),
    (lambda p: p[:4] + b"\x00\x08" + p[6:], "late answer"),
    (lambda p: p + b"\0", "header says"),
    (lambda p: p[:12] + b"\x05" + p[13:], "function"),
    (lambda p: p[:13] + b"\x03" + p[14:], "items in the answer"),
    (lambda p: p[:15] + b"\x02" + p[16:], "transport size"),
    (lambda p: p[:17] + b"\x10" + p[18:], "2 bytes in the answer, 3 requested"),
    (lambda p: p[:17] + b"\x19" + p[18:], "not whole bytes"),
])
def test_every_field_of_a_read_response_is_checked(mutate, words: str) -> None:
    with pytest.raises(MalformedResponse, match=words):
        parse_read(mutate(good_read()), 7, ITEMS)


def test_missing_fill_byte_and_trailing_bytes_are_malformed() -> None:
    no_fill = ack(7, bytes([0x04, 2]), bytes([0xFF, 0x04, 0, 24]) + b"abc" + bytes([0xFF, 0x04, 0, 16]) + b"xy")
    with pytest.raises(MalformedResponse):
        parse_read(no_fill, 7, ITEMS)
    trailing = ack(7, bytes([0x04, 1]), bytes([0xFF, 0x04, 0, 24]) + b"abc" + b"\0")
    with pytest.raises(MalformedResponse, match="trailing"):
        parse_read(trailing, 7, ITEMS[:1])


def test_header_errors_and_write_and_setup_responses() -> None:
    with pytest.raises(HeaderError) as ei:
        parse_read(ack(7, b"", b"", err=0x8104, rosctr=2), 7, ITEMS)
    assert ei.value.code == 0x8104
    assert parse_write(ack(3, bytes([0x05, 1]), b"\xff"), 3) == 0xFF
    assert parse_write(ack(3, bytes([0x05, 1]), b"\x05"), 3) == 0x05
    with pytest.raises(MalformedResponse):
        parse_write(ack(3, bytes([0x04, 1]), b"\xff"), 3)
    assert parse_setup(ack(1, struct.pack(">BBHHH", 0xF0, 0, 1, 1, 240), b""), 1, 480) == 240
    with pytest.raises(MalformedResponse, match="implausible"):
        parse_setup(ack(1, struct.pack(">BBHHH", 0xF0, 0, 1, 1, 10), b""), 1, 480)


def test_read_request_encoding() -> None:
    pdu = build_read(9, [ItemSpec(0x84, 1, 4, 10)])
    # header: S7, job, seq 9, 14 bytes of parameters; read, 1 item; S7-ANY byte x10, DB1, area 0x84, bit address 32
    assert pdu.hex() == "320100000009000e00000401120a1002000a000184000020"


def _tag(addr: str, name: str = "t", scan: str = "default") -> Tag:
    a = parse_address(addr)
    return Tag("plc", name, addr, a.dtype, scan, a)


@pytest.mark.parametrize("addr, value", [
    ("DB1,X0.3", True), ("DB1:0:BYTE", 255), ("DB1:0:SINT", -128), ("DB1:0:SINT", 127), ("DB1:0:WORD", 65535),
    ("DB1:0:INT", -32768), ("DB1:0:INT", 32767), ("DB1:0:UINT", 65535), ("DB1:0:DWORD", 2**32 - 1),
    ("DB1:0:DINT", -2**31), ("DB1:0:DINT", 2**31 - 1), ("DB1:0:UDINT", 2**32 - 1), ("DB1:0:LINT", -2**63),
    ("DB1:0:LINT", 2**63 - 1), ("DB1:0:ULINT", 2**64 - 1), ("DB1:0:LWORD", 2**64 - 1),
    ("DB1:0:REAL", 3.4028234663852886e38), ("DB1:0:REAL", -1.1754943508222875e-38), ("DB1:0:LREAL", 1.7976931348623157e308),
    ("DB1:0:CHAR", "ÿ"), ("DB1:0:WCHAR", "€"), ("DB1:0:STRING[5]", "abcde"), ("DB1:0:STRING[5]", ""),
    ("DB1:0:WSTRING[3]", "日本語"), ("DB1:0:DATE", "1990-01-01"), ("DB1:0:DATE", "2169-06-06"),
    ("DB1:0:TIME", -2**31), ("DB1:0:TIME", 2**31 - 1), ("DB1:0:LTIME", 2**63 - 1), ("DB1:0:TOD", "23:59:59.999"),
    ("DB1:0:TOD", "00:00:00.000"), ("DB1:0:DT", "1990-01-01T00:00:00.000"), ("DB1:0:DT", "2089-12-31T23:59:59.999"),
    ("DB1:0:DTL", "1970-01-01T00:00:00.000000"), ("DB1:0:DTL", "2262-04-11T23:47:16.854775"),
    ("DB1:0:INT[3]", [-32768, 0, 32767]), ("%T1", 9990000), ("%T1", 10), ("%C1", 999), ("%C1", 0),
])
def test_codec_round_trips_at_limits(addr: str, value) -> None:
    a = parse_address(addr)
    data = encode(a, value)
    buf = bytearray(a.size + 4)
    if a.is_bit:  # a bit write carries one byte 0/1; the PLC sets that bit only
        buf[0] = 1 << a.bit if data == b"\x01" else 0
    else:
        buf[:len(data)] = data
    got = decoder(a)(bytes(buf), 0)
    assert got == (pytest.approx(value) if isinstance(value, float) else value)


@pytest.mark.parametrize("addr, value", [
    ("DB1:0:INT", 32768), ("DB1:0:BYTE", -1), ("DB1:0:STRING[5]", "abcdef"), ("DB1:0:STRING[5]", "€"),
    ("DB1:0:DATE", "1989-12-31"), ("DB1:0:TOD", "24:00:00"), ("%T1", 12345), ("%C1", 1000), ("DB1,X0.0", 1),
    ("DB1:0:INT[3]", [1, 2]), ("DB1:0:DT", "2090-01-01T00:00:00"),
])
def test_encode_refuses_what_does_not_fit(addr: str, value) -> None:
    with pytest.raises(ValueError):
        encode(parse_address(addr), value)


@pytest.mark.parametrize("addr, raw", [
    ("DB1:0:STRING[5]", bytes([5, 6]) + b"abcdef"),   # actual length beyond max length
    ("DB1:0:STRING[5]", bytes([9, 1]) + b"a" + bytes(4)),  # max-length byte disagrees with the tag
    ("DB1:0:TOD", struct.pack(">I", 86_400_000)),
    ("DB1:0:DT", bytes([0x24, 0x13, 0x01, 0, 0, 0, 0, 0])),  # month 13
    ("DB1:0:DT", bytes([0x2A, 0x01, 0x01, 0, 0, 0, 0, 0])),  # not BCD
    ("DB1:0:DTL", struct.pack(">HBBBBBBI", 2024, 2, 30, 1, 0, 0, 0, 0)),
    ("%C1", bytes([0x00, 0xAB])),
])
def test_decode_refuses_values_the_plc_cannot_have_sent(addr: str, raw: bytes) -> None:
    a = parse_address(addr)
    with pytest.raises(ValueDecodeError):
        decoder(a)(raw.ljust(a.size, b"\0"), 0)


def test_plan_packs_scattered_tags_into_pdu_sized_reads() -> None:
    tags = [_tag("%DB1.DBD0:REAL", "speed"), _tag("%DB1.DBX4.0", "run"), _tag("%DB1.DBX4.1", "jam"),
            _tag("%DB1.DBD6:DINT", "count"), _tag("%MW20", "mw"), _tag("%DB2.DBD100:REAL", "far"),
            _tag("DB1:200:STRING[20]", "recipe"), _tag("%T3", "t3"), _tag("%T4", "t4")]
    plan = build_plan(tags, 480)
    assert [[b.describe() for b in p.blocks] for p in plan] == [
        ["T3", "T4", "MB20..MB21", "DB1.DBB0..DBB9", "DB1.DBB200..DBB221", "DB2.DBB100..DBB103"]]
    assert [t.name for t in plan[0].blocks[3].tags] == ["speed", "run", "jam", "count"]
    # the same tags at PDU 240 with at most 2 items per request: 3 requests
    small = build_plan(tags, 240, max_items=2)
    assert [len(p.blocks) for p in small] == [2, 2, 2]
    # 40 scattered REALs 10 bytes apart: no merging with max_gap 5; 19 items fit PDU 240 (reply budget)
    many = [_tag(f"DB1.DBD{10 * i}:REAL", f"r{i}") for i in range(40)]
    assert [len(p.blocks) for p in build_plan(many, 240)] == [18, 18, 4]
    assert [len(p.blocks) for p in build_plan(many, 480)] == [20, 20]
    # merged when the gap allows it: one block of 394 bytes
    assert [len(p.blocks) for p in build_plan(many, 480, max_gap=6)] == [1]
    for p in build_plan(many, 240) + build_plan(many, 480):
        assert p.request_bytes() <= 480 and p.response_bytes() <= 480
