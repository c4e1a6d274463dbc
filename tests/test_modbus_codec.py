"""The Cython register codec against Python's struct: every type and word order, at the type limits."""
from __future__ import annotations

import math
import random
import struct

import pytest

from edged.cext import codec
from edged.drivers.modbus.address import (T_BIT, T_COIL, T_FLOAT32, T_FLOAT64, T_INT16, T_INT32, T_INT64, T_STRING,
                                          T_UINT16, T_UINT32, T_UINT64, Order)

FORMATS = {T_INT16: "h", T_UINT16: "H", T_INT32: "i", T_UINT32: "I", T_FLOAT32: "f",
           T_INT64: "q", T_UINT64: "Q", T_FLOAT64: "d"}
F32_MAX = struct.unpack(">f", bytes.fromhex("7f7fffff"))[0]
F32_MIN_NORMAL = struct.unpack(">f", bytes.fromhex("00800000"))[0]
F32_MIN_SUB = struct.unpack(">f", bytes.fromhex("00000001"))[0]
LIMITS = {
    T_INT16: [-32768, -1, 0, 1, 0x1234, 32767],
    T_UINT16: [0, 1, 0x1234, 0x8000, 65535],
    T_INT32: [-(2**31), -1, 0, 1, 0x12345678, 2**31 - 1],
    T_UINT32: [0, 1, 0x12345678, 2**31, 2**32 - 1],
    T_INT64: [-(2**63), -1, 0, 1, 0x0123456789ABCDEF, 2**63 - 1],
    T_UINT64: [0, 1, 0x0123456789ABCDEF, 2**63, 2**64 - 1],
    T_FLOAT32: [0.0, -0.0, 1.5, -1.5, 0.1, F32_MAX, -F32_MAX, F32_MIN_NORMAL, F32_MIN_SUB, -F32_MIN_SUB, 123456.789],
    T_FLOAT64: [0.0, -0.0, 1.5, -2.25, 0.1, 1.7976931348623157e308, -1.7976931348623157e308,
                2.2250738585072014e-308, 5e-324, math.pi],
}
CASES = [(t, o, v) for t, values in LIMITS.items() for o in Order for v in values]


def reference(type_code: int, order: Order, value: float) -> list[int]:
    """Registers per the order definitions, built with struct only (DCBA is plain little endian)."""
    fmt = FORMATS[type_code]
    if order is Order.DCBA:
        data = struct.pack("<" + fmt, value)
    else:
        data = struct.pack(">" + fmt, value)
        if order is Order.BADC:
            data = b"".join(data[i:i + 2][::-1] for i in range(0, len(data), 2))
        elif order is Order.CDAB:
            data = b"".join(data[i:i + 2] for i in reversed(range(0, len(data), 2)))
    return [int.from_bytes(data[i:i + 2], "big") for i in range(0, len(data), 2)]


def as_float32(v: float) -> float:
    return struct.unpack(">f", struct.pack(">f", v))[0]


@pytest.mark.parametrize("type_code,order,value", CASES)
def test_encode_matches_struct(type_code: int, order: Order, value: float) -> None:
    assert codec.encode(type_code, int(order), value) == reference(type_code, order, value)


@pytest.mark.parametrize("type_code,order,value", CASES)
def test_decode_matches_struct(type_code: int, order: Order, value: float) -> None:
    got = codec.decode(type_code, int(order), reference(type_code, order, value))
    want = as_float32(value) if type_code == T_FLOAT32 else value
    assert got == want and type(got) is type(want)
    if isinstance(want, float):
        assert math.copysign(1.0, got) == math.copysign(1.0, want)  # -0.0 stays -0.0


def test_known_wire_layouts() -> None:
    # 0x0A0B0C0D as int32 in each order, written out by hand
    assert codec.encode(T_INT32, Order.ABCD, 0x0A0B0C0D) == [0x0A0B, 0x0C0D]
    assert codec.encode(T_INT32, Order.CDAB, 0x0A0B0C0D) == [0x0C0D, 0x0A0B]
    assert codec.encode(T_INT32, Order.BADC, 0x0A0B0C0D) == [0x0B0A, 0x0D0C]
    assert codec.encode(T_INT32, Order.DCBA, 0x0A0B0C0D) == [0x0D0C, 0x0B0A]
    v = 0x0102030405060708
    assert codec.encode(T_UINT64, Order.ABCD, v) == [0x0102, 0x0304, 0x0506, 0x0708]
    assert codec.encode(T_UINT64, Order.CDAB, v) == [0x0708, 0x0506, 0x0304, 0x0102]
    assert codec.encode(T_UINT64, Order.BADC, v) == [0x0201, 0x0403, 0x0605, 0x0807]
    assert codec.encode(T_UINT64, Order.DCBA, v) == [0x0807, 0x0605, 0x0403, 0x0201]
    # 16-bit values: the byte-swapped orders swap the two bytes, word order means nothing
    assert codec.encode(T_UINT16, Order.CDAB, 0x1234) == [0x1234]
    assert codec.encode(T_UINT16, Order.DCBA, 0x1234) == [0x3412]


