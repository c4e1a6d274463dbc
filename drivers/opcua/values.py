"""Conversions between OPC UA values (Variant, DataValue, DataType) and edged values, types and quality."""
from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import enum
import math
import uuid
from typing import Any, Callable

from asyncua import ua

from edged.tag import DataType, Quality

# OPC UA built-in DataType NodeIds (namespace 0) -> edged type and the Variant type of a write
BUILTIN_TYPES: dict[int, tuple[DataType, ua.VariantType]] = {
    1: (DataType.BOOL, ua.VariantType.Boolean),
    2: (DataType.INT8, ua.VariantType.SByte),
    3: (DataType.UINT8, ua.VariantType.Byte),
    4: (DataType.INT16, ua.VariantType.Int16),
    5: (DataType.UINT16, ua.VariantType.UInt16),
    6: (DataType.INT32, ua.VariantType.Int32),
    7: (DataType.UINT32, ua.VariantType.UInt32),
    8: (DataType.INT64, ua.VariantType.Int64),
    9: (DataType.UINT64, ua.VariantType.UInt64),
    10: (DataType.FLOAT32, ua.VariantType.Float),
    11: (DataType.FLOAT64, ua.VariantType.Double),
    12: (DataType.STRING, ua.VariantType.String),
    13: (DataType.DATETIME, ua.VariantType.DateTime),
    14: (DataType.STRING, ua.VariantType.Guid),
    15: (DataType.STRING, ua.VariantType.ByteString),
    17: (DataType.STRING, ua.VariantType.NodeId),
    19: (DataType.UINT32, ua.VariantType.StatusCode),
    20: (DataType.STRING, ua.VariantType.QualifiedName),
    21: (DataType.STRING, ua.VariantType.LocalizedText),
    22: (DataType.STRUCT, ua.VariantType.ExtensionObject),
    29: (DataType.INT32, ua.VariantType.Int32),  # Enumeration: the numeric value
    290: (DataType.FLOAT64, ua.VariantType.Double),  # Duration
    294: (DataType.DATETIME, ua.VariantType.DateTime),  # UtcTime
    295: (DataType.STRING, ua.VariantType.String),  # LocaleId
    884: (DataType.STRUCT, ua.VariantType.ExtensionObject),  # Range
    887: (DataType.STRUCT, ua.VariantType.ExtensionObject),  # EUInformation
}
DATA_TYPE_NAMES = {1: "Boolean", 2: "SByte", 3: "Byte", 4: "Int16", 5: "UInt16", 6: "Int32", 7: "UInt32",
                   8: "Int64", 9: "UInt64", 10: "Float", 11: "Double", 12: "String", 13: "DateTime", 14: "Guid",
                   15: "ByteString", 17: "NodeId", 19: "StatusCode", 20: "QualifiedName", 21: "LocalizedText",
                   22: "Structure", 24: "BaseDataType", 26: "Number", 27: "Integer", 28: "UInteger",
                   29: "Enumeration", 290: "Duration", 294: "UtcTime", 295: "LocaleId", 884: "Range",
                   887: "EUInformation"}

# the Python types a Variant of each edged type may carry (trust nothing from the wire)
_INT_VT = {ua.VariantType.SByte, ua.VariantType.Byte, ua.VariantType.Int16, ua.VariantType.UInt16,
           ua.VariantType.Int32, ua.VariantType.UInt32, ua.VariantType.Int64, ua.VariantType.UInt64}
_FLOAT_VT = {ua.VariantType.Float, ua.VariantType.Double}

UNCERTAIN_MASK = 0x40000000
BAD_MASK = 0x80000000
SEVERITY_MASK = 0xC0000000


class ValueError_(ValueError):
    """A value from the wire that does not fit the tag (wrong type, out of range, malformed)."""


def type_name(dtype_node: ua.NodeId | None) -> str:
    """A readable name of a DataType NodeId (``Double``, ``ns=2;i=3002``)."""
    if dtype_node is None:
        return "unknown"
    if dtype_node.NamespaceIndex == 0 and isinstance(dtype_node.Identifier, int):
        return DATA_TYPE_NAMES.get(dtype_node.Identifier, f"i={dtype_node.Identifier}")
    return dtype_node.to_string()


