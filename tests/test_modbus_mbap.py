"""The Cython MBAP layer: request frames, stream splitting at any segment boundary, exact response checks."""
from __future__ import annotations

import struct

import pytest

from edged.cext import codec, mbap


def frame(tid: int, unit: int, pdu: bytes, delta: int = 0) -> bytes:
    return struct.pack(">HHHB", tid, 0, len(pdu) + 1 + delta, unit) + pdu


def test_read_request_bytes() -> None:
    assert mbap.read_request(0x1234, 9, 3, 100, 125) == bytes.fromhex("123400000006090300640 07d".replace(" ", ""))
    assert mbap.frame(7, 1, b"\x06\x00\x01\x00\x02") == bytes.fromhex("000700000006010600010002")
    with pytest.raises(ValueError):
        mbap.frame(1, 1, b"")


def test_splitter_cuts_frames_at_every_segment_boundary() -> None:
    stream = frame(1, 1, b"\x03\x02\x00\x05") + frame(2, 1, b"\x83\x02") + frame(3, 9, b"\x01\x01\x05")
    for cut in range(1, len(stream) + 1):
        s = mbap.Splitter()
        got = []
        for i in range(0, len(stream), cut):
            got += s.feed(stream[i:i + cut])
        assert [mbap.tid_of(f) for f in got] == [1, 2, 3] and s.pending == 0
        assert b"".join(got) == stream


@pytest.mark.parametrize("bad", [b"\x00\x01\x00\x01\x00\x03\x01", b"\x00\x01\x00\x00\x00\x01\x01",
                                 b"\x00\x01\x00\x00\x01\x00\x01"])
def test_splitter_refuses_impossible_headers(bad: bytes) -> None:
    s = mbap.Splitter()
    with pytest.raises(mbap.FramingError):
        s.feed(bad)
    assert s.pending == 0


def test_check_read_names_the_first_field_that_differs() -> None:
    ok = frame(1, 1, b"\x03\x04\x00\x01\x00\x02")
    assert mbap.check_read(ok, 1, 3, 4) == mbap.OK
    assert mbap.check_read(ok, 2, 3, 4) == mbap.BAD_UNIT
    assert mbap.check_read(ok, 1, 4, 4) == mbap.BAD_FUNCTION
    assert mbap.check_read(ok, 1, 3, 2) == mbap.BAD_COUNT           # more registers than asked
    assert mbap.check_read(frame(1, 1, b"\x83\x02"), 1, 3, 4) == mbap.EXCEPTION
    assert mbap.check_read(frame(1, 1, b"\x84\x02"), 1, 3, 4) == mbap.BAD_FUNCTION
    assert mbap.check_read(frame(1, 1, b"\x83\x02\x00"), 1, 3, 4) == mbap.BAD_LENGTH
    assert mbap.check_read(frame(1, 1, b"\x01\x04\xff"), 1, 1, 1) == mbap.BAD_LENGTH   # says 4, carries 1
    assert mbap.check_read(frame(1, 1, b"\x03\x06\x00\x01\x00\x02"), 1, 3, 4) == mbap.BAD_LENGTH
    assert mbap.check_read(frame(1, 1, b"\x03"), 1, 3, 4) == mbap.BAD_LENGTH


def test_check_write_compares_the_echo() -> None:
    pdu = b"\x06\x00\x01\x00\x02"
    assert mbap.check_write(frame(1, 1, pdu), 1, pdu) == mbap.OK
    assert mbap.check_write(frame(1, 1, b"\x06\x00\x01\x00\x03"), 1, pdu) == mbap.BAD_ECHO
    assert mbap.check_write(frame(1, 1, b"\x86\x02"), 1, pdu) == mbap.EXCEPTION
    assert mbap.check_write(frame(1, 2, pdu), 1, pdu) == mbap.BAD_UNIT


def test_decode_from_wire_bytes_equals_decode_from_registers() -> None:
    entries = [(0, 5, 0, 0, 0, 1.0, 0.0), (2, 5, 1, 0, 0, 1.0, 0.0), (4, 1, 3, 0, 0, 0.5, 2.0), (5, 0, 0, 15, 0, 1.0, 0.0)]
    regs = [0x4049, 0x0FDB, 0x0FDB, 0x4049, 0xFF7F, 0x8000]
    p = codec.Program(entries, 6)
    wire = frame(1, 1, bytes([3, 12]) + struct.pack(">6H", *regs))
    assert p.decode_from(wire, 9) == p.decode(regs)
    bits = codec.Program([(i, 10, 0, 0, 0, 1.0, 0.0) for i in range(11)], 11, True)
    assert bits.decode_from(b"\x00" * 9 + b"\x05\x04", 9) == [True, False, True] + [False] * 7 + [True]
    with pytest.raises(ValueError):
        p.decode_from(wire[:-1], 9)


def test_readings_mbap_accepts_exactly_what_check_read_accepts() -> None:
    import random
    from collections import namedtuple

    R = namedtuple("R", "tag value quality ts_ns")
    progs = [(codec.Program([(0, 2, 0, 0, 0, 1.0, 0.0), (1, 2, 0, 0, 0, 1.0, 0.0)], 2, False, ["a", "b"], R), 3, 4),
             (codec.Program([(i, 10, 0, 0, 0, 1.0, 0.0) for i in range(9)], 9, True, list("abcdefghi"), R), 1, 2)]
    rng = random.Random(8)
    good = [frame(1, 1, b"\x03\x04\x00\x01\x00\x02"), frame(1, 1, b"\x01\x02\xff\x01")]
    for _ in range(5000):
        f = bytearray(rng.choice(good))
        for _ in range(rng.randrange(0, 3)):
            f[rng.randrange(len(f))] = rng.choice([0, 1, 2, 3, 4, 5, 6, 8, 0x83, 255])
        if rng.random() < 0.2:
            f = f[:rng.randrange(len(f))] if rng.random() < 0.5 else f + b"\x00"
        f = bytes(f)
        if len(f) < 7:
            continue
        for prog, fc, nbytes in progs:
            got = prog.readings_mbap(f, 1, fc, 0, 0)
            assert (got is not None) == (mbap.check_read(f, 1, fc, nbytes) == mbap.OK), f.hex()
