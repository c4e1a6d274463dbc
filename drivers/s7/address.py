"""S7 tag addresses as integrators paste them: TIA Portal absolute (%DB1.DBX0.0, %MW20), PLC4X and nodeS7 dialects."""
from __future__ import annotations

import re
from dataclasses import dataclass

from snap7.tags import parse_tag as lib_parse_tag
from snap7.type import Area

from edged.schema import Section
from edged.tag import DataType

from .types import DEFAULT_STRING_LEN, MAX_STRING_LEN, MAX_WSTRING_LEN, TYPES, canonical, string_size, type_names

AREA_LETTER = {Area.DB: "DB", Area.MK: "M", Area.PE: "I", Area.PA: "Q", Area.TM: "T", Area.CT: "C"}
AREA_NAME = {Area.DB: "DB", Area.MK: "marker memory M", Area.PE: "inputs I", Area.PA: "outputs Q",
             Area.TM: "timers T", Area.CT: "counters C"}
WRITABLE_AREAS = frozenset({Area.DB, Area.MK, Area.PA})
MAX_DB = 65535
MAX_OFFSET = 0x1FFFFF  # byte offsets are sent as 21-bit byte numbers (3-byte bit address)
MAX_ARRAY = 4096
EXAMPLES = ('"%DB1.DBD4" (TIA absolute), "%DB1.DBX0.0", "%MW20", "%I0.1", "%Q4.0", '
            '"DB1.DBD4:REAL" or "DB1:10:STRING[20]" (PLC4X), "DB1,REAL4" or "DB1,X0.0" or "MW20" (nodeS7)')


class AddressError(ValueError):
    """An address that is not a valid S7 address; the message says what was expected."""


@dataclass(frozen=True, slots=True)
class S7Address:
    """A parsed S7 address: area, DB number, byte (element for T/C), bit, S7 type, array count, string length."""

    area: Area
    db: int
    byte: int
    bit: int
    s7type: str
    count: int = 1
    strlen: int = 0

    @property
    def elem_size(self) -> int:
        """Bytes of one element."""
        if self.s7type in ("STRING", "WSTRING"):
            return string_size(self.s7type, self.strlen)
        return TYPES[self.s7type].size

    @property
    def size(self) -> int:
        """Bytes the whole tag occupies on the wire."""
        return self.elem_size * self.count

    @property
    def dtype(self) -> DataType:
        """The edged data type values of this address carry."""
        return TYPES[self.s7type].dtype

    @property
    def is_bit(self) -> bool:
        """True for a single BOOL (read as a byte, written with a bit write)."""
        return self.s7type == "BOOL"

    @property
    def type_text(self) -> str:
        """The S7 type as TIA writes it: ``REAL``, ``STRING[20]``, ``Array[0..4] of INT``."""
        base = f"{self.s7type}[{self.strlen}]" if self.s7type in ("STRING", "WSTRING") else self.s7type
        return f"Array[0..{self.count - 1}] of {base}" if self.count > 1 else base

    def region(self) -> str:
        """Where the tag lives, for messages: ``DB1.DBB4..DBB7`` or ``MB20..MB21``."""
        if self.area in (Area.TM, Area.CT):
            return f"{AREA_LETTER[self.area]}{self.byte}"
        last = self.byte + self.size - 1
        if self.area is Area.DB:
            if self.is_bit:
                return f"DB{self.db}.DBX{self.byte}.{self.bit}"
            return f"DB{self.db}.DBB{self.byte}" + (f"..DBB{last}" if last > self.byte else "")
        p = AREA_LETTER[self.area]
        if self.is_bit:
            return f"{p}{self.byte}.{self.bit}"
        return f"{p}B{self.byte}" + (f"..{p}B{last}" if last > self.byte else "")

    def __str__(self) -> str:
        return f"{self.region()} {self.type_text}"


