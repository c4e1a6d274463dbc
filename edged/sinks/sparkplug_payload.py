"""Sparkplug B protobuf payloads: the official schema as a descriptor built at import, plus value codecs.

The schema is the Eclipse Tahu ``sparkplug_b.proto`` of Sparkplug 3.0 (package
``org.eclipse.tahu.protobuf``, proto2), transcribed field by field below: same message and field
names, numbers, labels, types, oneofs and extension ranges, so the wire format is identical to
what protoc would generate. Why not a generated ``_pb2.py`` or a package: protoc is not installed,
generated code ties itself to the protobuf version that generated it, and ``pysparkplug`` (the
maintained Python package) requires ``paho-mqtt<2``, which conflicts with the pinned paho-mqtt 2.2
that aiomqtt needs. The descriptor lives in a private pool, so another copy of the Tahu schema
loaded in the same process (the default pool) cannot clash with it.
"""
from __future__ import annotations

import enum
import json
import math
import struct
from typing import Any, Callable, Iterable

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from edged.tag import DataType, Tag

PACKAGE = "org.eclipse.tahu.protobuf"
_EXT_MAX = 536870912  # "extensions N to max": the exclusive end of the extension range (2**29)

_F = descriptor_pb2.FieldDescriptorProto
_SCALARS = {
    "uint32": _F.TYPE_UINT32, "uint64": _F.TYPE_UINT64, "float": _F.TYPE_FLOAT, "double": _F.TYPE_DOUBLE,
    "bool": _F.TYPE_BOOL, "string": _F.TYPE_STRING, "bytes": _F.TYPE_BYTES,
}
_LABELS = {"optional": _F.LABEL_OPTIONAL, "repeated": _F.LABEL_REPEATED}

# (label, type, name, number); a type that is not a scalar names a message relative to the package.
_FieldRow = tuple[str, str, str, int]
# The shared "oneof value" shape of Parameter, DataSetValue and PropertyValue.
_BASIC_VALUES = [("uint32", "int_value"), ("uint64", "long_value"), ("float", "float_value"),
                 ("double", "double_value"), ("bool", "boolean_value"), ("string", "string_value")]


def _message(name: str, fields: Iterable[_FieldRow] = (), *, oneof: Iterable[tuple[str, str, int]] = (),
             nested: Iterable[descriptor_pb2.DescriptorProto] = (),
             extensions_from: int | None = None) -> descriptor_pb2.DescriptorProto:
    """One DescriptorProto: plain fields, an optional ``oneof value`` (type, name, number), nested types."""
    msg = descriptor_pb2.DescriptorProto(name=name)
    msg.nested_type.extend(nested)
    for label, ftype, fname, number in fields:
        msg.field.append(_field(label, ftype, fname, number))
    oneof = list(oneof)
    if oneof:
        msg.oneof_decl.add(name="value")
        for ftype, fname, number in oneof:
            f = _field("optional", ftype, fname, number)
            f.oneof_index = 0
            msg.field.append(f)
    if extensions_from is not None:
        msg.extension_range.add(start=extensions_from, end=_EXT_MAX)
    return msg


def _field(label: str, ftype: str, name: str, number: int) -> descriptor_pb2.FieldDescriptorProto:
    f = _F(name=name, number=number, label=_LABELS[label])
    if ftype in _SCALARS:
        f.type = _SCALARS[ftype]
    else:
        f.type = _F.TYPE_MESSAGE
        f.type_name = f".{PACKAGE}.{ftype}"
    return f


def _numbered(rows: list[tuple[str, str]], first: int) -> list[tuple[str, str, int]]:
    return [(t, n, first + i) for i, (t, n) in enumerate(rows)]


def _ext(name: str) -> descriptor_pb2.DescriptorProto:
    return _message(name, extensions_from=1)


