"""Write safety: a value for a tag is checked (writable, type, range) before any driver sees it."""
from __future__ import annotations

import math
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


def coerce_value(tag: Tag, value: Any) -> Any:
    """Convert a user or upstream value (bool, number or numeric string) to the tag's engineering type."""
    dt = tag.dtype
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
    value = coerce_value(tag, value)
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