# -- the TIA absolute form and the bare nodeS7/STEP 7 short forms --------------------------------------
_TIA_DB = re.compile(r"^DB(\d+)\.DB([XBWD])(\d+)(?:\.(\d+))?$")
_TIA_AREA = re.compile(r"^([MIQEA])([XBWD]?)(\d+)(?:\.(\d+))?$")
_TIMER = re.compile(r"^([TCZ])(\d+)$")
_AREA_OF = {"M": Area.MK, "I": Area.PE, "E": Area.PE, "Q": Area.PA, "A": Area.PA}
_WIDTH = {"X": 1, "B": 1, "W": 2, "D": 4}
# width letter -> {edged type: S7 type}; the first entry is the default when `type` is absent
_BY_WIDTH: dict[str, dict[DataType | None, str]] = {
    "X": {None: "BOOL", DataType.BOOL: "BOOL"},
    "B": {None: "BYTE", DataType.UINT8: "BYTE", DataType.INT8: "SINT", DataType.STRING: "CHAR"},
    "W": {None: "WORD", DataType.UINT16: "WORD", DataType.INT16: "INT"},
    "D": {None: "DWORD", DataType.UINT32: "DWORD", DataType.INT32: "DINT", DataType.FLOAT32: "REAL"},
}
_WIDTH_WORD = {"X": "a bit", "B": "a byte", "W": "a word", "D": "a double word"}
# nodeS7 long type names (DB1,REAL4) and the extra types the library's nodeS7 parser lacks
_NODES7_LONG = {"REAL": "R", "INT": "I", "DINT": "DI", "WORD": "W", "DWORD": "DW", "BYTE": "B", "CHAR": "C",
                "LREAL": "LR", "STRING": "S", "WSTRING": "WS", "LINT": "LI", "ULINT": "ULI", "LWORD": "LW",
                "BOOL": "X"}
_NODES7_EXTRA = {"UINT", "UDINT", "DATE", "TIME", "LTIME", "TOD", "DT", "DTL", "WCHAR"}
_NODES7_DB = re.compile(r"^DB(\d+),([A-Z_]+?)(\d+)(?:\.(\d+))?$")
_NODES7_AREA = re.compile(r"^([MIQEA])([A-Z_]+?)(\d+)(?:\.(\d+))?$")
_STRING_T = re.compile(r"^(W?STRING)(?:\[(\d+)\])?$")
_ARRAY_T = re.compile(r"^(?:ARRAY\[0\.\.(\d+)\]OF)?([A-Z_]+)(?:\[(\d+)\])?$")


def parse_address(text: str, dtype: DataType | None = None) -> S7Address:
    """Parse an S7 address in any supported form; ``dtype`` (the tag's ``type``) picks the S7 type of width-only forms."""
    raw = text.strip()
    s = raw.upper().replace(" ", "")
    if not s:
        raise AddressError("empty address")
    if s.startswith("P#"):
        raise AddressError("pointer (P#...) addresses are not supported; give the start address and the type")
    pct = s.startswith("%")
    if pct:
        s = s[1:]
    if "," in s:
        return _parse_nodes7(s, raw, dtype)
    if ":" in s:
        return _parse_plc4x(s, raw, dtype)
    m = _TIMER.match(s)
    if m:
        return _check(S7Address(Area.TM if m[1] == "T" else Area.CT, 0, int(m[2]), 0,
                                "TIMER" if m[1] == "T" else "COUNTER"), raw)
    m = _TIA_DB.match(s)
    if m:
        return _width_form(Area.DB, int(m[1]), m[2], m[3], m[4], raw, dtype)
    m = _TIA_AREA.match(s)
    if m:
        if not m[2] and m[4] is None:
            raise AddressError(f"{raw!r} needs a bit (\"%M{m[3]}.0\") or a width letter B, W or D (\"%MW{m[3]}\")")
        return _width_form(_AREA_OF[m[1]], 0, m[2] or "X", m[3], m[4], raw, dtype)
    m = _NODES7_AREA.match(s)
    if m and not pct:
        return _parse_nodes7_area(m, raw, dtype)
    raise AddressError(f"unrecognised S7 address {raw!r}")


def _width_form(area: Area, db: int, width: str, byte: str, bit: str | None, raw: str,
                dtype: DataType | None) -> S7Address:
    if width == "X":
        if bit is None:
            raise AddressError(f"{raw!r}: a bit address needs the bit number, e.g. \"%DB1.DBX0.0\"")
        if int(bit) > 7:
            raise AddressError(f"{raw!r}: expected a bit number 0..7, found {bit}")
    elif bit is not None:
        raise AddressError(f"{raw!r}: only bit addresses (X, or M/I/Q without a width letter) take a .bit suffix")
    choices = _BY_WIDTH[width]
    if dtype not in choices:
        allowed = ", ".join(f"{t.value} ({s})" for t, s in choices.items() if t is not None)
        p = f"%DB{db}.DB{width}{byte}" if area is Area.DB else f"%{AREA_LETTER[area]}{width}{byte}"
        raise AddressError(f"{raw!r} is {_WIDTH_WORD[width]}: expected type {allowed}, found {dtype.value}; "  # type: ignore[union-attr]
                           f"for other S7 types write the type after a colon, e.g. \"{p}:TIME\"")
    return _check(S7Address(area, db, int(byte), int(bit or 0), choices[dtype]), raw)


