"""Fuzz target: an NCMD/DCMD payload through EdgeNode.parse_command and check_write, as the Sparkplug sink does.

The first byte picks the topic; one of them is a primary host's STATE, read by parse_state.

Decoding never raises (malformed input is one refusal); a write's value must pass or fail check_write
with WriteRefused only; every refusal's reason must be short and on one line.
"""
from __future__ import annotations

from typing import Any

from edged.echo import echo
from edged.errors import WriteRefused
from edged.sinks import sparkplug_payload as sp
from edged.sinks.sparkplug import parse_state
from edged.sinks.sparkplug_node import REBIRTH, TAG_ALIAS_BASE, EdgeNode
from edged.tag import Access, DataType, Tag
from edged.writes import check_write

EXPECTED = ()


def _tag(name: str, dtype: DataType, slot: int, device: str = "press1", **kw: Any) -> Tag:
    return Tag(device=device, name=name, address="x", dtype=dtype, scan="default", addr=None, access=Access.WRITE,
               slot=slot, **kw)


TAGS = [_tag("setpoint", DataType.INT16, 0, min=-100, max=100), _tag("speed", DataType.FLOAT32, 1, scale=0.1),
        _tag("run", DataType.BOOL, 2), _tag("label", DataType.STRING, 3), _tag("count", DataType.UINT64, 4),
        _tag("enable", DataType.BOOL, 5, device="robot")]
NODE = EdgeNode("plant", "cell1", TAGS)
TOPICS = ["spBv1.0/plant/NCMD/cell1", "spBv1.0/plant/DCMD/cell1/press1", "spBv1.0/plant/DCMD/cell1/robot",
          "spBv1.0/plant/DCMD/cell1/ghost", "spBv1.0/STATE/scada"]


def _payload(metrics: list[dict[str, Any]]) -> bytes:
    msg = sp.Payload()
    for fields in metrics:
        m = msg.metrics.add()
        for k, v in fields.items():
            setattr(m, k, v)
    return msg.SerializeToString()


SEEDS = [bytes([i]) + p for i, p in enumerate([
    _payload([{"name": REBIRTH, "datatype": int(sp.SpType.Boolean), "boolean_value": True}]),
    _payload([{"name": "setpoint", "datatype": int(sp.SpType.Int16), "int_value": 42}]),
    _payload([{"alias": TAG_ALIAS_BASE + 1, "float_value": 12.5}, {"name": "run", "boolean_value": True}]),
    _payload([{"name": "label", "datatype": int(sp.SpType.String), "string_value": "abc"}]),
    _payload([{"alias": TAG_ALIAS_BASE + 5, "datatype": int(sp.SpType.Boolean), "boolean_value": False}]),
    _payload([{"name": "count", "datatype": int(sp.SpType.UInt64), "long_value": 2**64 - 1}]),
    _payload([{"name": "setpoint", "is_null": True}, {"name": "nope", "int_value": 1}]),
])] + [b"\x04" + s for s in (b'{"online": true, "timestamp": 1700000000000}', b"OFFLINE", b"[" * 3000)]


def TARGET(data: bytes) -> None:  # noqa: N802 - the harness convention
    """The first byte picks the topic; the rest is the payload."""
    topic = TOPICS[data[0] % len(TOPICS)] if data else TOPICS[0]
    if "/STATE/" in topic:  # a primary host's STATE: JSON or ONLINE/OFFLINE, read by parse_state
        state = parse_state(data[1:])
        assert state is None or isinstance(state[0], bool) and (state[1] is None or isinstance(state[1], int))
        return
    for cmd in NODE.parse_command(topic, data[1:]):
        assert cmd.kind in ("rebirth", "write", "refused"), cmd.kind
        if cmd.kind == "refused":
            assert "\n" not in cmd.reason and len(cmd.reason) < 400, echo(cmd.reason)
        if cmd.kind == "write":
            assert cmd.tag is not None and cmd.value is not None
            try:
                check_write(cmd.tag, cmd.value)
            except WriteRefused as exc:
                assert "\n" not in str(exc) and len(str(exc)) < 400, echo(str(exc))
