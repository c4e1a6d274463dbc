"""Tags, data types, quality codes and samples: the values every part of edged passes around."""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, NamedTuple


class DataType(enum.Enum):
    """Engineering data types a tag can carry, independent of the protocol."""

    BOOL = "bool"
    INT8 = "int8"
    UINT8 = "uint8"
    INT16 = "int16"
    UINT16 = "uint16"
    INT32 = "int32"
    UINT32 = "uint32"
    INT64 = "int64"
    UINT64 = "uint64"
    FLOAT32 = "float32"
    FLOAT64 = "float64"
    STRING = "string"
    DATETIME = "datetime"  # an instant or a calendar date/time: an RFC 3339 string (UTC with "Z" when known)
    STRUCT = "struct"  # a structured record: a dict of field name -> value (JSON object upstream)
    ANY = "any"  # learned from the device at connect (OPC UA Variant); values keep their own Python type

    @property
    def is_integer(self) -> bool:
        """True for the signed and unsigned integer types."""
        return self in _INT_LIMITS

    @property
    def is_float(self) -> bool:
        """True for float32 and float64."""
        return self in (DataType.FLOAT32, DataType.FLOAT64)

    @property
    def is_numeric(self) -> bool:
        """True for integers and floats (not bool or string)."""
        return self.is_integer or self.is_float

    @property
    def limits(self) -> tuple[float, float] | None:
        """The inclusive value range of the raw type, or None for bool/string."""
        if self in _INT_LIMITS:
            return _INT_LIMITS[self]
        if self is DataType.FLOAT32:
            return (-3.4028234663852886e38, 3.4028234663852886e38)
        if self is DataType.FLOAT64:
            return (-1.7976931348623157e308, 1.7976931348623157e308)
        return None

    @property
    def bits(self) -> int:
        """Width in bits (0 for strings, records and learned types, 1 for bool)."""
        return _BITS[self]


_INT_LIMITS = {
    DataType.INT8: (-(2**7), 2**7 - 1),
    DataType.UINT8: (0, 2**8 - 1),
    DataType.INT16: (-(2**15), 2**15 - 1),
    DataType.UINT16: (0, 2**16 - 1),
    DataType.INT32: (-(2**31), 2**31 - 1),
    DataType.UINT32: (0, 2**32 - 1),
    DataType.INT64: (-(2**63), 2**63 - 1),
    DataType.UINT64: (0, 2**64 - 1),
}
_BITS = {
    DataType.BOOL: 1, DataType.INT8: 8, DataType.UINT8: 8, DataType.INT16: 16, DataType.UINT16: 16,
    DataType.INT32: 32, DataType.UINT32: 32, DataType.INT64: 64, DataType.UINT64: 64,
    DataType.FLOAT32: 32, DataType.FLOAT64: 64, DataType.STRING: 0, DataType.DATETIME: 64,
    DataType.STRUCT: 0, DataType.ANY: 0,
}
DATA_TYPE_NAMES = [t.value for t in DataType]


class Quality(enum.IntEnum):
    """OPC-style quality of a value: good, uncertain (e.g. stale) or bad."""

    GOOD = 0
    UNCERTAIN = 1
    BAD = 2

    @property
    def label(self) -> str:
        """Lower-case name used in sinks and the CLI."""
        return self.name.lower()


class Access(enum.Enum):
    """Whether a tag may be written: read-only unless configured writable."""

    READ = "read"
    WRITE = "write"


@dataclass(frozen=True, slots=True)
class Tag:
    """One named value of a device: immutable after load, with a slot in the process image."""

    device: str
    name: str
    address: str
    dtype: DataType
    scan: str
    addr: Any = field(compare=False, repr=False)  # driver-specific parsed address
    access: Access = Access.READ
    scale: float = 1.0
    offset: float = 0.0
    unit: str = ""
    description: str = ""
    deadband: float = 0.0
    export_metric: bool = False
    min: float | None = None
    max: float | None = None
    slot: int = -1
    dims: tuple[int, ...] = ()  # array dimensions; values of an array tag are flat lists, row-major
    key: str = field(init=False, compare=False, repr=False)  # the cell-wide name ``device.tag``

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", f"{self.device}.{self.name}")

    @property
    def writable(self) -> bool:
        """True when the tag is configured writable."""
        return self.access is Access.WRITE

    @property
    def scaled(self) -> bool:
        """True when scale or offset change the raw value."""
        return self.scale != 1.0 or self.offset != 0.0

    @property
    def is_array(self) -> bool:
        """True when the tag carries an array (values are lists)."""
        return bool(self.dims)

    def to_engineering(self, raw: Any) -> Any:
        """Apply scale and offset to a raw numeric value (element-wise for arrays)."""
        if not self.scaled or isinstance(raw, (str, bool)) or raw is None:
            return raw
        if isinstance(raw, list):
            return [x * self.scale + self.offset for x in raw]
        return raw * self.scale + self.offset

    def to_raw(self, value: Any) -> Any:
        """Invert scale and offset for a write (integers are rounded)."""
        if not self.scaled or isinstance(value, (str, bool)):
            return value
        raw = (value - self.offset) / self.scale
        return round(raw) if self.dtype.is_integer else raw


class Reading(NamedTuple):
    """A value as a driver delivers it: tag, engineering value, quality, source time (ns)."""

    tag: Tag
    value: Any
    quality: Quality
    ts_ns: int


class Sample(NamedTuple):
    """A value as it enters the spool and goes upstream."""

    ts_ns: int
    device: str
    tag: str
    value: Any
    quality: int