def _parse_plc4x(s: str, raw: str, dtype: DataType | None) -> S7Address:
    """``DB1.DBD4:REAL``, ``DB1:10:STRING[20]``, ``MW20:INT``, ``I0.1:BOOL``; the type decides, the width must agree."""
    addr_part, _, type_part = s.rpartition(":")
    s7type, count, strlen = _parse_type_text(type_part, raw)
    short = re.match(r"^DB(\d+):(\d+)(?:\.(\d+))?$", addr_part)
    width = None
    if short:
        area, db, byte, bit = Area.DB, int(short[1]), int(short[2]), int(short[3] or 0)
        if short[3] is not None and s7type != "BOOL":
            raise AddressError(f"{raw!r}: only BOOL takes a .bit offset")
    else:
        m = _TIA_DB.match(addr_part) or _TIA_AREA.match(addr_part)
        if m is None:
            raise AddressError(f"unrecognised address part {addr_part!r} in {raw!r}")
        if addr_part.startswith("DB"):
            area, db, width, byte, bitstr = Area.DB, int(m[1]), m[2], int(m[3]), m[4]
        else:
            area, db, width, byte, bitstr = _AREA_OF[m[1]], 0, m[2] or ("X" if m[4] is not None else "B"), int(m[3]), m[4]
        bit = int(bitstr or 0)
        # let the library check the dialect too (it does not know E/A or every type; we do)
        if area is Area.DB or m[1] in "MIQ":
            try:
                lib_parse_tag(f"{addr_part}:{'BYTE' if s7type not in TYPES or s7type in ('TIMER', 'COUNTER') else s7type}")
            except (ValueError, IndexError) as exc:
                raise AddressError(f"{raw!r}: {exc}") from None
    addr = S7Address(area, db, byte, bit, s7type, count, strlen)
    if width is not None:
        if (width == "X") != (s7type == "BOOL"):
            raise AddressError(f"{raw!r}: a {'bit' if width == 'X' else 'byte'} address needs "
                               f"{'BOOL' if width == 'X' else 'a non-BOOL type'}, found {s7type}")
        if width == "X" and bitstr is None:
            raise AddressError(f"{raw!r}: a bit address needs the bit number, e.g. \"DB1.DBX0.0:BOOL\"")
        if width in "WD" and (count != 1 or addr.elem_size != _WIDTH[width]):
            raise AddressError(f"{raw!r}: {_WIDTH_WORD[width]} ({_WIDTH[width]} bytes) cannot hold "
                               f"{addr.type_text} ({addr.size} bytes); write DBB/MB for the start byte")
    return _check(addr, raw)


def _parse_type_text(text: str, raw: str) -> tuple[str, int, int]:
    """``REAL`` -> (REAL, 1, 0); ``REAL[5]`` -> (REAL, 5, 0); ``STRING[20]`` -> (STRING, 1, 20)."""
    m = _STRING_T.match(text)
    if m:
        n = int(m[2]) if m[2] else DEFAULT_STRING_LEN
        return m[1], 1, n
    m = _ARRAY_T.match(text)
    if m is None:
        raise AddressError(f"{raw!r}: unknown S7 type {text!r} (expected one of {type_names()})")
    base, count = m[2], 1
    if m[1] is not None:
        count = int(m[1]) + 1
    elif m[3] is not None:
        count = int(m[3])
    name = canonical(base)
    if name is None or name in ("TIMER", "COUNTER"):
        raise AddressError(f"{raw!r}: unknown S7 type {base!r} (expected one of {type_names()})")
    return name, count, 0


