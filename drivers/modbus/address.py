"""Modbus tag addresses: the two explicit styles (``hr:100`` and ``40101``), types, word order, limits."""
from __future__ import annotations

import enum
from dataclasses import dataclass

from edged.schema import Section, describe
from edged.tag import DataType

MAX_OFFSET = 65535
MAX_REGISTERS = 125   # per read request (Modbus application protocol, fc 3/4)
MAX_BITS = 2000       # per read request (fc 1/2)
MAX_UNIT_ID = 247
MAX_STRING_CHARS = 2 * MAX_REGISTERS


class Table(enum.Enum):
    """The four Modbus data tables: short name, long name, read function code, bit table, writable."""

    COIL = ("co", "coil", 1, True, True)
    DISCRETE = ("di", "discrete", 2, True, False)
    HOLDING = ("hr", "holding", 3, False, True)
    INPUT = ("ir", "input", 4, False, False)

    def __init__(self, short: str, long: str, fc: int, is_bit: bool, writable: bool) -> None:
        self.short = short
        self.long = long
        self.fc = fc
        self.is_bit = is_bit
        self.writable = writable

    @property
    def label(self) -> str:
        """Human name used in messages ("holding registers", "coils", ...)."""
        return _LABELS[self]

    @property
    def ref_digit(self) -> str:
        """First digit of the one-based reference numbers of this table (4 for 40001...)."""
        return _REF_DIGIT[self]


_LABELS = {Table.COIL: "coils", Table.DISCRETE: "discrete inputs", Table.HOLDING: "holding registers",
           Table.INPUT: "input registers"}
_REF_DIGIT = {Table.COIL: "0", Table.DISCRETE: "1", Table.INPUT: "3", Table.HOLDING: "4"}
_PREFIXES = {"hr": Table.HOLDING, "holding": Table.HOLDING, "ir": Table.INPUT, "input": Table.INPUT,
             "co": Table.COIL, "coil": Table.COIL, "di": Table.DISCRETE, "discrete": Table.DISCRETE}
_BY_DIGIT = {t.ref_digit: t for t in Table}


class Order(enum.IntEnum):
    """Byte order of a multi-byte value on the wire; bit 0 = words reversed, bit 1 = bytes swapped in words."""

    ABCD = 0  # big endian (Modbus standard)
    CDAB = 1  # word swap
    BADC = 2  # byte swap within each word
    DCBA = 3  # little endian

    @property
    def swaps_bytes(self) -> bool:
        """True for the byte-swapped orders (BADC, DCBA): also used for strings."""
        return bool(self & 2)


ORDER_NAMES = [o.name for o in Order]

# Type codes shared with the Cython codec (cext/codec.pyx).
T_BIT, T_INT16, T_UINT16, T_INT32, T_UINT32, T_FLOAT32, T_INT64, T_UINT64, T_FLOAT64, T_STRING, T_COIL = range(11)
REGISTER_TYPES = {
    DataType.INT16: (T_INT16, 1), DataType.UINT16: (T_UINT16, 1),
    DataType.INT32: (T_INT32, 2), DataType.UINT32: (T_UINT32, 2), DataType.FLOAT32: (T_FLOAT32, 2),
    DataType.INT64: (T_INT64, 4), DataType.UINT64: (T_UINT64, 4), DataType.FLOAT64: (T_FLOAT64, 4),
}
_REGISTER_TYPE_NAMES = ", ".join([t.value for t in REGISTER_TYPES] + ["string"])


class AddressError(ValueError):
    """An address string that is not a valid Modbus address; the message says what was expected."""


@dataclass(frozen=True, slots=True)
class Location:
    """Where an address points: table, zero-based offset, bit (-1 for a whole register) and style."""

    table: Table
    offset: int
    bit: int = -1
    five_digit: bool = False  # a 5-digit reference number (limited to offsets 0..9998)


