"""A deterministic slice of the Modbus response fuzz target (fuzz/fuzz_modbus_response.py): seeds and random bytes."""
from __future__ import annotations

import importlib.util
import random
import struct
from pathlib import Path

import pytest

from edged.cext import mbap

FUZZ = Path(__file__).resolve().parent.parent / "fuzz" / "fuzz_modbus_response.py"


def load_target():
    spec = importlib.util.spec_from_file_location("fuzz_modbus_response", FUZZ)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod.TARGET


def seeds() -> list[bytes]:
    def mbap_frame(tid: int, unit: int, pdu: bytes, delta: int = 0) -> bytes:
        return struct.pack(">HHHB", tid, 0, len(pdu) + 1 + delta, unit) + pdu
    regs = struct.pack(">4H", 1, 2, 3, 4)
    out = [b"", mbap_frame(1, 1, bytes([3, 8]) + regs), mbap_frame(0, 1, bytes([3, 8]) + regs),
           mbap_frame(1, 1, bytes([3, 10]) + regs), mbap_frame(1, 1, bytes([0x83, 2])),
           mbap_frame(1, 9, bytes([1, 4, 0xFF])), mbap_frame(1, 1, bytes([3, 8]) + regs, -2),
           mbap_frame(1, 1, bytes([4, 250]) + bytes(250)), mbap_frame(1, 0, bytes([3, 6]) + b"ABCDEF"),
           mbap_frame(2, 1, b"\x06\x00\x01\x00\x02") + b"\xde\xad"]
    return out + [a + b for a in out for b in out[:4]]


def test_seeds_and_random_streams_raise_only_framing_errors() -> None:
    target = load_target()
    rng = random.Random(14)
    inputs = seeds()
    for _ in range(3000):
        base = rng.choice(inputs)
        data = bytearray(base)
        for _ in range(rng.randrange(0, 4)):
            if data:
                data[rng.randrange(len(data))] = rng.randrange(256)
        if rng.random() < 0.3:
            data += bytes(rng.randrange(256) for _ in range(rng.randrange(0, 40)))
        inputs.append(bytes(data)) if len(inputs) < 500 else None
        try:
            target(bytes(data))
        except mbap.FramingError:
            pass


def test_framing_error_is_the_documented_error() -> None:
    target = load_target()
    with pytest.raises(mbap.FramingError):
        target(b"\x00\x01\x00\x07\x00\x03\x01\x03")     # protocol id 7
