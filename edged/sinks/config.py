"""The [sink.<name>] tables. (Initial version; the spool work replaces it.)"""
from __future__ import annotations

from dataclasses import dataclass

from edged.schema import Section
from edged.tag import Tag


@dataclass(slots=True)
class JsonlSinkSpec:
    """A local JSON-lines file sink."""

    name: str
    path: str = "samples.jsonl"
    max_bytes: int = 10_000_000
    keep: int = 5
    heartbeat_s: float = 60.0


def parse_sinks(secs: dict[str, Section], tags: dict[str, Tag]) -> list[JsonlSinkSpec]:
    """Read every sink table."""
    out = []
    for name, sec in secs.items():
        sec.get_str("type", choices=["jsonl"])
        spec = JsonlSinkSpec(name)
        spec.path = sec.get_str("path", spec.path) or spec.path
        spec.max_bytes = sec.get_int("max_bytes", spec.max_bytes, min=4096) or spec.max_bytes
        spec.keep = sec.get_int("keep", spec.keep, min=1, max=1000) or spec.keep
        spec.heartbeat_s = sec.get_float("heartbeat_s", spec.heartbeat_s, min=0.0) or spec.heartbeat_s
        sec.finish()
        out.append(spec)
    return out
