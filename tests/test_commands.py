"""Writes from upstream: the CommandGate's checks, rate limit, audit and metrics; MQTT commands through the
real daemon to a real pymodbus server (valid writes land, refused ones write nothing)."""
from __future__ import annotations

import asyncio
import json
import logging
import signal
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from prometheus_client import CollectorRegistry
from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import SimData, SimDevice

from daemon_support import Proc, metric, scrape
from edged.sinks.base import SinkContext, WriteResult
from edged.tag import Access, DataType, Tag
from edged.upstream.commands import CommandGate
from mosquitto_support import Broker, Collector, free_port, mosquitto  # noqa: F401


def mk_tag(name: str, dtype: DataType = DataType.UINT16, access: Access = Access.WRITE,
           vmin: float | None = 0, vmax: float | None = 1000) -> Tag:
    return Tag(device="press1", name=name, address="hr:0", dtype=dtype, scan="default", addr=None, access=access,
               min=vmin, max=vmax)


class Recorder:
    """Stands in for the runtime's tag writer: records what reached it."""

    def __init__(self, ok: bool = True) -> None:
        self.calls: list[tuple[str, Any, str]] = []
        self.ok = ok

    async def __call__(self, key: str, value: Any, source: str) -> WriteResult:
        self.calls.append((key, value, source))
        if not self.ok:
            return WriteResult(False, key, value, error=f"{key}: write failed: device timeout")
        return WriteResult(True, key, value, old_value=7)


def gate_with(tags: list[Tag], writer: Recorder, **kw: Any) -> tuple[CommandGate, CollectorRegistry]:
    reg = CollectorRegistry()
    ctx = SinkContext(cell_name="line", tags={t.key: t for t in tags}, write=writer, registry=reg)
    return CommandGate(ctx, "up", **kw), reg


def count(reg: CollectorRegistry, result: str, reason: str) -> float:
    return reg.get_sample_value("edged_commands_total", {"sink": "up", "result": result, "reason": reason}) or 0.0


async def test_valid_write_is_executed_audited_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    w = Recorder()
    gate, reg = gate_with([mk_tag("sp")], w)
    with caplog.at_level(logging.INFO, logger="edged.audit"):
        res = await gate.execute("press1.sp", "250", source="mqtt:up", request_id="r1")
    assert res.ok and res.value == 250 and res.old_value == 7
    assert w.calls == [("press1.sp", 250, "mqtt:up")]
    assert count(reg, "accepted", "") == 1
    line = next(r.getMessage() for r in caplog.records if r.name == "edged.audit")
    assert "source=mqtt:up" in line and "id=r1" in line and "tag=press1.sp" in line and "old=7" in line \
        and "new=250" in line


