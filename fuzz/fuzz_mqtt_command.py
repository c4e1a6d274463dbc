"""Fuzz target: an MQTT command payload through parse_command and the CommandGate, as the MQTT sink serves it.

Besides raising nothing, every input must give an answer that encodes as JSON and stays small, and
audit lines without a line break and of bounded length (issue 8: no forged or megabyte log lines).
"""
from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry

from edged.sinks.base import SinkContext, WriteResult
from edged.sinks.mqtt import REQUEST_SHAPE, Refusal, _encoder, _value, parse_command
from edged.tag import Access, DataType, Tag
from edged.upstream.commands import CommandGate

EXPECTED = ()
MAX_BYTES = 4096
SEEDS = [
    b'{"value": 250, "id": "r1"}', b'{"value": "on"}', b'{"value": true, "id": 7}', b'{"value": 1.5e3}',
    b'{"value": "hello", "id": "s"}', b'{"value": [1, 2]}', b'{"value": {"a": null}}', b'{"id": "x"}',
    b'{"value": NaN}', b'{"value": -Infinity}', b'{"value": 123456789012345678901234567890}',
    b'{"value": "\\u2028\\n", "id": "\\"}\\n{\\"inj\\":1"}', b"[" * 2000, b'{"value":' + b"[" * 900,
    b"\xff\xfe", b"", b"null",
    b'{"value": "\\udddd", "id": "\\ud800"}',  # found by this target: a lone surrogate broke the answer
]


@dataclass
class _Tagged:
    """A parsed address with a string length, like Modbus's."""

    length: int


def _tag(name: str, dtype: DataType, **kw: Any) -> Tag:
    addr = kw.pop("addr", None)
    return Tag(device="d", name=name, address="x", dtype=dtype, scan="default", addr=addr, access=Access.WRITE, **kw)


TAGS = {t.key: t for t in [
    _tag("u16", DataType.UINT16, min=0, max=1000),
    _tag("i64", DataType.INT64),
    _tag("f32", DataType.FLOAT32, scale=0.001, offset=-5.0),
    _tag("f64", DataType.FLOAT64),
    _tag("flag", DataType.BOOL),
    _tag("text", DataType.STRING, addr=_Tagged(8)),
    _tag("free", DataType.STRING),
]}
KEYS = sorted(TAGS) + ["d.missing"]


async def _write(key: str, value: Any, source: str) -> WriteResult:
    return WriteResult(True, key, value, old_value=None)


class _Lines(logging.Handler):
    """Keeps the formatted audit lines of one input."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


LINES = _Lines()
LOGGERS = [logging.getLogger(name) for name in ("edged.audit", "edged.commands")]
LOOP = asyncio.new_event_loop()
GATE = CommandGate(SinkContext(cell_name="c", tags=TAGS, write=_write, registry=CollectorRegistry()), "up",
                   rate_per_s=1e9, burst=1_000_000)


def TARGET(data: bytes) -> None:  # noqa: N802 - the harness convention
    """Parse one payload and serve it to a tag picked by its first byte; check the answer and the log lines."""
    LINES.lines.clear()
    saved = [(lg.level, lg.propagate) for lg in LOGGERS]
    for lg in LOGGERS:  # only for this input: a test run in the same process keeps its own logging
        lg.addHandler(LINES)
        lg.setLevel(logging.INFO)
        lg.propagate = False
    try:
        _serve(data)
    finally:
        for lg, (level, propagate) in zip(LOGGERS, saved):
            lg.removeHandler(LINES)
            lg.setLevel(level)
            lg.propagate = propagate


def _serve(data: bytes) -> None:
    request = parse_command(data, MAX_BYTES)
    key = KEYS[data[0] % len(KEYS)] if data else KEYS[0]
    if isinstance(request, Refusal):
        assert request.error.startswith(REQUEST_SHAPE) or request.reason == "too_large", request
        result = GATE.refuse(key, request.value, "mqtt:up", request.request_id, request.reason, request.error)
    else:
        result = LOOP.run_until_complete(GATE.execute(key, request.value, "mqtt:up", request.request_id))
    answer: dict[str, Any] = {"id": request.request_id, "ok": result.ok, "tag": key}
    if result.ok:
        answer.update(value=_value(result.value), old_value=_value(result.old_value))
    else:
        answer["error"] = result.error
    encoded = _encoder.encode(answer).encode()
    json.loads(encoded)
    assert len(encoded) < 2 * MAX_BYTES + 1024, f"answer of {len(encoded)} bytes"
    for line in LINES.lines:
        assert "\n" not in line and "\r" not in line, f"a log line breaks: {line[:200]!r}"
        assert len(line) < 2000, f"log line of {len(line)} characters"