def edged_type(dtype_node: ua.NodeId | None) -> tuple[DataType, ua.VariantType | None]:
    """The edged type and write Variant type of a server DataType (ANY when not a known built-in)."""
    if dtype_node is not None and dtype_node.NamespaceIndex == 0 and isinstance(dtype_node.Identifier, int):
        hit = BUILTIN_TYPES.get(dtype_node.Identifier)
        if hit is not None:
            return hit
    return DataType.ANY, None


def compatible(configured: DataType, server: DataType) -> bool:
    """True when every value of the server's type fits the configured type without loss."""
    if configured is server or configured is DataType.ANY or server is DataType.ANY:
        return True
    if configured is DataType.FLOAT64:
        return server.is_numeric or server is DataType.BOOL
    if configured is DataType.FLOAT32:
        return server in (DataType.INT8, DataType.UINT8, DataType.INT16, DataType.UINT16, DataType.BOOL)
    if configured.is_integer and (server.is_integer or server is DataType.BOOL):
        lo, hi = configured.limits  # type: ignore[misc]
        slo, shi = server.limits if server.is_integer else (0, 1)  # type: ignore[misc]
        return lo <= slo and shi <= hi
    return False


def quality_of(status: ua.StatusCode | None) -> Quality:
    """Good, uncertain or bad from a StatusCode's severity bits (a missing code means good)."""
    if status is None:
        return Quality.GOOD
    value = status.value
    if value & BAD_MASK:
        return Quality.BAD
    if value & UNCERTAIN_MASK:
        return Quality.UNCERTAIN
    return Quality.GOOD


def status_name(status: ua.StatusCode | None) -> str:
    """The symbolic name of a StatusCode (``BadNodeIdUnknown``), or its hex value."""
    if status is None:
        return "Good"
    try:
        return status.name
    except Exception:  # an unknown code from the wire
        return f"0x{status.value:08X}"


def ts_ns_of(dv: ua.DataValue, fallback_ns: int) -> int:
    """The source timestamp of a DataValue in ns, else its server timestamp, else the fallback."""
    ts = dv.SourceTimestamp or dv.ServerTimestamp
    if ts is None or not isinstance(ts, dt.datetime):
        return fallback_ns
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=dt.timezone.utc)
    try:
        ns = int(ts.timestamp() * 1e9)
    except (OverflowError, OSError, ValueError):
        return fallback_ns
    # a clock-less device sends 1601-01-01 (OPC UA's zero); keep edged's own time then
    return ns if ns > 0 else fallback_ns


def rfc3339(value: dt.datetime) -> str:
    """An RFC 3339 UTC string with microseconds (naive datetimes from asyncua are UTC)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)
    return value.astimezone(dt.timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def plain(value: Any, depth: int = 0) -> Any:
    """A JSON-ready Python value from any asyncua value (structures become dicts)."""
    if depth > 32:
        raise ValueError_("structure nested more than 32 levels deep")
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value
    if isinstance(value, dt.datetime):
        return rfc3339(value)
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(bytes(value)).decode()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, ua.LocalizedText):
        return value.Text
    if isinstance(value, ua.QualifiedName):
        return f"{value.NamespaceIndex}:{value.Name}" if value.NamespaceIndex else value.Name
    if isinstance(value, ua.NodeId):
        return value.to_string()
    if isinstance(value, ua.StatusCode):
        return value.value
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (list, tuple)):
        return [plain(v, depth + 1) for v in value]
    if isinstance(value, ua.ExtensionObject):  # a structure the client could not decode: its raw body
        return {"TypeId": value.TypeId.to_string(), "Body": base64.b64encode(value.Body or b"").decode()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name), depth + 1) for f in dataclasses.fields(value)
                if f.name != "Encoding"}
    raise ValueError_(f"unsupported value type {type(value).__name__}")


def flatten(value: Any) -> list[Any]:
    """A flat (row-major) list of a possibly nested list."""
    out: list[Any] = []
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(reversed(item))
        else:
            out.append(item)
    return out


def _scalar(value: Any, dtype: DataType) -> Any:
    """Check one scalar from the wire against an edged type; returns it (converted) or raises."""
    if dtype is DataType.BOOL:
        if isinstance(value, bool):
            return value
    elif dtype.is_integer:
        if isinstance(value, int) and not isinstance(value, bool):
            lo, hi = dtype.limits  # type: ignore[misc]
            if lo <= value <= hi:
                return value
            raise ValueError_(f"value {value} outside the range of {dtype.value}")
        if isinstance(value, enum.Enum) and isinstance(value.value, int):
            return value.value
    elif dtype.is_float:
        if isinstance(value, float):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return float(value)
    elif dtype is DataType.STRING:
        if isinstance(value, str):
            return value
        if value is not None and not isinstance(value, (bool, int, float)):
            return plain(value)
    elif dtype is DataType.DATETIME:
        if isinstance(value, dt.datetime):
            return rfc3339(value)
    elif dtype is DataType.STRUCT:
        out = plain(value)
        if isinstance(out, dict):
            return out
    else:  # ANY: keep the value's own type
        return plain(value)
    raise ValueError_(f"expected {dtype.value}, found {type(value).__name__}")


def to_edged(value: Any, dtype: DataType, array: bool) -> Any:
    """A Variant's value as edged's raw value of the tag's type (flat list for arrays); raises ValueError_."""
    if array:
        if not isinstance(value, list):
            raise ValueError_(f"expected an array, found {type(value).__name__}")
        return [_scalar(v, dtype) for v in flatten(value)]
    if isinstance(value, list) and dtype is not DataType.ANY:
        raise ValueError_(f"expected a scalar, found an array of {len(value)}")
    return _scalar(value, dtype)