@pytest.mark.parametrize("key, value, reason, message", [
    ("press1.nope", 1, "unknown_tag", "unknown tag 'press1.nope'"),
    ("press1.ro", 1, "read_only", "press1.ro: tag is read-only"),
    ("press1.sp", 5000, "invalid_value", "press1.sp: 5000 is above max 1000"),
    ("press1.sp", -1, "invalid_value", "press1.sp: -1 is below min 0"),
    ("press1.sp", "hot", "invalid_value", "press1.sp: expected a number, got 'hot'"),
    ("press1.sp", 1.5, "invalid_value", "press1.sp: expected an integer for type uint16"),
    ("press1.sp", None, "invalid_value", "press1.sp: expected a number, got None"),
])
async def test_refusals_say_why_and_write_nothing(key: str, value: Any, reason: str, message: str,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    w = Recorder()
    gate, reg = gate_with([mk_tag("sp"), mk_tag("ro", access=Access.READ)], w)
    with caplog.at_level(logging.INFO, logger="edged.audit"):
        res = await gate.execute(key, value, source="mqtt:up", request_id="x9")
    assert not res.ok and message in res.error
    assert w.calls == []
    assert count(reg, "refused", reason) == 1
    assert any(f"reason={reason}" in r.getMessage() and "id=x9" in r.getMessage() for r in caplog.records)


async def test_rate_limit_is_per_tag() -> None:
    w = Recorder()
    gate, reg = gate_with([mk_tag("sp"), mk_tag("sp2")], w, rate_per_s=0.001, burst=2)
    results = [await gate.execute("press1.sp", i, source="t") for i in range(4)]
    assert [r.ok for r in results] == [True, True, False, False]
    assert "rate limit" in results[2].error
    assert (await gate.execute("press1.sp2", 1, source="t")).ok  # another tag has its own bucket
    assert count(reg, "refused", "rate_limited") == 2 and len(w.calls) == 3


async def test_a_failed_device_write_is_reported_and_counted() -> None:
    gate, reg = gate_with([mk_tag("sp")], Recorder(ok=False))
    res = await gate.execute("press1.sp", 3, source="t")
    assert not res.ok and "device timeout" in res.error
    assert count(reg, "failed", "write_error") == 1


# -- through the daemon: MQTT command -> edged -> Modbus server ---------------------------------------------
class Registers:
    """A pymodbus datastore of 10 holding registers at unit 1 that records every write."""

    def __init__(self) -> None:
        self.hr = [0] * 10
        self.hr[1] = 215  # press1.temp, read-only
        self.writes: list[tuple[int, list[int]]] = []

    def device_ids(self) -> list[int]:
        return [1]

    async def async_getValues(self, device_id: int, func_code: int, address: int, count: int = 1):  # noqa: N802
        if func_code not in (3, 4, 6, 16) or address + count > len(self.hr):
            return ExcCodes.ILLEGAL_ADDRESS
        return self.hr[address:address + count]

    async def async_setValues(self, device_id: int, func_code: int, address: int, values: list[int]):  # noqa: N802
        if address + len(values) > len(self.hr):
            return ExcCodes.ILLEGAL_ADDRESS
        self.writes.append((address, list(values)))
        self.hr[address:address + len(values)] = [int(v) for v in values]
        return None


def command_cell(tmp_path: Path, broker: Broker, modbus_port: int, metrics_port: int) -> Path:
    path = tmp_path / "cell.toml"
    path.write_text(f"""
[cell]
name = "line"
state_dir = "state"

[metrics]
listen = "127.0.0.1:{metrics_port}"

[scan.fast]
interval_ms = 50

[device.press1]
driver = "modbus"
host = "127.0.0.1"
port = {modbus_port}
unit_id = 1
timeout_s = 2.0

[device.press1.tag.setpoint]
address = "hr:0"
type = "uint16"
access = "write"
min = 0
max = 1000
scan = "fast"

[device.press1.tag.temp]
address = "hr:1"
type = "uint16"
scan = "fast"

[sink.up]
type = "mqtt"
port = {broker.port}
command_rate_per_s = 100
command_burst = 20
""")
    return path


async def until(cond, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        await asyncio.sleep(0.05)
    return cond()


async def test_mqtt_commands_through_the_daemon_to_a_modbus_server(tmp_path: Path, mosquitto: Broker) -> None:
    regs = Registers()
    mb_port = free_port()
    server = ModbusTcpServer(SimDevice(0, simdata=SimData(0)), address=("127.0.0.1", mb_port),
                             ignore_missing_devices=True)
    server.context = regs
    await server.serve_forever(background=True)
    metrics_port = free_port()
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    col = Collector(mosquitto, ["line/#"], client_id="sub-cmd").start()
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="operator-ui", protocol=mqtt.MQTTv311)
    pub.connect("127.0.0.1", mosquitto.port)
    pub.loop_start()
    d = Proc(["run", "-c", str(command_cell(tmp_path, mosquitto, mb_port, metrics_port))], cwd=tmp_path)
    try:
        # the device is up and its values flow upstream before we command it
        assert await until(lambda: any(m.topic == "line/press1" for m in col.snapshot())), d.stderr

        def answers() -> dict[str, dict]:
            out = {}
            for m in col.snapshot():
                if m.topic.startswith("line/cmd_result/"):
                    body = json.loads(m.payload)
                    out[body["id"]] = body
            return out

        def send(device: str, tag: str, payload: bytes) -> None:
            pub.publish(f"line/cmd/{device}/{tag}", payload, qos=1).wait_for_publish(10)

        send("press1", "setpoint", json.dumps({"value": 500, "id": "ok-1"}).encode())
        assert await until(lambda: "ok-1" in answers()), d.stderr
        assert answers()["ok-1"] == {"id": "ok-1", "ok": True, "tag": "press1.setpoint", "value": 500,
                                     "old_value": 0}
        assert regs.hr[0] == 500 and regs.writes == [(0, [500])]

        bad = [("press1", "temp", {"value": 10, "id": "ro"}, "read-only"),
               ("press1", "setpoint", {"value": 5000, "id": "range"}, "above max 1000"),
               ("press1", "nope", {"value": 1, "id": "unknown"}, "unknown tag 'press1.nope'"),
               ("press1", "setpoint", {"value": "warm", "id": "type"}, "expected a number")]
        for device, tag, body, _ in bad:
            send(device, tag, json.dumps(body).encode())
        send("press1", "setpoint", b"not json at all")
        assert await until(lambda: {"ro", "range", "unknown", "type", ""} <= set(answers())), answers()
        got = answers()
        for _, _, body, why in bad:
            assert got[body["id"]]["ok"] is False and why in got[body["id"]]["error"], got[body["id"]]
        assert "expected a JSON object" in got[""]["error"]
        await asyncio.sleep(0.3)
        assert regs.writes == [(0, [500])], "a refused command reached the device"
        assert regs.hr[1] == 215
        text = await asyncio.to_thread(scrape, url)
        assert metric(text, "edged_commands_total", sink="up", result="accepted", reason="") == 1.0
        for reason in ("read_only", "invalid_value", "unknown_tag", "bad_request"):
            assert (metric(text, "edged_commands_total", sink="up", result="refused", reason=reason) or 0) >= 1, reason
        assert metric(text, "edged_commands_total", sink="up", result="refused", reason="invalid_value") == 2.0
    finally:
        code = await asyncio.to_thread(d.stop, signal.SIGTERM, 60)
        pub.loop_stop()
        pub.disconnect()
        col.stop()
        await server.shutdown()
    assert code == 0, d.stderr
    audit = [line for line in d.err if "edged.audit" in line]
    assert any("write accepted" in line and "tag=press1.setpoint" in line and "old=0" in line and "new=500" in line
               for line in audit), audit
    assert sum("write refused" in line for line in audit) == 5, audit  # 4 refused writes and the bad request


async def test_refusals_beyond_the_sink_rate_are_counted_not_logged_or_answered(
        caplog: pytest.LogCaptureFixture) -> None:
    """One bucket per sink for refusals of any tag; the flood warning comes once, the count with the next line."""
    gate, reg = gate_with([mk_tag("sp")], Recorder(), rate_per_s=0.001, burst=3)
    with caplog.at_level(logging.INFO):
        results = [await gate.execute(f"press1.nope{i}", 1, source="t") for i in range(50)]
    assert [r.quiet for r in results] == [False] * 3 + [True] * 47
    assert all(not r.ok and "unknown tag" in r.error for r in results)
    assert count(reg, "refused", "unknown_tag") == 50
    assert reg.get_sample_value("edged_command_refusals_suppressed_total", {"sink": "up"}) == 47
    lines = [r.getMessage() for r in caplog.records]
    assert sum("write refused" in line for line in lines) == 3
    assert sum("refused commands arrive faster than" in line for line in lines) == 1
    gate.refusals.bucket.tokens = 1.0  # as if time passed: the next refusal is let through and tells the count
    with caplog.at_level(logging.INFO):
        caplog.clear()
        res = gate.refuse("press1.x", 1, "t", "", "bad_request", "bad")
    assert not res.quiet and "(47 more refusals were not logged or answered)" in caplog.records[0].getMessage()
    assert (await gate.execute("press1.sp", 5, source="t")).ok  # writes have their own per-tag buckets
