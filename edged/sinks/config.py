"""The [sink.<name>] tables: each `type` is a module in edged.sinks with parse_spec() and SINK_CLASS."""
from __future__ import annotations

import importlib
from typing import Any

from edged.schema import Section
from edged.tag import Tag

SINK_TYPES = {"jsonl": "edged.sinks.jsonl", "mqtt": "edged.sinks.mqtt", "sparkplug": "edged.sinks.sparkplug"}


def sink_module(kind: str) -> Any:
    """The module implementing a sink type."""
    return importlib.import_module(SINK_TYPES[kind])


def parse_sinks(secs: dict[str, Section], tags: dict[str, Tag]) -> list[Any]:
    """Read every sink table; with none configured, the local JSON-lines sink is the default."""
    out = []
    for name, sec in secs.items():
        kind = sec.get_str("type", choices=list(SINK_TYPES))
        if kind is None:
            sec.finish(also_known=sec.keys())
            continue
        spec = sink_module(kind).parse_spec(name, sec, tags)
        sec.finish()
        if spec is not None:
            out.append(spec)
    if not secs:
        out.append(sink_module("jsonl").default_spec())
    return out


def build_sink(spec: Any, spool: Any, ctx: Any) -> Any:
    """Instantiate the sink for a parsed spec."""
    return sink_module(spec.kind).SINK_CLASS(spec, spool, ctx)
