"""Sparkplug encoding of the types drivers learned to deliver: datetimes, records, arrays, and types said at connect."""
from __future__ import annotations

import struct

import pytest

from edged.sinks import sparkplug_payload as sp
from edged.sinks.sparkplug_node import EdgeNode
from edged.tag import DataType, Tag


def tag(name: str, dtype: DataType, dims: tuple[int, ...] = (), slot: int = 0) -> Tag:
    return Tag("plc", name, "x", dtype, "default", None, slot=slot, dims=dims)


def test_datetime_struct_and_array_types_and_their_encodings() -> None:
    assert sp.sparkplug_type(tag("d", DataType.DATETIME)) is sp.SpType.DateTime
    assert sp.sparkplug_type(tag("s", DataType.STRUCT)) is sp.SpType.String
    assert sp.sparkplug_type(tag("a", DataType.FLOAT32, (3,))) is sp.SpType.FloatArray
    assert sp.sparkplug_type(tag("b", DataType.BOOL, (10,))) is sp.SpType.BooleanArray
    m = sp.Metric()
    sp.set_value(m, sp.SpType.DateTime, "2026-12-02T10:00:00.250Z")
    assert m.long_value == 1796205600250
    sp.set_value(m, sp.SpType.DateTime, "2026-12-02T10:00:00")  # an S7 DATE_AND_TIME has no zone: UTC
    assert m.long_value == 1796205600000
    sp.set_value(m, sp.SpType.String, {"x": 1, "ok": True})
    assert m.string_value == '{"x":1,"ok":true}'
    sp.set_value(m, sp.SpType.FloatArray, [1.5, -2.0, 3.25])
    assert struct.unpack("<3f", m.bytes_value) == (1.5, -2.0, 3.25)
    sp.set_value(m, sp.SpType.Int16Array, [-1, 2])
    assert m.bytes_value == b"\xff\xff\x02\x00"
    sp.set_value(m, sp.SpType.BooleanArray, [True, False, True] + [False] * 6 + [True])
    assert m.bytes_value == struct.pack("<I", 10) + bytes([0b10100000, 0b01000000])
    sp.set_value(m, sp.SpType.StringArray, ["ab", "c"])
    assert m.bytes_value == b"ab\0c\0"
    with pytest.raises(sp.EncodeError):
        sp.set_value(m, sp.SpType.UInt8Array, [1, 300])
    with pytest.raises(sp.EncodeError):
        sp.set_value(m, sp.SpType.DateTime, "yesterday")


def test_a_tag_typed_at_connect_takes_the_type_of_its_value_at_birth() -> None:
    speed = tag("speed", DataType.ANY, slot=0)
    state = tag("state", DataType.ANY, slot=1)
    node = EdgeNode("g", "n", [speed, state])
    assert node.types["plc.speed"] is sp.SpType.Double
    out = node.births(0, {"plc.speed": (12, 0, 1), "plc.state": ("RUN", 0, 1)})
    assert node.types["plc.speed"] is sp.SpType.Int64 and node.types["plc.state"] is sp.SpType.String
    dbirth = sp.Payload.FromString(out[1].payload)
    by_name = {m.name: m for m in dbirth.metrics}
    assert by_name["speed"].long_value == 12 and by_name["state"].string_value == "RUN"