class SpType(enum.IntEnum):
    """The Sparkplug B ``DataType`` enum (values as on the wire in ``Metric.datatype``)."""

    Unknown = 0
    Int8 = 1
    Int16 = 2
    Int32 = 3
    Int64 = 4
    UInt8 = 5
    UInt16 = 6
    UInt32 = 7
    UInt64 = 8
    Float = 9
    Double = 10
    Boolean = 11
    String = 12
    DateTime = 13
    Text = 14
    UUID = 15
    DataSet = 16
    Bytes = 17
    File = 18
    Template = 19
    PropertySet = 20
    PropertySetList = 21
    Int8Array = 22
    Int16Array = 23
    Int32Array = 24
    Int64Array = 25
    UInt8Array = 26
    UInt16Array = 27
    UInt32Array = 28
    UInt64Array = 29
    FloatArray = 30
    DoubleArray = 31
    BooleanArray = 32
    StringArray = 33
    DateTimeArray = 34


def build_file_descriptor() -> descriptor_pb2.FileDescriptorProto:
    """The FileDescriptorProto of Tahu's ``sparkplug_b.proto`` (Sparkplug 3.0)."""
    # proto2 is the default syntax: like protoc, leave the field unset (the result equals protoc's output)
    fd = descriptor_pb2.FileDescriptorProto(name="edged/sparkplug_b.proto", package=PACKAGE)
    fd.options.java_package = PACKAGE
    fd.options.java_outer_classname = "SparkplugBProto"
    dt = fd.enum_type.add(name="DataType")
    for member in SpType:
        dt.value.add(name=member.name, number=int(member))

    parameter = _message(
        "Parameter", [("optional", "string", "name", 1), ("optional", "uint32", "type", 2)],
        oneof=_numbered(_BASIC_VALUES + [("Payload.Template.Parameter.ParameterValueExtension",
                                          "extension_value")], 3),
        nested=[_ext("ParameterValueExtension")])
    template = _message(
        "Template", [("optional", "string", "version", 1), ("repeated", "Payload.Metric", "metrics", 2),
                     ("repeated", "Payload.Template.Parameter", "parameters", 3),
                     ("optional", "string", "template_ref", 4), ("optional", "bool", "is_definition", 5)],
        nested=[parameter], extensions_from=6)
    dataset_value = _message(
        "DataSetValue",
        oneof=_numbered(_BASIC_VALUES + [("Payload.DataSet.DataSetValue.DataSetValueExtension",
                                          "extension_value")], 1),
        nested=[_ext("DataSetValueExtension")])
    row = _message("Row", [("repeated", "Payload.DataSet.DataSetValue", "elements", 1)], extensions_from=2)
    dataset = _message(
        "DataSet", [("optional", "uint64", "num_of_columns", 1), ("repeated", "string", "columns", 2),
                    ("repeated", "uint32", "types", 3), ("repeated", "Payload.DataSet.Row", "rows", 4)],
        nested=[dataset_value, row], extensions_from=5)
    property_value = _message(
        "PropertyValue", [("optional", "uint32", "type", 1), ("optional", "bool", "is_null", 2)],
        oneof=_numbered(_BASIC_VALUES + [("Payload.PropertySet", "propertyset_value"),
                                         ("Payload.PropertySetList", "propertysets_value"),
                                         ("Payload.PropertyValue.PropertyValueExtension", "extension_value")], 3),
        nested=[_ext("PropertyValueExtension")])
    property_set = _message(
        "PropertySet", [("repeated", "string", "keys", 1), ("repeated", "Payload.PropertyValue", "values", 2)],
        extensions_from=3)
    property_set_list = _message(
        "PropertySetList", [("repeated", "Payload.PropertySet", "propertyset", 1)], extensions_from=2)
    metadata = _message(
        "MetaData", [("optional", "bool", "is_multi_part", 1), ("optional", "string", "content_type", 2),
                     ("optional", "uint64", "size", 3), ("optional", "uint64", "seq", 4),
                     ("optional", "string", "file_name", 5), ("optional", "string", "file_type", 6),
                     ("optional", "string", "md5", 7), ("optional", "string", "description", 8)],
        extensions_from=9)
    metric = _message(
        "Metric", [("optional", "string", "name", 1), ("optional", "uint64", "alias", 2),
                   ("optional", "uint64", "timestamp", 3), ("optional", "uint32", "datatype", 4),
                   ("optional", "bool", "is_historical", 5), ("optional", "bool", "is_transient", 6),
                   ("optional", "bool", "is_null", 7), ("optional", "Payload.MetaData", "metadata", 8),
                   ("optional", "Payload.PropertySet", "properties", 9)],
        oneof=[("uint32", "int_value", 10), ("uint64", "long_value", 11), ("float", "float_value", 12),
               ("double", "double_value", 13), ("bool", "boolean_value", 14), ("string", "string_value", 15),
               ("bytes", "bytes_value", 16), ("Payload.DataSet", "dataset_value", 17),
               ("Payload.Template", "template_value", 18),
               ("Payload.Metric.MetricValueExtension", "extension_value", 19)],
        nested=[_ext("MetricValueExtension")])
    payload = _message(
        "Payload", [("optional", "uint64", "timestamp", 1), ("repeated", "Payload.Metric", "metrics", 2),
                    ("optional", "uint64", "seq", 3), ("optional", "string", "uuid", 4),
                    ("optional", "bytes", "body", 5)],
        nested=[template, dataset, property_value, property_set, property_set_list, metadata, metric],
        extensions_from=6)
    fd.message_type.append(payload)
    return fd


