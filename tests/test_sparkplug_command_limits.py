"""Issue 8 for the Sparkplug sink, against real mosquitto: an NCMD/DCMD over max_command_bytes is refused
undecoded, a flood of refused commands gives few log lines (the rest counted), and the session survives;
a STATE message nested too deeply is ignored."""
from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from mosquitto_support import Broker, Collector, mosquitto  # noqa: F401
from test_sparkplug_sink import Harness, of, until, until_true
from test_sparkplug_wire import INT16, STRING, encode_command

from edged.sinks.sparkplug import parse_state

DCMD = "spBv1.0/plant/DCMD/cell1/press1"


async def test_oversized_and_flooding_commands(tmp_path: Path, mosquitto: Broker,  # noqa: F811
                                               caplog: pytest.LogCaptureFixture) -> None:
    """Too large: refused unread; 300 unknown metrics: counted, few lines logged; a valid write still lands."""
    h = Harness(tmp_path, mosquitto, max_command_bytes=1024)
    h.scan("press1.setpoint", 100)
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="host-flood")
    client.connect(mosquitto.host, mosquitto.port)
    client.loop_start()
    with Collector(mosquitto, "spBv1.0/#", client_id="sp-limits") as col, \
            caplog.at_level(logging.INFO, logger="edged.audit"):
        h.start()
        try:
            await until(col, lambda m: len(of(m, "DBIRTH")) == 2, "births")
            big = encode_command([("label", None, STRING, "x" * 5000)])
            client.publish(DCMD, big, qos=1).wait_for_publish(30)
            await until_true(lambda: h.metric("edged_commands_total", result="refused", reason="too_large") == 1,
                             "the oversized DCMD refused")
            for i in range(300):
                client.publish(DCMD, encode_command([(f"nope{i}\n{{forged", None, INT16, 1)]), qos=0)
            client.publish(DCMD, encode_command([("nope-last", None, INT16, 1)]), qos=1).wait_for_publish(30)
            await until_true(lambda: h.metric("edged_commands_total", result="refused", reason="unknown_metric")
                             == 301, "301 refusals counted")
            suppressed = h.metric("edged_command_refusals_suppressed_total")
            logged = [r.getMessage() for r in caplog.records if "write refused" in r.getMessage()]
            assert suppressed >= 150 and len(logged) + suppressed == 302, (suppressed, len(logged))
            assert not any("\n" in line for line in logged), logged
            await asyncio.sleep(1.5)  # the refusal bucket refills (5/s): the write below is not a refusal anyway
            client.publish(DCMD, encode_command([("setpoint", None, INT16, 321)]), qos=1).wait_for_publish(30)
            await until_true(lambda: ("press1.setpoint", 321) in [(k, v) for k, v, _ in h.writes], "the write")
            assert h.metric("edged_sink_connects_total") == 1.0, "a command ended the session"
        finally:
            client.loop_stop()
            client.disconnect()
            await h.stop()


@pytest.mark.parametrize("payload", [b"[" * 100_000, b"[" * 3000, b'{"online": true, "x": "' + b"a" * 5000 + b'"}'])
def test_a_state_message_nested_too_deeply_or_too_large_is_ignored(payload: bytes) -> None:
    """Anyone may publish on a STATE topic: deep JSON gives None (was a RecursionError ending the session)."""
    assert parse_state(payload) is None
    assert parse_state(b'{"online": true, "timestamp": 5}') == (True, 5)
