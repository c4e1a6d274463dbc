"""S7 values <-> bytes for one address: decoders checked against what the PLC sent, encoders for writes."""
from __future__ import annotations

import datetime as dt
import struct
from typing import Any, Callable

from .address import S7Address
from .types import TYPES

Decoder = Callable[[bytes, int], Any]

_EPOCH_DATE = dt.date(1990, 1, 1)
_S5_BASES_MS = (10, 100, 1000, 10000)


class ValueDecodeError(ValueError):
    """Bytes the PLC sent that are not a valid value of the tag's S7 type (counted as malformed)."""


def _bcd(b: int) -> int:
    hi, lo = b >> 4, b & 0x0F
    if hi > 9 or lo > 9:
        raise ValueDecodeError(f"invalid BCD byte 0x{b:02x}")
    return hi * 10 + lo


def _to_bcd(n: int) -> int:
    return ((n // 10) << 4) | (n % 10)


def decoder(a: S7Address) -> Decoder:
    """A function decoding this address's value from a buffer at an offset (raises ValueDecodeError)."""
    t = a.s7type
    if t == "BOOL":
        mask = 1 << a.bit
        return lambda buf, off: bool(buf[off] & mask)
    spec = TYPES[t]
    if spec.fmt:
        if a.count > 1:
            st = struct.Struct(f">{a.count}{spec.fmt}")
            return lambda buf, off: list(st.unpack_from(buf, off))
        unpack = struct.Struct(">" + spec.fmt).unpack_from
        return lambda buf, off: unpack(buf, off)[0]
    return _SPECIAL_DECODERS[t](a)


def _dec_string(a: S7Address) -> Decoder:
    n = a.strlen

    def dec(buf: bytes, off: int) -> str:
        maxlen, cur = buf[off], buf[off + 1]
        if maxlen != n:
            raise ValueDecodeError(f"STRING max-length byte is {maxlen}, the tag says STRING[{n}] "
                                   "(wrong offset or length in the address?)")
        if cur > maxlen:
            raise ValueDecodeError(f"STRING actual length {cur} exceeds its max length {maxlen}")
        return bytes(buf[off + 2:off + 2 + cur]).decode("latin-1")
    return dec


def _dec_wstring(a: S7Address) -> Decoder:
    n = a.strlen

    def dec(buf: bytes, off: int) -> str:
        maxlen, cur = struct.unpack_from(">HH", buf, off)
        if maxlen != n:
            raise ValueDecodeError(f"WSTRING max-length word is {maxlen}, the tag says WSTRING[{n}] "
                                   "(wrong offset or length in the address?)")
        if cur > maxlen:
            raise ValueDecodeError(f"WSTRING actual length {cur} exceeds its max length {maxlen}")
        try:
            return bytes(buf[off + 4:off + 4 + 2 * cur]).decode("utf-16-be")
        except UnicodeDecodeError as exc:
            raise ValueDecodeError(f"WSTRING is not valid UTF-16: {exc}") from None
    return dec


def _dec_char(a: S7Address) -> Decoder:
    return lambda buf, off: bytes(buf[off:off + 1]).decode("latin-1")


def _dec_wchar(a: S7Address) -> Decoder:
    def dec(buf: bytes, off: int) -> str:
        try:
            return bytes(buf[off:off + 2]).decode("utf-16-be")
        except UnicodeDecodeError as exc:
            raise ValueDecodeError(f"WCHAR is not valid UTF-16: {exc}") from None
    return dec


def _dec_date(a: S7Address) -> Decoder:
    def dec(buf: bytes, off: int) -> str:
        days = struct.unpack_from(">H", buf, off)[0]
        try:
            return (_EPOCH_DATE + dt.timedelta(days=days)).isoformat()
        except OverflowError:
            raise ValueDecodeError(f"DATE {days} days is out of range") from None
    return dec


def _dec_tod(a: S7Address) -> Decoder:
    def dec(buf: bytes, off: int) -> str:
        ms = struct.unpack_from(">I", buf, off)[0]
        if ms >= 86_400_000:
            raise ValueDecodeError(f"TIME_OF_DAY {ms} ms is not within a day")
        return format_tod(ms)
    return dec


def format_tod(ms: int) -> str:
    """Milliseconds since midnight as ``HH:MM:SS.mmm``."""
    s, msec = divmod(ms, 1000)
    m, sec = divmod(s, 60)
    h, mi = divmod(m, 60)
    return f"{h:02d}:{mi:02d}:{sec:02d}.{msec:03d}"


def _dec_dt(a: S7Address) -> Decoder:
    def dec(buf: bytes, off: int) -> str:
        b = buf[off:off + 8]
        yy = _bcd(b[0])
        year = 1900 + yy if yy >= 90 else 2000 + yy
        msec = _bcd(b[6]) * 10 + ((b[7] >> 4) if (b[7] >> 4) <= 9 else _bad_bcd(b[7]))
        try:
            value = dt.datetime(year, _bcd(b[1]), _bcd(b[2]), _bcd(b[3]), _bcd(b[4]), _bcd(b[5]), msec * 1000)
        except ValueError as exc:
            raise ValueDecodeError(f"DATE_AND_TIME is not a valid date/time: {exc}") from None
        return value.isoformat(timespec="milliseconds")
    return dec


def _bad_bcd(b: int) -> int:
    raise ValueDecodeError(f"invalid BCD byte 0x{b:02x}")


def _dec_dtl(a: S7Address) -> Decoder:
    st = struct.Struct(">HBBBBBBI")

    def dec(buf: bytes, off: int) -> str:
        year, month, day, _wd, hour, minute, sec, ns = st.unpack_from(buf, off)
        if ns > 999_999_999:
            raise ValueDecodeError(f"DTL nanoseconds {ns} out of range")
        try:
            value = dt.datetime(year, month, day, hour, minute, sec, ns // 1000)
        except ValueError as exc:
            raise ValueDecodeError(f"DTL is not a valid date/time: {exc}") from None
        return value.isoformat(timespec="microseconds")
    return dec


def _dec_timer(a: S7Address) -> Decoder:
    def dec(buf: bytes, off: int) -> int:
        w = struct.unpack_from(">H", buf, off)[0]
        base = _S5_BASES_MS[(w >> 12) & 0x3]
        digits = w & 0x0FFF
        return (_bcd(digits >> 4) * 10 + _bcd_digit(digits & 0xF)) * base
    return dec


def _bcd_digit(d: int) -> int:
    if d > 9:
        raise ValueDecodeError(f"invalid BCD digit {d}")
    return d


def _dec_counter(a: S7Address) -> Decoder:
    def dec(buf: bytes, off: int) -> int:
        w = struct.unpack_from(">H", buf, off)[0] & 0x0FFF
        return _bcd_digit(w >> 8) * 100 + _bcd_digit((w >> 4) & 0xF) * 10 + _bcd_digit(w & 0xF)
    return dec


_SPECIAL_DECODERS: dict[str, Callable[[S7Address], Decoder]] = {
    "STRING": _dec_string, "WSTRING": _dec_wstring, "CHAR": _dec_char, "WCHAR": _dec_wchar, "DATE": _dec_date,
    "TOD": _dec_tod, "DT": _dec_dt, "DTL": _dec_dtl, "TIMER": _dec_timer, "COUNTER": _dec_counter,
}


# -- encoding (writes) -------------------------------------------------------------------------------
def encode(a: S7Address, value: Any) -> bytes:
    """The bytes to write for a value (BOOL: one byte 0/1 for a bit write); ValueError when it does not fit."""
    t = a.s7type
    if t == "BOOL":
        if not isinstance(value, bool):
            raise ValueError(f"expected a boolean, found {value!r}")
        return b"\x01" if value else b"\x00"
    spec = TYPES[t]
    if spec.fmt:
        values = value if a.count > 1 else [value]
        if a.count > 1 and (not isinstance(value, list) or len(value) != a.count):
            raise ValueError(f"expected a list of {a.count} values, found {value!r}")
        out = []
        for v in values:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ValueError(f"expected a number, found {v!r}")
            if spec.fmt in "fd":
                out.append(float(v))
            else:
                if isinstance(v, float):
                    if not v.is_integer():
                        raise ValueError(f"expected an integer, found {v!r}")
                    v = int(v)
                out.append(v)
        try:
            return struct.pack(f">{len(out)}{spec.fmt}", *out)
        except (struct.error, OverflowError) as exc:
            raise ValueError(f"{value!r} does not fit {a.type_text}: {exc}") from None
    return _SPECIAL_ENCODERS[t](a, value)


def _enc_string(a: S7Address, value: Any) -> bytes:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, found {value!r}")
    try:
        data = value.encode("latin-1")
    except UnicodeEncodeError:
        raise ValueError("expected latin-1 characters for an S7 STRING (use WSTRING for others)") from None
    if len(data) > a.strlen:
        raise ValueError(f"expected at most {a.strlen} characters for STRING[{a.strlen}], found {len(data)}")
    return bytes([a.strlen, len(data)]) + data  # the max-length byte stays what the PLC declared


def _enc_wstring(a: S7Address, value: Any) -> bytes:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, found {value!r}")
    data = value.encode("utf-16-be", errors="surrogatepass")
    n = len(data) // 2
    if n > a.strlen:
        raise ValueError(f"expected at most {a.strlen} UTF-16 units for WSTRING[{a.strlen}], found {n}")
    return struct.pack(">HH", a.strlen, n) + data


def _enc_char(a: S7Address, value: Any) -> bytes:
    if not isinstance(value, str) or len(value) != 1:
        raise ValueError(f"expected one character, found {value!r}")
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        raise ValueError("expected a latin-1 character for CHAR (WCHAR for others)") from None


def _enc_wchar(a: S7Address, value: Any) -> bytes:
    if not isinstance(value, str) or len(value) != 1 or ord(value) > 0xFFFF:
        raise ValueError(f"expected one character of the Basic Multilingual Plane, found {value!r}")
    return value.encode("utf-16-be")


def _parse_dt(value: Any) -> dt.datetime:
    if not isinstance(value, str):
        raise ValueError(f"expected an RFC 3339 date/time string, found {value!r}")
    try:
        d = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"expected an RFC 3339 date/time such as \"2024-05-01T12:30:00\", found {value!r}") from None
    return d.replace(tzinfo=None)


def _enc_date(a: S7Address, value: Any) -> bytes:
    days = (_parse_dt(value).date() - _EPOCH_DATE).days
    if not 0 <= days <= 65535:
        raise ValueError(f"expected a DATE between 1990-01-01 and 2169-06-06, found {value!r}")
    return struct.pack(">H", days)


def parse_tod(value: Any) -> int:
    """``HH:MM:SS[.mmm]`` (or an integer of milliseconds) -> milliseconds since midnight."""
    if isinstance(value, int) and not isinstance(value, bool):
        ms = value
    elif isinstance(value, str):
        try:
            t = dt.time.fromisoformat(value)
        except ValueError:
            raise ValueError(f"expected a time of day \"HH:MM:SS.mmm\", found {value!r}") from None
        ms = ((t.hour * 60 + t.minute) * 60 + t.second) * 1000 + t.microsecond // 1000
    else:
        raise ValueError(f"expected a time of day \"HH:MM:SS.mmm\", found {value!r}")
    if not 0 <= ms < 86_400_000:
        raise ValueError(f"expected a time of day within 24 h, found {value!r}")
    return ms


def _enc_tod(a: S7Address, value: Any) -> bytes:
    return struct.pack(">I", parse_tod(value))


def _enc_dt(a: S7Address, value: Any) -> bytes:
    d = _parse_dt(value)
    if not 1990 <= d.year <= 2089:
        raise ValueError(f"expected a DATE_AND_TIME between 1990 and 2089, found {value!r}")
    ms = d.microsecond // 1000
    weekday = d.isoweekday() % 7 + 1  # S7: 1 = Sunday
    return bytes([_to_bcd(d.year % 100), _to_bcd(d.month), _to_bcd(d.day), _to_bcd(d.hour), _to_bcd(d.minute),
                  _to_bcd(d.second), _to_bcd(ms // 10), ((ms % 10) << 4) | weekday])


def _enc_dtl(a: S7Address, value: Any) -> bytes:
    d = _parse_dt(value)
    if not 1970 <= d.year <= 2262:
        raise ValueError(f"expected a DTL between 1970 and 2262, found {value!r}")
    return struct.pack(">HBBBBBBI", d.year, d.month, d.day, d.isoweekday() % 7 + 1, d.hour, d.minute, d.second,
                       d.microsecond * 1000)


def _enc_timer(a: S7Address, value: Any) -> bytes:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"expected milliseconds 0..9990000, found {value!r}")
    for code, base in enumerate(_S5_BASES_MS):
        if value % base == 0 and value // base <= 999:
            n = value // base
            return struct.pack(">H", (code << 12) | ((n // 100) << 8) | (((n // 10) % 10) << 4) | (n % 10))
    raise ValueError(f"{value} ms is not an S5TIME (10 ms steps up to 9.99 s, 100 ms to 99.9 s, 1 s to 999 s, "
                     "10 s to 9990 s)")


def _enc_counter(a: S7Address, value: Any) -> bytes:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 999:
        raise ValueError(f"expected a counter value 0..999, found {value!r}")
    return struct.pack(">H", ((value // 100) << 8) | (((value // 10) % 10) << 4) | (value % 10))


_SPECIAL_ENCODERS: dict[str, Callable[[S7Address, Any], bytes]] = {
    "STRING": _enc_string, "WSTRING": _enc_wstring, "CHAR": _enc_char, "WCHAR": _enc_wchar, "DATE": _enc_date,
    "TOD": _enc_tod, "DT": _enc_dt, "DTL": _enc_dtl, "TIMER": _enc_timer, "COUNTER": _enc_counter,
}
