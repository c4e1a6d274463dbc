"""The [spool] table. (Initial version; the spool work replaces it.)"""
from __future__ import annotations

from dataclasses import dataclass

from edged.schema import Section


@dataclass(slots=True)
class SpoolSpec:
    """Spool limits and durability."""

    max_bytes: int = 256 * 1024 * 1024
    max_age_s: float = 7 * 86400.0
    overflow: str = "drop_oldest"
    durability: str = "batch"


def parse_spool(sec: Section | None) -> SpoolSpec:
    """Read the [spool] table (all keys optional)."""
    spec = SpoolSpec()
    if sec is None:
        return spec
    spec.max_bytes = sec.get_int("max_bytes", spec.max_bytes, min=1024) or spec.max_bytes
    spec.max_age_s = sec.get_float("max_age_s", spec.max_age_s, min=1.0) or spec.max_age_s
    spec.overflow = sec.get_str("overflow", spec.overflow, choices=["drop_oldest", "drop_newest"]) or spec.overflow
    spec.durability = sec.get_str("durability", spec.durability, choices=["batch", "os"]) or spec.durability
    sec.finish()
    return spec
