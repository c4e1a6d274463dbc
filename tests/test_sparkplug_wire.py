"""An independent Sparkplug B decoder (raw protobuf wire format, field numbers from the Tahu schema) and its checks.

The sink encodes with ``google.protobuf`` and a descriptor built in ``edged.sinks.sparkplug_payload``;
the tests decode what reaches the broker with this hand-written reader instead, so a mistake in the
descriptor (a wrong field number or type) cannot hide behind the same mistake on the decoding side.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

import pytest

# Sparkplug B DataType values (Tahu sparkplug_b.proto, enum DataType)
INT8, INT16, INT32, INT64, UINT8, UINT16, UINT32, UINT64 = 1, 2, 3, 4, 5, 6, 7, 8
FLOAT, DOUBLE, BOOLEAN, STRING = 9, 10, 11, 12
_WIDTH = {INT8: 8, INT16: 16, INT32: 32, INT64: 64}


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7


def fields(buf: bytes) -> list[tuple[int, int, Any]]:
    """Split a message into (field number, wire type, raw value) in wire order."""
    out = []
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            v, i = _varint(buf, i)
        elif wt == 1:
            v, i = buf[i:i + 8], i + 8
        elif wt == 2:
            n, i = _varint(buf, i)
            v, i = buf[i:i + n], i + n
        elif wt == 5:
            v, i = buf[i:i + 4], i + 4
        else:
            raise ValueError(f"unsupported wire type {wt}")
        out.append((num, wt, v))
    return out


@dataclass
class WMetric:
    """A decoded Payload.Metric (the fields edged uses)."""

    name: str | None = None
    alias: int | None = None
    timestamp: int | None = None
    datatype: int | None = None
    is_historical: bool = False
    is_null: bool = False
    value: Any = None
    properties: dict[str, Any] = field(default_factory=dict)


@dataclass
class WPayload:
    """A decoded Payload."""

    timestamp: int | None = None
    seq: int | None = None
    metrics: list[WMetric] = field(default_factory=list)

    def by_name(self) -> dict[str, WMetric]:
        """Metrics by name (births)."""
        return {m.name: m for m in self.metrics if m.name is not None}


def _signed(raw: int, width: int) -> int:
    raw &= (1 << width) - 1
    return raw - (1 << width) if raw >> (width - 1) else raw


def _property_set(buf: bytes) -> dict[str, Any]:
    keys: list[str] = []
    values: list[Any] = []
    for num, _, v in fields(buf):
        if num == 1:
            keys.append(v.decode())
        elif num == 2:
            val = None
            for n2, _, v2 in fields(v):
                if n2 == 3:  # int_value
                    val = v2
            values.append(val)
    return dict(zip(keys, values))


def decode_metric(buf: bytes) -> WMetric:
    """Decode one Metric."""
    m = WMetric()
    raw: Any = None
    for num, _, v in fields(buf):
        if num == 1:
            m.name = v.decode()
        elif num == 2:
            m.alias = v
        elif num == 3:
            m.timestamp = v
        elif num == 4:
            m.datatype = v
        elif num == 5:
            m.is_historical = bool(v)
        elif num == 7:
            m.is_null = bool(v)
        elif num == 9:
            m.properties = _property_set(v)
        elif num in (10, 11):  # int_value, long_value
            raw = v
        elif num == 12:
            raw = struct.unpack("<f", v)[0]
        elif num == 13:
            raw = struct.unpack("<d", v)[0]
        elif num == 14:
            raw = bool(v)
        elif num == 15:
            raw = v.decode()
    if m.datatype in _WIDTH and raw is not None:
        raw = _signed(raw, _WIDTH[m.datatype])
    m.value = None if m.is_null else raw
    return m


def decode_payload(buf: bytes) -> WPayload:
    """Decode a Sparkplug B Payload."""
    p = WPayload()
    for num, _, v in fields(buf):
        if num == 1:
            p.timestamp = v
        elif num == 2:
            p.metrics.append(decode_metric(v))
        elif num == 3:
            p.seq = v
    return p


def encode_command(metrics: list[tuple[str | None, int | None, int, Any]]) -> bytes:
    """Encode an NCMD/DCMD payload by hand: (name, alias, datatype, value) per metric."""
    def varint(n: int) -> bytes:
        out = bytearray()
        while True:
            b = n & 0x7F
            n >>= 7
            out.append(b | (0x80 if n else 0))
            if not n:
                return bytes(out)

    def key(num: int, wt: int) -> bytes:
        return varint(num << 3 | wt)

    def ld(num: int, data: bytes) -> bytes:
        return key(num, 2) + varint(len(data)) + data

    body = b""
    for name, alias, dtype, value in metrics:
        m = b""
        if name is not None:
            m += ld(1, name.encode())
        if alias is not None:
            m += key(2, 0) + varint(alias)
        m += key(4, 0) + varint(dtype)
        if dtype == BOOLEAN:
            m += key(14, 0) + varint(int(bool(value)))
        elif dtype in (INT8, INT16, INT32, UINT8, UINT16, UINT32):
            m += key(10, 0) + varint(value & 0xFFFFFFFF)
        elif dtype in (INT64, UINT64):
            m += key(11, 0) + varint(value & 0xFFFFFFFFFFFFFFFF)
        elif dtype == FLOAT:
            m += key(12, 5) + struct.pack("<f", value)
        elif dtype == DOUBLE:
            m += key(13, 1) + struct.pack("<d", value)
        elif dtype == STRING:
            m += ld(15, value.encode())
        body += ld(2, m)
    return key(1, 0) + varint(1) + body


# -- checks of the encoder against this decoder ---------------------------------------------------
@pytest.mark.parametrize("dtype,sp_type,value", [
    ("int8", INT8, -128), ("int8", INT8, 127), ("int16", INT16, -30000), ("int32", INT32, -(2**31)),
    ("int64", INT64, -(2**63)), ("int64", INT64, 2**63 - 1), ("uint8", UINT8, 255), ("uint16", UINT16, 65535),
    ("uint32", UINT32, 2**32 - 1), ("uint64", UINT64, 2**64 - 1), ("float64", DOUBLE, -1.5e300),
    ("float32", FLOAT, 0.5), ("bool", BOOLEAN, True), ("bool", BOOLEAN, False), ("string", STRING, "Grün ✓"),
])
def test_encoder_round_trips_every_type_through_the_independent_decoder(dtype: str, sp_type: int,
                                                                         value: Any) -> None:
    from edged.sinks import sparkplug_payload as sp
    from edged.tag import DataType, Tag

    tag = Tag("d", "t", "x", DataType(dtype), "default", None, slot=0)
    assert sp.sparkplug_type(tag) == sp_type
    p = sp.Payload()
    p.seq = 7
    m = p.metrics.add()
    m.name, m.alias, m.datatype = "t", 16, sp_type
    sp.set_value(m, sp.sparkplug_type(tag), value)
    wire = decode_payload(p.SerializeToString())
    assert wire.seq == 7
    (wm,) = wire.metrics
    assert (wm.name, wm.alias, wm.datatype, wm.value) == ("t", 16, sp_type, value)
    # and the library decoder agrees
    assert sp.get_value(sp.decode(p.SerializeToString()).metrics[0]) == value


def test_scaled_integer_tags_are_doubles_and_out_of_range_values_are_refused() -> None:
    from edged.sinks import sparkplug_payload as sp
    from edged.tag import DataType, Tag

    scaled = Tag("d", "t", "x", DataType.INT16, "default", None, scale=0.1, slot=0)
    assert sp.sparkplug_type(scaled) is sp.SpType.Double
    m = sp.Metric()
    with pytest.raises(sp.EncodeError, match="outside the range of Int8"):
        sp.set_value(m, sp.SpType.Int8, 128)
    with pytest.raises(sp.EncodeError, match="expected an integer"):
        sp.set_value(m, sp.SpType.UInt16, 1.5)
    with pytest.raises(sp.EncodeError, match="expected a string"):
        sp.set_value(m, sp.SpType.String, 3)
    sp.set_value(m, sp.SpType.Int32, 12.0)  # integral floats are integers
    assert m.int_value == 12


def test_null_and_quality_property() -> None:
    from edged.sinks import sparkplug_payload as sp

    p = sp.Payload()
    m = p.metrics.add()
    m.alias, m.datatype = 20, DOUBLE
    sp.set_value(m, sp.SpType.Double, None)
    sp.add_quality(m, 2)
    (wm,) = decode_payload(p.SerializeToString()).metrics
    assert wm.is_null and wm.value is None
    assert wm.properties == {"Quality": 0}
    assert sp.quality_of(sp.decode(p.SerializeToString()).metrics[0]) == 0


def test_decoder_reads_width_specific_negative_ints_as_python_tahu_writes_them() -> None:
    from edged.sinks import sparkplug_payload as sp

    m = sp.Metric()
    m.datatype = INT8
    m.int_value = (-5) + 2**8  # Python Tahu: two's complement in 8 bits
    assert sp.get_value(m) == -5
    m.int_value = (-5) & 0xFFFFFFFF  # Java Tahu: sign-extended to 32 bits
    assert sp.get_value(m) == -5


def test_descriptor_matches_the_tahu_field_numbers() -> None:
    from edged.sinks import sparkplug_payload as sp

    metric = sp.Metric.DESCRIPTOR
    expected = {"name": 1, "alias": 2, "timestamp": 3, "datatype": 4, "is_historical": 5, "is_transient": 6,
                "is_null": 7, "metadata": 8, "properties": 9, "int_value": 10, "long_value": 11,
                "float_value": 12, "double_value": 13, "boolean_value": 14, "string_value": 15,
                "bytes_value": 16, "dataset_value": 17, "template_value": 18, "extension_value": 19}
    assert {f.name: f.number for f in metric.fields} == expected
    payload = sp.Payload.DESCRIPTOR
    assert {f.name: f.number for f in payload.fields} == {"timestamp": 1, "metrics": 2, "seq": 3, "uuid": 4,
                                                          "body": 5}
    assert [(r[0], r[1]) for r in payload.extension_ranges] == [(6, 536870912)]


def test_descriptor_is_byte_identical_to_protocs_output_for_the_tahu_schema() -> None:
    """The SHA-256 is of protoc's FileDescriptorProto for Tahu's sparkplug_b.proto (Sparkplug 3.0), as
    serialized in the generated module that pysparkplug 0.6.1 ships, with the file name set to ours.
    Any change to a message, field, number, type, label, oneof or extension range changes it."""
    import hashlib

    from edged.sinks.sparkplug_payload import build_file_descriptor

    digest = hashlib.sha256(build_file_descriptor().SerializeToString(deterministic=True)).hexdigest()
    assert digest == "238e251b88ce6bd12507e5700739013d5c99f3e5676699eec23c801a0bdc44db"
