"""Encoding of a chunk of samples for the spool: compact JSON arrays, stable across Python versions."""
from __future__ import annotations

import json
import logging
from typing import Any, Sequence

from edged.tag import Sample

log = logging.getLogger("edged.spool")
_warned: set[str] = set()


def _fallback(value: Any) -> Any:
    """Values JSON cannot carry (bytes, odd objects) become strings, with one warning per type."""
    name = type(value).__name__
    if name not in _warned:
        _warned.add(name)
        log.warning("spool: sample value of type %s stored as a string", name)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    return str(value)


_encoder = json.JSONEncoder(separators=(",", ":"), default=_fallback, check_circular=False)


def encode_chunk(samples: Sequence[Sample]) -> bytes:
    """Encode samples as a JSON array of ``[ts_ns, device, tag, value, quality]`` arrays."""
    return _encoder.encode(samples if isinstance(samples, list) else list(samples)).encode()


def decode_chunk(blob: bytes) -> list[Sample]:
    """Decode a chunk written by encode_chunk."""
    return [Sample(*row) for row in json.loads(blob)]