def converter(dtype: DataType, array: bool) -> Callable[[Any], Any]:
    """A fast checker/converter of wire values for one tag type (the hot path of reads and notifications).

    Same results as ``to_edged(value, dtype, array)``; scalars of the common types are checked inline.
    """
    if array or dtype not in _FAST:
        return lambda v: to_edged(v, dtype, array)
    kind, lo, hi = _FAST[dtype]
    if kind == "f":
        def conv_float(v: Any) -> Any:
            t = type(v)
            if t is float:
                return v
            if t is int:
                return float(v)
            return _scalar(v, dtype)
        return conv_float
    if kind == "i":
        def conv_int(v: Any) -> Any:
            if type(v) is int and lo <= v <= hi:
                return v
            return _scalar(v, dtype)
        return conv_int
    if kind == "b":
        def conv_bool(v: Any) -> Any:
            if v is True or v is False:
                return v
            return _scalar(v, dtype)
        return conv_bool

    def conv_str(v: Any) -> Any:
        if type(v) is str:
            return v
        return _scalar(v, dtype)
    return conv_str


_FAST: dict[DataType, tuple[str, float, float]] = {
    DataType.FLOAT32: ("f", 0, 0), DataType.FLOAT64: ("f", 0, 0), DataType.BOOL: ("b", 0, 0),
    DataType.STRING: ("s", 0, 0),
    **{t: ("i", *t.limits) for t in DataType if t.is_integer},  # type: ignore[misc]
}


def to_variant(value: Any, vtype: ua.VariantType, array: bool) -> ua.Variant:
    """An edged raw value as a Variant of the node's type (for a value-only write); raises ValueError_."""
    if array:
        if not isinstance(value, list):
            raise ValueError_(f"expected a list for an array tag, found {type(value).__name__}")
        return ua.Variant([_to_wire(v, vtype) for v in value], vtype, is_array=True)
    return ua.Variant(_to_wire(value, vtype), vtype)


def _to_wire(value: Any, vtype: ua.VariantType) -> Any:
    if vtype is ua.VariantType.Boolean:
        if isinstance(value, bool):
            return value
        if isinstance(value, (int, float)) and value in (0, 1):
            return bool(value)
    elif vtype in _INT_VT:
        if isinstance(value, bool):
            return int(value)
        if isinstance(value, int):
            return value
        if isinstance(value, float) and math.isfinite(value) and value == int(value):
            return int(value)
    elif vtype in _FLOAT_VT:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif vtype is ua.VariantType.String:
        if isinstance(value, str):
            return value
    elif vtype is ua.VariantType.LocalizedText:
        if isinstance(value, str):
            return ua.LocalizedText(value)
    elif vtype is ua.VariantType.DateTime:
        if isinstance(value, str):
            try:
                parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                raise ValueError_(f"expected an RFC 3339 date and time, found {value!r}") from None
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=dt.timezone.utc)
            return parsed
    else:
        raise ValueError_(f"writing OPC UA {vtype.name} values is not supported")
    raise ValueError_(f"expected a value for OPC UA {vtype.name}, found {type(value).__name__} {value!r}")