@pytest.mark.parametrize("order", list(Order))
@pytest.mark.parametrize("type_code", [T_FLOAT32, T_FLOAT64])
def test_non_finite_floats_decode_as_is_and_are_never_encoded(type_code: int, order: Order) -> None:
    for special in (math.inf, -math.inf):
        assert codec.decode(type_code, int(order), reference(type_code, order, special)) == special
    assert math.isnan(codec.decode(type_code, int(order), reference(type_code, order, math.nan)))
    for bad in (math.inf, -math.inf, math.nan):
        with pytest.raises(ValueError, match="expected a finite number"):
            codec.encode(type_code, int(order), bad)
    for special in (math.inf, -math.inf):          # an emulator may hold them
        assert codec.encode(type_code, int(order), special, 0, False) == reference(type_code, order, special)
    assert math.isnan(codec.decode(type_code, int(order), codec.encode(type_code, int(order), math.nan, 0, False)))


@pytest.mark.parametrize("type_code,value,message", [
    (T_INT16, 32768, r"value 32768 is outside the range of int16 \[-32768, 32767\]"),
    (T_INT16, -32769, "outside the range of int16"),
    (T_UINT16, -1, r"value -1 is outside the range of uint16 \[0, 65535\]"),
    (T_UINT16, 65536, "outside the range of uint16"),
    (T_INT32, 2**31, "outside the range of int32"),
    (T_UINT32, 2**32, "outside the range of uint32"),
    (T_INT64, -(2**63) - 1, "outside the range of int64"),
    (T_UINT64, 2**64, "outside the range of uint64"),
    (T_UINT64, -1, "outside the range of uint64"),
    (T_INT16, 1.5, "expected an integer for int16, found 1.5"),
    (T_INT16, True, "expected a number for int16, found True"),
    (T_INT32, "7", "expected a number for int32, found '7'"),
    (T_FLOAT32, 3.5e38, "outside the range of float32"),
    (T_FLOAT64, "x", "expected a number, found 'x'"),
])
def test_encoder_guards_range_and_type(type_code: int, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        codec.encode(type_code, 0, value)


def test_integral_floats_encode_as_integers() -> None:
    assert codec.encode(T_INT16, 0, -2.0) == [0xFFFE]


def test_strings_both_byte_orders() -> None:
    assert codec.encode(T_STRING, Order.ABCD, "ABC", 4) == [0x4142, 0x4300]
    assert codec.encode(T_STRING, Order.BADC, "ABC", 4) == [0x4241, 0x0043]
    assert codec.encode(T_STRING, Order.DCBA, "ABC", 4) == [0x4241, 0x0043]
    assert codec.encode(T_STRING, Order.CDAB, "ABC", 4) == [0x4142, 0x4300]  # word order does not apply
    assert codec.encode(T_STRING, Order.ABCD, "ABCDE", 5) == [0x4142, 0x4344, 0x4500]
    assert codec.decode(T_STRING, Order.ABCD, [0x4142, 0x4300], 4) == "ABC"
    assert codec.decode(T_STRING, Order.BADC, [0x4241, 0x0043], 4) == "ABC"
    assert codec.decode(T_STRING, Order.ABCD, [0x4142, 0x4344], 4) == "ABCD"
    assert codec.decode(T_STRING, Order.ABCD, [0x4142, 0x4344], 3) == "ABC"   # odd length: last byte unused
    assert codec.decode(T_STRING, Order.ABCD, [0x4100, 0x4344], 4) == "A"     # ends at the first NUL
    assert codec.decode(T_STRING, Order.ABCD, [0xE9FF], 2) == "\u00e9\u00ff"  # latin-1, never fails
    with pytest.raises(ValueError, match="expected at most 4 characters, found 5"):
        codec.encode(T_STRING, 0, "ABCDE", 4)
    with pytest.raises(ValueError, match="expected latin-1 characters"):
        codec.encode(T_STRING, 0, "\u20ac", 4)


def test_program_decodes_a_whole_response() -> None:
    regs = ([0] * 3 + reference(T_FLOAT32, Order.CDAB, 2.5) + [0b1000_0000_0000_0101]
            + reference(T_INT16, Order.ABCD, -300) + codec.encode(T_STRING, 2, "hi!", 3)
            + reference(T_UINT64, Order.DCBA, 2**64 - 2))
    prog = codec.Program([
        (3, T_FLOAT32, int(Order.CDAB), -1, 0, 1.0, 0.0),
        (5, T_BIT, 0, 0, 0, 1.0, 0.0),
        (5, T_BIT, 0, 1, 0, 1.0, 0.0),
        (5, T_BIT, 0, 15, 0, 1.0, 0.0),
        (6, T_INT16, 0, -1, 0, 0.1, 5.0),          # scaled: raw * 0.1 + 5
        (7, T_STRING, 2, -1, 3, 1.0, 0.0),
        (9, T_UINT64, int(Order.DCBA), -1, 0, 1.0, 0.0),
        (5, T_UINT16, 0, -1, 0, 1.0, 0.0),
    ], len(regs))
    assert prog.size == 8
    assert prog.decode(regs) == [2.5, True, False, True, -300 * 0.1 + 5.0, "hi!", 2**64 - 2, 0x8005]


def test_program_builds_readings_through_a_factory() -> None:
    prog = codec.Program([(0, T_UINT16, 0, -1, 0, 1.0, 0.0), (1, T_INT16, 0, -1, 0, 2.0, 0.0)], 2,
                         tags=["a", "b"], factory=tuple)
    assert prog.readings([7, 0xFFFF], 123, "good") == [("a", 7, "good", 123), ("b", -2.0, "good", 123)]


def test_program_coils() -> None:
    prog = codec.Program([(0, T_COIL, 0, -1, 0, 1.0, 0.0), (9, T_COIL, 0, -1, 0, 1.0, 0.0)], 10, bit_table=True)
    bits = [True] + [False] * 8 + [True] + [False] * 6   # pymodbus pads to whole bytes
    assert prog.decode(bits) == [True, True]


def test_program_rejects_malformed_responses() -> None:
    prog = codec.Program([(0, T_FLOAT32, 0, -1, 0, 1.0, 0.0)], 2)
    with pytest.raises(ValueError, match="expected at least 2 registers, found 1"):
        prog.decode([1])
    with pytest.raises(ValueError, match="expected register values 0..65535, found 65536 at 1"):
        prog.decode([1, 65536])
    with pytest.raises(ValueError, match="found -1 at 0"):
        prog.decode([-1, 0])


def test_program_rejects_entries_that_do_not_fit() -> None:
    with pytest.raises(ValueError, match="does not fit a span of 3"):
        codec.Program([(1, T_FLOAT64, 0, -1, 0, 1.0, 0.0)], 3)
    with pytest.raises(ValueError, match="expected a bit 0..15"):
        codec.Program([(0, T_BIT, 0, 16, 0, 1.0, 0.0)], 1)
    with pytest.raises(ValueError, match="does not fit a register table"):
        codec.Program([(0, T_COIL, 0, -1, 0, 1.0, 0.0)], 1)


def test_random_round_trips_against_struct() -> None:
    rng = random.Random(20261125)
    for _ in range(3000):
        t = rng.choice(list(FORMATS))
        order = rng.choice(list(Order))
        if t in (T_FLOAT32, T_FLOAT64):
            width = 4 if t == T_FLOAT32 else 8
            while True:
                raw = rng.getrandbits(width * 8).to_bytes(width, "big")
                value = struct.unpack(">f" if width == 4 else ">d", raw)[0]
                if math.isfinite(value):
                    break
        else:
            lo, hi = {T_INT16: (-(2**15), 2**15 - 1), T_UINT16: (0, 2**16 - 1), T_INT32: (-(2**31), 2**31 - 1),
                      T_UINT32: (0, 2**32 - 1), T_INT64: (-(2**63), 2**63 - 1), T_UINT64: (0, 2**64 - 1)}[t]
            value = rng.randint(lo, hi)
        regs = reference(t, order, value)
        assert codec.encode(t, int(order), value) == regs
        assert codec.decode(t, int(order), regs) == value