_POOL = descriptor_pool.DescriptorPool()
_POOL.Add(build_file_descriptor())
Payload: Any = message_factory.GetMessageClass(_POOL.FindMessageTypeByName(f"{PACKAGE}.Payload"))
"""The generated message class of ``org.eclipse.tahu.protobuf.Payload``."""
Metric: Any = Payload.Metric

# -- edged types -> Sparkplug types ------------------------------------------------------------
_SP_OF = {
    DataType.BOOL: SpType.Boolean, DataType.INT8: SpType.Int8, DataType.UINT8: SpType.UInt8,
    DataType.INT16: SpType.Int16, DataType.UINT16: SpType.UInt16, DataType.INT32: SpType.Int32,
    DataType.UINT32: SpType.UInt32, DataType.INT64: SpType.Int64, DataType.UINT64: SpType.UInt64,
    DataType.FLOAT32: SpType.Float, DataType.FLOAT64: SpType.Double, DataType.STRING: SpType.String,
    DataType.DATETIME: SpType.DateTime, DataType.STRUCT: SpType.String, DataType.ANY: SpType.Double,
}
_ARRAY_OF = {
    SpType.Boolean: SpType.BooleanArray, SpType.Int8: SpType.Int8Array, SpType.Int16: SpType.Int16Array,
    SpType.Int32: SpType.Int32Array, SpType.Int64: SpType.Int64Array, SpType.UInt8: SpType.UInt8Array,
    SpType.UInt16: SpType.UInt16Array, SpType.UInt32: SpType.UInt32Array, SpType.UInt64: SpType.UInt64Array,
    SpType.Float: SpType.FloatArray, SpType.Double: SpType.DoubleArray, SpType.String: SpType.StringArray,
    SpType.DateTime: SpType.DateTimeArray,
}
# Sparkplug 3.0 array encodings: little-endian packed elements in bytes_value
_PACK = {SpType.Int8Array: "b", SpType.Int16Array: "h", SpType.Int32Array: "i", SpType.Int64Array: "q",
         SpType.UInt8Array: "B", SpType.UInt16Array: "H", SpType.UInt32Array: "I", SpType.UInt64Array: "Q",
         SpType.FloatArray: "f", SpType.DoubleArray: "d", SpType.DateTimeArray: "q"}
_WIDTH = {SpType.Int8: 8, SpType.Int16: 16, SpType.Int32: 32, SpType.Int64: 64,
          SpType.UInt8: 8, SpType.UInt16: 16, SpType.UInt32: 32, SpType.UInt64: 64}
_SIGNED = {SpType.Int8, SpType.Int16, SpType.Int32, SpType.Int64}
_INT_FIELD = {t: ("long_value" if w == 64 else "int_value") for t, w in _WIDTH.items()}

# OPC DA quality codes, as the "Quality" metric property that Ignition and Tahu consumers read.
QUALITY_CODES = {0: 192, 1: 64, 2: 0}  # edged Quality GOOD, UNCERTAIN, BAD


