"""Write safety: a value for a tag is checked (writable, type, range) before any driver sees it."""
from __future__ import annotations

import datetime as dt_mod
import json
import math
from dataclasses import replace
from typing import Any

from edged.echo import echo
from edged.errors import WriteRefused
from edged.tag import DataType, Tag

# The longest string any write may carry, in characters, when the tag's driver states no smaller bound
# (a driver states one as ``max_length`` or ``length`` on the tag's parsed address, e.g. Modbus ``length``).
MAX_STRING_WRITE = 4096


def string_limit(tag: Tag) -> int:
    """The most characters a write to this string tag may carry (the driver's bound, at most MAX_STRING_WRITE)."""
    for attr in ("max_length", "length"):
        n = getattr(tag.addr, attr, None)
        if isinstance(n, int) and not isinstance(n, bool) and n > 0:
            return min(n, MAX_STRING_WRITE)
    return MAX_STRING_WRITE


MAX_ARRAY_WRITE = 65_536  # elements of one array write
MAX_RECORD_WRITE = 64 * 1024  # characters of a record (struct) write, as JSON


def coerce_value(tag: Tag, value: Any) -> Any:
    """Convert a user or upstream value (bool, number or numeric string) to the tag's engineering type."""
    dt = tag.dtype
    if dt is DataType.DATETIME:
        if not isinstance(value, str) or len(value) > 64:
            raise WriteRefused(f"{tag.key}: expected an RFC 3339 date and time such as \"2026-12-02T10:15:00Z\", "
                               f"got {echo(value)}")
        try:
            dt_mod.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise WriteRefused(f"{tag.key}: expected an RFC 3339 date and time such as \"2026-12-02T10:15:00Z\", "
                               f"got {echo(value)}") from None
        return value
    if dt is DataType.STRUCT:
        if not isinstance(value, dict):
            raise WriteRefused(f"{tag.key}: expected a record (a JSON object), got {echo(value)}")
        try:
            size = len(json.dumps(value))
        except (TypeError, ValueError, RecursionError):
            raise WriteRefused(f"{tag.key}: expected a record of JSON values, got {echo(value)}") from None
        if size > MAX_RECORD_WRITE:
            raise WriteRefused(f"{tag.key}: expected a record of at most {MAX_RECORD_WRITE} characters as JSON, "
                               f"got {size}")
        return value
    if dt is DataType.ANY:  # the device checks the type it said at connect; here only what no device takes
        if isinstance(value, str):
            return coerce_value(replace(tag, dtype=DataType.STRING), value)
        if isinstance(value, float) and not math.isfinite(value):
            raise WriteRefused(f"{tag.key}: expected a finite number, got {echo(value)}")
        if not isinstance(value, (bool, int, float)):
            raise WriteRefused(f"{tag.key}: expected a boolean, number or string, got {echo(value)}")
        return value
    if dt is DataType.STRING:
        if not isinstance(value, str):
            raise WriteRefused(f"{tag.key}: expected a string, got {echo(value)}")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate, e.g. JSON "\udddd": no device or response can carry it
            raise WriteRefused(f"{tag.key}: expected Unicode text, got a string with a lone surrogate: "
                               f"{echo(value)}") from None
        limit = string_limit(tag)
        if len(value) > limit:
            raise WriteRefused(f"{tag.key}: expected a string of at most {limit} characters, "
                               f"got {len(value)} characters: {echo(value)}")
        return value
    if dt is DataType.BOOL:
        if isinstance(value, bool):
            return value
        if isinstance(value, (int, float)) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "on", "off"):
            return value.lower() in ("true", "1", "on")
        raise WriteRefused(f"{tag.key}: expected a boolean, got {echo(value)}")
    if isinstance(value, bool):
        raise WriteRefused(f"{tag.key}: expected a number, got {echo(value)}")
    if isinstance(value, str):
        try:
            value = int(value) if value.strip().lstrip("+-").isdigit() else float(value)
        except ValueError:
            raise WriteRefused(f"{tag.key}: expected a number, got {echo(value)}") from None
    if not isinstance(value, (int, float)):
        raise WriteRefused(f"{tag.key}: expected a number, got {echo(value)}")
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        raise WriteRefused(f"{tag.key}: expected a finite number, got {echo(value)}")
    return value


def check_write(tag: Tag, value: Any) -> Any:
    """Return the engineering value to write, or raise WriteRefused saying why not."""
    if not tag.writable:
        raise WriteRefused(f"{tag.key}: tag is read-only (set access = \"write\" to allow writes)")
    if tag.dims:
        n = math.prod(tag.dims)
        if not isinstance(value, list) or len(value) != n or n > MAX_ARRAY_WRITE:
            raise WriteRefused(f"{tag.key}: expected an array of {n} values (dims {list(tag.dims)}), got {echo(value)}")
        element = replace(tag, dims=())  # every element is checked like a scalar of the tag (type, min, max)
        return [check_write(element, v) for v in value]
    value = coerce_value(tag, value)
    if tag.dtype is DataType.ANY and isinstance(value, (int, float)) and not isinstance(value, bool):
        if tag.min is not None and value < tag.min:
            raise WriteRefused(f"{tag.key}: {echo(value)} is below min {tag.min:g}")
        if tag.max is not None and value > tag.max:
            raise WriteRefused(f"{tag.key}: {echo(value)} is above max {tag.max:g}")
    if tag.dtype.is_numeric:
        if tag.min is not None and value < tag.min:
            raise WriteRefused(f"{tag.key}: {echo(value)} is below min {tag.min:g}")
        if tag.max is not None and value > tag.max:
            raise WriteRefused(f"{tag.key}: {echo(value)} is above max {tag.max:g}")
        try:
            raw = tag.to_raw(value)
        except OverflowError:  # scale and offset took the raw value beyond any float
            raise WriteRefused(f"{tag.key}: {echo(value)} is outside the range of {tag.dtype.value} "
                               f"after scale {tag.scale:g} and offset {tag.offset:g}") from None
        if tag.dtype.is_integer and not tag.scaled and isinstance(value, float) and not value.is_integer():
            raise WriteRefused(f"{tag.key}: expected an integer for type {tag.dtype.value}, got {echo(value)}")
        lo, hi = tag.dtype.limits  # type: ignore[misc]
        if not lo <= raw <= hi:
            raise WriteRefused(f"{tag.key}: raw value {echo(raw)} is outside the range of {tag.dtype.value} "
                               f"[{lo:g}, {hi:g}]")
        if tag.dtype.is_integer and not tag.scaled:
            return int(value)
    return value
