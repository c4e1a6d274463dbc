"""S7 data types: byte sizes, the edged DataType each maps to, and which may form arrays."""
from __future__ import annotations

from dataclasses import dataclass

from edged.tag import DataType


@dataclass(frozen=True, slots=True)
class S7Type:
    """One S7 elementary type: its name, size in bytes (per element), edged type and struct format."""

    name: str
    size: int
    dtype: DataType
    fmt: str = ""  # struct format of one element for the plain numeric types, "" otherwise
    array_ok: bool = False


def _t(name: str, size: int, dtype: DataType, fmt: str = "", array_ok: bool = False) -> S7Type:
    return S7Type(name, size, dtype, fmt, array_ok)


# Fixed-size types. STRING and WSTRING sizes depend on their max length (see string_size).
TYPES: dict[str, S7Type] = {t.name: t for t in [
    _t("BOOL", 1, DataType.BOOL),
    _t("BYTE", 1, DataType.UINT8, "B", True),
    _t("USINT", 1, DataType.UINT8, "B", True),
    _t("SINT", 1, DataType.INT8, "b", True),
    _t("CHAR", 1, DataType.STRING),
    _t("WCHAR", 2, DataType.STRING),
    _t("WORD", 2, DataType.UINT16, "H", True),
    _t("UINT", 2, DataType.UINT16, "H", True),
    _t("INT", 2, DataType.INT16, "h", True),
    _t("DWORD", 4, DataType.UINT32, "I", True),
    _t("UDINT", 4, DataType.UINT32, "I", True),
    _t("DINT", 4, DataType.INT32, "i", True),
    _t("REAL", 4, DataType.FLOAT32, "f", True),
    _t("LWORD", 8, DataType.UINT64, "Q", True),
    _t("ULINT", 8, DataType.UINT64, "Q", True),
    _t("LINT", 8, DataType.INT64, "q", True),
    _t("LREAL", 8, DataType.FLOAT64, "d", True),
    _t("TIME", 4, DataType.INT32, "i", True),      # milliseconds
    _t("LTIME", 8, DataType.INT64, "q", True),     # nanoseconds
    _t("TOD", 4, DataType.STRING),                 # "HH:MM:SS.mmm"
    _t("DATE", 2, DataType.DATETIME),              # "YYYY-MM-DD"
    _t("DT", 8, DataType.DATETIME),                # "YYYY-MM-DDTHH:MM:SS.mmm" (PLC local time, no zone)
    _t("DTL", 12, DataType.DATETIME),              # "YYYY-MM-DDTHH:MM:SS.ffffff"
    _t("STRING", 0, DataType.STRING),
    _t("WSTRING", 0, DataType.STRING),
    _t("TIMER", 2, DataType.INT32),                # S5TIME of a timer T n, in milliseconds
    _t("COUNTER", 2, DataType.UINT16),             # BCD value of a counter C n (0..999)
]}

# Other spellings integrators paste (TIA Portal names, IEC names).
ALIASES = {
    "TIME_OF_DAY": "TOD", "DATE_AND_TIME": "DT", "S5TIME": "TIMER",
}

DEFAULT_STRING_LEN = 254
MAX_STRING_LEN = 254
MAX_WSTRING_LEN = 16382


def canonical(name: str) -> str | None:
    """The canonical S7 type name for a spelling (case-insensitive), or None when unknown."""
    up = name.strip().upper()
    up = ALIASES.get(up, up)
    return up if up in TYPES else None


def string_size(name: str, length: int) -> int:
    """Bytes a STRING[length] (2 + n) or WSTRING[length] (4 + 2n) occupies."""
    return 2 + length if name == "STRING" else 4 + 2 * length


def type_names() -> str:
    """The S7 type names accepted, for messages."""
    return ", ".join(n for n in TYPES if n not in ("TIMER", "COUNTER")) + ", STRING[n], WSTRING[n]"
