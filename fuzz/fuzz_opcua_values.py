"""Fuzz target: any Variant from the wire converts to an edged value of a tag's type, or fails with ValueError_."""
from __future__ import annotations

import json

from asyncua.common.utils import Buffer
from asyncua.ua.ua_binary import variant_from_binary

from edged.drivers.opcua.values import ValueError_, to_edged
from edged.tag import DataType

EXPECTED = (ValueError_,)
_TYPES = list(DataType)
SEEDS = [
    bytes([0x0B]) + bytes([11]) + (1.5).hex().encode(),  # junk after a Double tag: decoder decides
    bytes([0x06, 0x06]) + (42).to_bytes(4, "little"),  # int16 tag, Int32 variant 42
    bytes([0x81, 0x0B | 0x80]) + (2).to_bytes(4, "little") + bytes(16),  # array of two Doubles, array tag
    bytes([0x0C, 0x0C]) + (3).to_bytes(4, "little") + b"RUN",  # string
    bytes([0x0E, 0x0D]) + bytes(8),  # DateTime 1601
    bytes([0x0F, 0x16]) + bytes(7),  # ExtensionObject (struct)
]


def TARGET(data: bytes) -> None:
    """First byte: the tag's type (low bits) and whether it is an array (0x80); the rest: a binary Variant."""
    if not data:
        return
    sel, body = data[0], data[1:]
    if len(body) >= 5 and body[0] & 0x80 and int.from_bytes(body[1:5], "little", signed=True) > len(body):
        # an array longer than the input: asyncua's decoder would build it from nothing (Null elements take
        # no bytes), using gigabytes; the driver sees such values only as far as asyncua decodes them
        return
    try:
        variant = variant_from_binary(Buffer(body))
    except Exception:  # asyncua's decoder rejects the bytes: not the conversion under test
        return
    dtype = _TYPES[(sel & 0x7F) % len(_TYPES)]
    out = to_edged(variant.Value, dtype, bool(sel & 0x80))
    json.dumps(out, allow_nan=True)  # every converted value is JSON-ready