def parse_location(text: str) -> Location:
    """Parse ``hr:100``, ``holding:100``, ``co:7``, ``40101``, ``400101``, ``hr:100.3``, ``40101.3``."""
    s = text.strip()
    if not s:
        raise AddressError("expected an address such as \"hr:100\" or \"40101\", found an empty string")
    body, dot, bit_text = s.partition(".")
    bit = -1
    if dot:
        if not bit_text.isdigit() or not bit_text.isascii():
            raise AddressError(f"expected a bit number 0..15 after '.', found {s!r}")
        bit = int(bit_text)
        if bit > 15:
            raise AddressError(f"expected a bit number 0..15 after '.', found {bit} in {s!r}")
    if ":" in body:
        prefix, _, num = body.partition(":")
        table = _PREFIXES.get(prefix.strip().lower())
        if table is None:
            raise AddressError(f"expected a table prefix hr, ir, co, di (or holding, input, coil, discrete), "
                               f"found {prefix.strip()!r} in {s!r}")
        num = num.strip()
        if not num.isdigit() or not num.isascii():
            raise AddressError(f"expected a zero-based offset 0..{MAX_OFFSET} after '{prefix.strip()}:', found {s!r}")
        offset = int(num)
        if offset > MAX_OFFSET:
            raise AddressError(f"expected a zero-based offset 0..{MAX_OFFSET}, found {offset} in {s!r}")
        loc = Location(table, offset, bit)
    elif body.isdigit() and body.isascii():
        loc = _parse_reference(body, s, bit)
    else:
        raise AddressError(f"expected a table-prefixed offset such as \"hr:100\" or a reference number such as "
                           f"\"40101\", found {s!r}")
    if bit >= 0 and loc.table.is_bit:
        raise AddressError(f"expected no bit number on {loc.table.label} (each is one bit already), found {s!r}")
    return loc


def _parse_reference(digits: str, text: str, bit: int) -> Location:
    """One-based reference numbers: 5 digits (40001..49999) or 6 digits (400001..465536)."""
    if len(digits) not in (5, 6):
        raise AddressError(f"expected a 5-digit (40001) or 6-digit (400001) reference number, found {text!r}")
    table = _BY_DIGIT.get(digits[0])
    if table is None:
        raise AddressError(f"expected a reference number starting with 0 (coil), 1 (discrete input), "
                           f"3 (input register) or 4 (holding register), found {text!r}")
    number = int(digits[1:])
    five = len(digits) == 5
    top = 9999 if five else MAX_OFFSET + 1
    if not 1 <= number <= top:
        first, last = (f"{digits[0]}0001", f"{digits[0]}9999") if five else (f"{digits[0]}00001", f"{digits[0]}65536")
        raise AddressError(f"expected a reference number {first}..{last} for {table.label}, found {text!r}")
    return Location(table, number - 1, bit, five_digit=five)


@dataclass(frozen=True, slots=True)
class ModbusAddress:
    """A parsed tag address: location, codec type code, word order, unit override, size."""

    table: Table
    offset: int
    bit: int          # -1 unless a bit of a register
    type_code: int    # T_* codes shared with the codec
    order: Order
    unit: int | None  # None: the device's unit_id
    count: int        # registers (register tables) or bits (bit tables) the value occupies
    length: int = 0   # characters, strings only

    @property
    def end(self) -> int:
        """Offset of the last register/bit the value occupies."""
        return self.offset + self.count - 1

    def span(self) -> str:
        """The address range in protocol terms, e.g. ``hr 100..101``."""
        if self.count == 1:
            return f"{self.table.short} {self.offset}"
        return f"{self.table.short} {self.offset}..{self.end}"


