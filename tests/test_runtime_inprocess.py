"""The Runtime in-process against the Modbus emulator (a real pymodbus server): staleness and writes."""
from __future__ import annotations

import asyncio
import tomllib
from pathlib import Path

from daemon_support import free_port, until
from edged.driver import emulator_for
from edged.cell import parse_cell
from edged.runtime import Runtime
from edged.tag import Quality

CELL = """
[cell]
name = "s"
state_dir = "{state}"

[metrics]
enabled = false

[device.slow]
driver = "modbus"
host = "127.0.0.1"
port = {port}
timeout_s = 5.0

[device.slow.tag.level]
address = "hr:0"
type = "uint16"
scan_ms = 100

[device.slow.tag.setpoint]
address = "hr:1"
type = "int16"
access = "write"
min = -100
max = 100
scan_ms = 100
"""



def make_cell(tmp_path: Path):
    return parse_cell(tomllib.loads(CELL.format(state=tmp_path / "state", port=free_port())), "cell.toml")


async def test_values_go_uncertain_when_polls_stop_completing_and_recover(tmp_path: Path) -> None:
    cell = make_cell(tmp_path)
    drv = cell.devices["slow"].driver
    emu = emulator_for([drv])
    await emu.start()
    emu.set_value(cell.tags["slow.level"], 42)
    rt = Runtime(cell, serve_metrics=False)
    await rt.start()
    try:
        await until(lambda: rt.current.get("slow.level", (None, 2, 0))[:2] == (42, Quality.GOOD))
        emu.delay(1, 2.0)  # slower than 3 intervals and 1 s, faster than the timeout
        await until(lambda: rt.current["slow.level"][1] == Quality.UNCERTAIN)
        assert rt.current["slow.level"][0] == 42  # the last value, flagged stale
        emu.delay(1, 0.0)
        await until(lambda: rt.current["slow.level"][1] == Quality.GOOD)
    finally:
        await rt.stop()
        await emu.stop()


async def test_runtime_write_checks_then_writes_through_the_driver(tmp_path: Path) -> None:
    cell = make_cell(tmp_path)
    drv = cell.devices["slow"].driver
    emu = emulator_for([drv])
    await emu.start()
    rt = Runtime(cell, serve_metrics=False)
    await rt.start()
    try:
        await until(lambda: "slow.setpoint" in rt.current and rt.current["slow.setpoint"][1] == Quality.GOOD)
        ok = await rt.write("slow.setpoint", -100, source="test")
        assert ok.ok, ok.error
        assert emu.get_value(cell.tags["slow.setpoint"]) == -100
        for key, value, reason in [("slow.setpoint", 101, "invalid_value"), ("slow.level", 1, "read_only"),
                                   ("slow.nope", 1, "unknown_tag"), ("slow.setpoint", "x", "invalid_value")]:
            res = await rt.write(key, value, source="test")
            assert not res.ok and res.error
            assert rt.stats.writes_refused[reason] >= 1
        assert emu.get_value(cell.tags["slow.setpoint"]) == -100  # nothing refused reached the device
        assert emu.get_value(cell.tags["slow.level"]) == 0
    finally:
        await rt.stop()
        await emu.stop()


async def test_a_sink_that_fails_is_restarted_and_nothing_is_lost(tmp_path: Path, monkeypatch, caplog) -> None:
    """A bug in a sink (an exception out of run()) is logged and the sink restarted; the spool kept the data."""
    import edged.runtime as runtime_mod
    from edged.sinks.jsonl import JsonlSink

    monkeypatch.setattr(runtime_mod, "RESTART_DELAY_S", (0.05, 0.1))
    real_run = JsonlSink.run
    calls = {"n": 0}

    async def flaky_run(self) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            await asyncio.sleep(0.3)  # samples pile up in the spool meanwhile
            raise RuntimeError("injected sink bug")
        await real_run(self)

    monkeypatch.setattr(JsonlSink, "run", flaky_run)
    cell = parse_cell(tomllib.loads(f'''
[cell]
name = "f"
state_dir = "{tmp_path / 'state'}"
heartbeat_s = 0
[metrics]
enabled = false
[device.s]
driver = "sim"
[device.s.tag.n]
address = "counter"
type = "uint64"
scan_ms = 20
'''), "cell.toml")
    rt = Runtime(cell, serve_metrics=False)
    await rt.start()
    try:
        out = tmp_path / "state" / "samples.jsonl"
        await until(lambda: out.exists() and len(out.read_text().splitlines()) >= 30)
    finally:
        await rt.stop()
    import json

    values = [json.loads(x)["value"] for x in out.read_text().splitlines()]
    assert values == list(range(values[0], values[0] + len(values)))  # gap-free, in order, from the start
    assert calls["n"] >= 2
    assert "sink local failed; restarting it" in caplog.text


async def test_an_unexpected_connect_error_marks_the_device_down_and_is_retried(tmp_path: Path, monkeypatch) -> None:
    """A driver whose connect raises something other than DeviceUnavailable: down, tags bad, retried."""
    from edged.device import DeviceState
    from edged.drivers.sim.driver import SimDriver

    real_connect = SimDriver.connect
    calls = {"n": 0}

    async def broken_then_fine(self) -> None:
        calls["n"] += 1
        if calls["n"] <= 2:
            raise RuntimeError("injected library bug")
        await real_connect(self)

    monkeypatch.setattr(SimDriver, "connect", broken_then_fine)
    cell = parse_cell(tomllib.loads(f'''
[cell]
name = "u"
state_dir = "{tmp_path / 'state'}"
[metrics]
enabled = false
[device.s]
driver = "sim"
backoff_initial_s = 0.05
backoff_max_s = 0.1
[device.s.tag.n]
address = "counter"
type = "uint64"
scan_ms = 20
'''), "cell.toml")
    rt = Runtime(cell, serve_metrics=False)
    await rt.start()
    try:
        await until(lambda: rt.runners["s"].state is DeviceState.DOWN or calls["n"] >= 3)
        await until(lambda: rt.runners["s"].state is DeviceState.UP and rt.current.get("s.n", (0, 2, 0))[1] == 0)
    finally:
        await rt.stop()
    assert calls["n"] >= 3
    import json

    rows = [json.loads(x) for x in (tmp_path / "state" / "samples.jsonl").read_text().splitlines()]
    assert rows[0]["quality"] == "bad" and rows[0]["value"] is None   # down at once: tags marked bad
    assert rows[-1]["quality"] == "good"                              # then retried and reading