def sparkplug_type(tag: Tag) -> SpType:
    """The Sparkplug datatype of a tag: its data type, or Double for scaled integers (engineering values); the
    matching array type for array tags; String (JSON) for records; DateTime for datetimes. A tag whose type the
    device says at connect (``any``) is Double until its first value says otherwise (see EdgeNode)."""
    base = SpType.Double if tag.dtype.is_integer and tag.scaled else _SP_OF[tag.dtype]
    return _ARRAY_OF[base] if tag.dims else base


def sparkplug_type_of_value(value: Any) -> SpType:
    """The Sparkplug datatype a value of a learned type fits (bool, integer, float, string, list of those)."""
    if isinstance(value, list):
        inner = sparkplug_type_of_value(value[0]) if value else SpType.Double
        return _ARRAY_OF.get(inner, SpType.StringArray)
    if isinstance(value, bool):
        return SpType.Boolean
    if isinstance(value, int):
        return SpType.UInt64 if value > 2**63 - 1 else SpType.Int64
    if isinstance(value, float):
        return SpType.Double
    return SpType.String


class EncodeError(ValueError):
    """A value that cannot be encoded as the metric's Sparkplug datatype."""


def set_value(metric: Any, sp_type: SpType, value: Any) -> None:
    """Store a value in a Metric's ``value`` oneof for its datatype; None sets ``is_null``.

    Signed Int8/16/32 go into ``int_value`` as the 32-bit two's complement of the sign-extended
    value (the Java reference implementation's encoding; decoders mask to the width, so they also
    read the width-specific encoding of the Python Tahu library). Int64 uses 64-bit two's
    complement in ``long_value``. Raises ``EncodeError`` when the value does not fit.
    """
    if value is None:
        metric.is_null = True
        return
    field, wire = encoder(sp_type)(value)
    setattr(metric, field, wire)


Encoder = Callable[[Any], tuple[str, Any]]


def encoder(sp_type: SpType) -> Encoder:
    """The function turning a (non-None) value into ``(oneof field name, wire value)`` for a datatype."""
    try:
        return _ENCODERS[sp_type]
    except KeyError:
        raise EncodeError(f"datatype {sp_type.name} is not supported by edged") from None


def _enc_bool(value: Any) -> tuple[str, Any]:
    if isinstance(value, bool):
        return "boolean_value", value
    if isinstance(value, int) and value in (0, 1):
        return "boolean_value", bool(value)
    raise EncodeError(f"expected a boolean, found {value!r}")


def _enc_string(value: Any) -> tuple[str, Any]:
    if isinstance(value, dict):  # a record (struct): its JSON text
        return "string_value", json.dumps(value, separators=(",", ":"), default=str)
    if not isinstance(value, str):
        raise EncodeError(f"expected a string, found {value!r}")
    return "string_value", value