def parse_tag_address(section: Section, dtype: DataType | None) -> tuple[ModbusAddress, DataType] | None:
    """Read ``address``, ``order``, ``unit_id`` and ``length`` of a tag table; record issues on their keys."""
    raw = section.raw("address")
    order_name = section.get_str("order", None, choices=ORDER_NAMES)
    unit = section.get_int("unit_id", None, min=0, max=MAX_UNIT_ID)
    length = section.get_int("length", None, min=1, max=MAX_STRING_CHARS)
    if raw is None:
        return None
    if not isinstance(raw, str):
        hint = f" (write it as a string: \"{raw}\")" if isinstance(raw, int) and not isinstance(raw, bool) else ""
        section.error("address", f"expected a string such as \"hr:100\" or \"40101\", found {describe(raw)}{hint}")
        return None
    try:
        loc = parse_location(raw)
    except AddressError as exc:
        section.error("address", str(exc))
        return None
    ok = True
    table = loc.table
    if dtype is None:
        dtype = DataType.BOOL if table.is_bit or loc.bit >= 0 else DataType.UINT16
    # -- type vs table ---------------------------------------------------------
    if table.is_bit:
        if dtype is not DataType.BOOL:
            section.error("type", f"expected bool for an address in {table.label}, found {dtype.value!r}")
            return None
        type_code, count = T_COIL, 1
    elif loc.bit >= 0:
        if dtype is not DataType.BOOL:
            section.error("type", f"expected bool for a register bit address ({raw.strip()!r}), found {dtype.value!r}")
            return None
        type_code, count = T_BIT, 1
    elif dtype is DataType.BOOL:
        section.error("type", f"expected one of {_REGISTER_TYPE_NAMES} for {table.label}, found 'bool' "
                              f"(a bool in a register needs a bit address such as \"{table.short}:{loc.offset}.0\")")
        return None
    elif dtype is DataType.STRING:
        if length is None:
            if not section.has("length"):
                section.error("length", "missing required key (string tags need a length in characters, 2 per register)")
            return None
        type_code, count = T_STRING, (length + 1) // 2
    elif dtype in REGISTER_TYPES:
        type_code, count = REGISTER_TYPES[dtype]
    else:
        section.error("type", f"expected one of {_REGISTER_TYPE_NAMES} for {table.label}, found {dtype.value!r} "
                              "(Modbus registers are 16 bits wide)")
        return None
    # -- keys that only fit some types ------------------------------------------
    if length is not None and dtype is not DataType.STRING:
        section.error("length", f"expected length only on string tags, found it on a {dtype.value} tag")
        ok = False
    if order_name is not None and (table.is_bit or loc.bit >= 0):
        section.error("order", f"expected order only on register values, found it on a bit address ({raw.strip()!r})")
        ok = False
    # -- range -----------------------------------------------------------------------
    end = loc.offset + count - 1
    if end > MAX_OFFSET:
        section.error("address", f"expected the {dtype.value} value ({count} {_unit_word(table, count)}) to end at "
                                 f"offset {MAX_OFFSET} or below, found it ending at {end} ({raw.strip()!r})")
        ok = False
    elif loc.five_digit and end > 9998:
        section.error("address", f"expected a 5-digit reference to stay within {table.ref_digit}0001.."
                                 f"{table.ref_digit}9999, found a {dtype.value} value ending beyond "
                                 f"{table.ref_digit}9999 (use a 6-digit reference such as "
                                 f"{table.ref_digit}{loc.offset + 1:05d} or \"{table.short}:{loc.offset}\")")
        ok = False
    # -- access ---------------------------------------------------------------------
    if section.data.get("access") == "write" and not table.writable:
        section.error("access", f"expected \"read\" for an address in {table.label} (they are read-only in Modbus), "
                                "found \"write\"")
        ok = False
    if not ok:
        return None
    addr = ModbusAddress(table=table, offset=loc.offset, bit=loc.bit, type_code=type_code,
                         order=Order[order_name] if order_name else Order.ABCD, unit=unit, count=count,
                         length=length or 0)
    return addr, dtype


def _unit_word(table: Table, count: int) -> str:
    if table.is_bit:
        return "bit" if count == 1 else "bits"
    return "register" if count == 1 else "registers"