def _parse_nodes7(s: str, raw: str, dtype: DataType | None) -> S7Address:
    m = _NODES7_DB.match(s)
    if m is None:
        raise AddressError(f"{raw!r}: expected the nodeS7 form DB<n>,<type><byte>[.<bit|length|count>], "
                           f"e.g. \"DB1,REAL4\", \"DB1,X0.0\", \"DB1,S10.20\"")
    return _nodes7_item(Area.DB, int(m[1]), m[2], int(m[3]), m[4], raw, f"DB{m[1]},")


def _parse_nodes7_area(m: re.Match[str], raw: str, dtype: DataType | None) -> S7Address:
    return _nodes7_item(_AREA_OF[m[1]], 0, m[2], int(m[3]), m[4], raw, m[1])


def _nodes7_item(area: Area, db: int, code: str, byte: int, trailing: str | None, raw: str, prefix: str) -> S7Address:
    """One nodeS7 item: the library parses the codes it knows; long names, arrays (``.count``) and extra types here."""
    code = _NODES7_LONG.get(code, code)
    if code in _NODES7_EXTRA:
        if trailing is not None and not TYPES[code].array_ok:
            raise AddressError(f"{raw!r}: {code} takes no .N suffix")
        return _check(S7Address(area, db, byte, 0, code, int(trailing) if trailing else 1), raw)
    lib_text = f"{prefix}{code}{byte}"
    try:
        probe = lib_parse_tag(lib_text + (f".{trailing}" if trailing is not None else ""), strict=False)
        count = 1
    except ValueError as exc:
        # nodeS7 arrays: DB1,REAL0.20 = 20 REALs from byte 0 (the library refuses the suffix)
        if trailing is None or "trailing" not in str(exc):
            raise AddressError(f"{raw!r}: {exc}") from None
        probe = lib_parse_tag(lib_text, strict=False)
        count = int(trailing)
    s7type, _, strlen = _parse_type_text(probe.datatype.upper(), raw)
    if s7type == "BOOL" and probe.bit > 7:
        raise AddressError(f"{raw!r}: expected a bit number 0..7, found {probe.bit}")
    return _check(S7Address(area, db, probe.byte_offset, probe.bit, s7type, count, strlen), raw)


def _check(a: S7Address, raw: str) -> S7Address:
    if a.area is Area.DB and not 1 <= a.db <= MAX_DB:
        raise AddressError(f"{raw!r}: expected a DB number 1..{MAX_DB}, found {a.db}")
    if not 0 <= a.byte <= MAX_OFFSET:
        raise AddressError(f"{raw!r}: expected a byte offset 0..{MAX_OFFSET}, found {a.byte}")
    if a.area in (Area.TM, Area.CT) and a.byte > 65535:
        raise AddressError(f"{raw!r}: expected a timer/counter number 0..65535, found {a.byte}")
    if a.count < 1 or a.count > MAX_ARRAY:
        raise AddressError(f"{raw!r}: expected an array of 1..{MAX_ARRAY} elements, found {a.count}")
    if a.count > 1 and not TYPES[a.s7type].array_ok:
        raise AddressError(f"{raw!r}: arrays are supported for the numeric types only, found an array of {a.s7type}")
    if a.s7type == "STRING" and not 1 <= a.strlen <= MAX_STRING_LEN:
        raise AddressError(f"{raw!r}: expected a STRING length 1..{MAX_STRING_LEN}, found {a.strlen}")
    if a.s7type == "WSTRING" and not 1 <= a.strlen <= MAX_WSTRING_LEN:
        raise AddressError(f"{raw!r}: expected a WSTRING length 1..{MAX_WSTRING_LEN}, found {a.strlen}")
    return a


def parse_tag_address(section: Section, dtype: DataType | None) -> tuple[S7Address, DataType, tuple[int, ...]] | None:
    """Read a tag's ``address`` key; check the tag's ``type`` agrees with the S7 type. None after recording issues."""
    text = section.get_str("address")
    if text is None:
        return None
    try:
        addr = parse_address(text, dtype)
    except AddressError as exc:
        section.error("address", f"{exc}; expected an S7 address such as {EXAMPLES}")
        return None
    if dtype is not None and dtype is not addr.dtype:
        section.error("type", f"expected {addr.dtype.value} (the address {text!r} is {addr.type_text}), "
                              f"found {dtype.value}; remove `type` or make it agree with the address")
        return None
    dims = (addr.count,) if addr.count > 1 else ()
    return addr, addr.dtype, dims