def datetime_ms(value: Any) -> int:
    """Milliseconds since the Unix epoch of an RFC 3339 string (no zone: UTC) or an integer of ms."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        import datetime as dt

        try:
            d = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise EncodeError(f"expected an RFC 3339 date and time, found {value!r}") from None
        if d.tzinfo is None:
            d = d.replace(tzinfo=dt.timezone.utc)
        return int(d.timestamp() * 1000)
    raise EncodeError(f"expected a date and time, found {value!r}")


def _enc_datetime(value: Any) -> tuple[str, Any]:
    ms = datetime_ms(value)
    if not 0 <= ms < 1 << 64:
        raise EncodeError(f"{value!r} is before 1970 (Sparkplug DateTime is unsigned)")
    return "long_value", ms


def _enc_array(sp_type: SpType) -> Encoder:
    def enc(value: Any) -> tuple[str, Any]:
        if not isinstance(value, list):
            raise EncodeError(f"expected an array, found {value!r}")
        try:
            if sp_type is SpType.BooleanArray:
                bits = bytearray((len(value) + 7) // 8)
                for i, v in enumerate(value):
                    if v:
                        bits[i // 8] |= 0x80 >> (i % 8)
                return "bytes_value", struct.pack("<I", len(value)) + bytes(bits)
            if sp_type is SpType.StringArray:
                return "bytes_value", b"".join(str(v).encode() + b"\0" for v in value)
            items = [datetime_ms(v) for v in value] if sp_type is SpType.DateTimeArray else value
            return "bytes_value", struct.pack(f"<{len(items)}{_PACK[sp_type]}", *items)
        except (struct.error, TypeError) as exc:
            raise EncodeError(f"{value!r} does not fit {sp_type.name}: {exc}") from None
    return enc


def _enc_int(sp_type: SpType) -> Encoder:
    field = _INT_FIELD[sp_type]
    return lambda value: (field, encode_int(sp_type, value))


_ENCODERS: dict[SpType, Encoder] = {
    SpType.Boolean: _enc_bool,
    SpType.Float: lambda value: ("float_value", _float(value)),
    SpType.Double: lambda value: ("double_value", _float(value)),
    SpType.String: _enc_string,
    SpType.Text: _enc_string,
    SpType.DateTime: _enc_datetime,
    **{t: _enc_int(t) for t in _WIDTH},
    **{t: _enc_array(t) for t in _ARRAY_OF.values()},
}


def _float(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise EncodeError(f"expected a number, found {value!r}")
    return float(value)


def encode_int(sp_type: SpType, value: Any) -> int:
    """The unsigned wire integer of a signed or unsigned value of an integer Sparkplug type."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise EncodeError(f"expected an integer, found {value!r}")
    if isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            raise EncodeError(f"expected an integer, found {value!r}")
        value = int(value)
    width = _WIDTH[sp_type]
    if sp_type in _SIGNED:
        lo, hi = -(1 << (width - 1)), (1 << (width - 1)) - 1
        if not lo <= value <= hi:
            raise EncodeError(f"{value} is outside the range of {sp_type.name}")
        return value & (0xFFFFFFFF if width <= 32 else 0xFFFFFFFFFFFFFFFF)
    if not 0 <= value < (1 << width):
        raise EncodeError(f"{value} is outside the range of {sp_type.name}")
    return value


def get_value(metric: Any, sp_type: SpType | int | None = None) -> Any:
    """The Python value of a Metric (None when ``is_null`` or unset), decoded by datatype.

    ``sp_type`` overrides the metric's own ``datatype`` (DATA and CMD messages that carry only
    an alias have none; the caller knows it from the birth).
    """
    if metric.is_null:
        return None
    kind = metric.WhichOneof("value")
    if kind is None:
        return None
    raw = getattr(metric, kind)
    t = sp_type if sp_type is not None else (metric.datatype if metric.HasField("datatype") else None)
    try:
        t = SpType(t) if t is not None else None
    except ValueError:
        t = None
    if kind in ("int_value", "long_value") and t in _SIGNED:
        width = _WIDTH[t]  # type: ignore[index]
        raw &= (1 << width) - 1
        return raw - (1 << width) if raw >> (width - 1) else raw
    if kind in ("int_value", "long_value") and t is SpType.Boolean:
        return bool(raw)
    if kind == "float_value":
        # float32 on the wire: give back the shortest decimal that round-trips through float32
        return _shortest_float32(raw)
    return raw


def _shortest_float32(x: float) -> float:
    if not math.isfinite(x):
        return x
    packed = struct.pack("<f", x)
    for digits in range(6, 10):
        candidate = float(f"{x:.{digits}g}")
        if struct.pack("<f", candidate) == packed:
            return candidate
    return x


def add_quality(metric: Any, quality: int) -> None:
    """Attach the ``Quality`` property (OPC DA code, Int32) for non-good values."""
    code = QUALITY_CODES.get(int(quality), 0)
    props = metric.properties
    props.keys.append("Quality")
    pv = props.values.add()
    pv.type = SpType.Int32
    pv.int_value = code


def quality_of(metric: Any) -> int | None:
    """The OPC DA ``Quality`` property of a metric, or None when it has none."""
    if not metric.HasField("properties"):
        return None
    for key, pv in zip(metric.properties.keys, metric.properties.values):
        if key == "Quality" and pv.WhichOneof("value") == "int_value":
            return int(pv.int_value)
    return None


def decode(data: bytes) -> Any:
    """Parse a Sparkplug B payload (raises ``google.protobuf.message.DecodeError`` on garbage)."""
    msg = Payload()
    msg.ParseFromString(data)
    return msg
