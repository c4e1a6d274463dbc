"""Review regressions of the runtime: stale warnings after a reconnect, write overflow, metrics port in use."""
from __future__ import annotations

import asyncio
import logging
import socket
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from daemon_support import free_port, until
from edged.driver import emulator_for
from edged.cell import parse_cell
from edged.device import DeviceState
from edged.errors import WriteRefused
from edged.runtime import Runtime
from edged.tag import Quality
from edged.writes import check_write

MODBUS_CELL = """
[cell]
name = "r"
state_dir = "{state}"
heartbeat_s = 0

[metrics]
enabled = false

[device.plc]
driver = "modbus"
host = "127.0.0.1"
port = {port}
timeout_s = 2.0
backoff_initial_s = 0.2
backoff_max_s = 0.5

[device.plc.tag.fast]
address = "hr:0"
type = "uint16"
scan_ms = 100

[device.plc.tag.slow]
address = "hr:1"
type = "uint16"
scan_ms = 1000

[device.plc.tag.sp]
address = "hr:2"
type = "int16"
access = "write"
scale = 0.001
scan_ms = 100
"""



async def test_no_stale_warning_after_a_reconnect(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """After an outage longer than the stale limit, the first check after reconnecting must not call the
    slow group's values stale just because its first poll of the new connection is still ahead."""
    caplog.set_level(logging.INFO, logger="edged")
    cell = parse_cell(tomllib.loads(MODBUS_CELL.format(state=tmp_path / "s", port=free_port())), "cell.toml")
    drv = cell.devices["plc"].driver
    emu = emulator_for([drv])
    await emu.start()
    rt = Runtime(cell, serve_metrics=False)
    runner = rt.runners["plc"]
    await rt.start()
    try:
        await until(lambda: rt.current.get("plc.slow", (None, 2, 0))[1] == Quality.GOOD)
        for _ in range(3):  # each round: an outage longer than the slow group's stale limit (3 s), then back
            await emu.stop()
            await until(lambda: runner.state is DeviceState.DOWN)
            await asyncio.sleep(3.5)
            slow = next(g for g in runner.groups if g.name == "1000ms")
            scans = slow.scans
            await emu.start()
            await until(lambda: slow.scans > scans)
            await until(lambda: rt.current["plc.slow"][1] == Quality.GOOD)
        assert "values are stale" not in caplog.text
        assert "device plc: down -> up" in caplog.text
    finally:
        await rt.stop()
        await emu.stop()


async def test_write_that_overflows_after_scaling_is_refused_not_raised(tmp_path: Path) -> None:
    cell = parse_cell(tomllib.loads(MODBUS_CELL.format(state=tmp_path / "s", port=free_port())), "cell.toml")
    tag = cell.tags["plc.sp"]
    with pytest.raises(WriteRefused, match="outside the range of int16"):
        check_write(tag, 1e306)  # 1e306 / 0.001 is infinite: round() would raise OverflowError
    drv = cell.devices["plc"].driver
    emu = emulator_for([drv])
    await emu.start()
    rt = Runtime(cell, serve_metrics=False)
    await rt.start()
    try:
        await until(lambda: rt.runners["plc"].state is DeviceState.UP)
        res = await rt.write("plc.sp", 1e306, source="test")
        assert not res.ok and "outside the range" in res.error
        assert rt.stats.writes_refused == {"invalid_value": 1}
        ok = await rt.write("plc.sp", 1.5, source="test")
        assert ok.ok, ok.error
        assert emu.get_value(tag) == pytest.approx(1.5)
    finally:
        await rt.stop()
        await emu.stop()


def test_metrics_port_in_use_exits_1_naming_the_listener(tmp_path: Path) -> None:
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    cell = tmp_path / "cell.toml"
    cell.write_text(f"""
[cell]
name = "m"
state_dir = "state"
[metrics]
listen = "127.0.0.1:{port}"
[device.s]
driver = "sim"
[device.s.tag.n]
address = "counter"
type = "uint32"
[sink.local]
type = "jsonl"
""")
    try:
        r = subprocess.run([sys.executable, "-m", "edged", "run", "-c", str(cell)], capture_output=True, text=True,
                           timeout=120, cwd=tmp_path)
    finally:
        busy.close()
    assert r.returncode == 1, r.stderr
    assert f"metrics listen 127.0.0.1:{port}" in r.stderr
    assert "Traceback" not in r.stderr
    # the partly started runtime was taken down in order: the spool can be opened again at once
    from edged.spool.spool import Spool
    from edged.cell import load_cell

    loaded = load_cell(cell)
    spool = Spool.open(tmp_path / "state" / "spool", loaded.spool, ["local"])
    spool.close()


SIM_CELL = """
[cell]
name = "h"
state_dir = "{state}"
heartbeat_s = 0
[metrics]
enabled = false
[device.s]
driver = "sim"
[device.s.tag.n]
address = "counter"
type = "uint32"
scan_ms = 50
[sink.local]
type = "jsonl"
"""


async def test_stop_never_hangs_on_a_driver_close_that_hangs(tmp_path: Path, monkeypatch,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    """A driver whose close() never returns (a wedged connection) must not hang Runtime.stop()."""
    import edged.device as device_mod

    monkeypatch.setattr(device_mod, "CLOSE_TIMEOUT_S", 0.2)
    cell = parse_cell(tomllib.loads(SIM_CELL.format(state=tmp_path / "s")), "cell.toml")
    drv = cell.devices["s"].driver

    async def hang() -> None:
        await asyncio.Event().wait()

    monkeypatch.setattr(drv, "close", hang)
    rt = Runtime(cell, serve_metrics=False)
    await rt.start()
    await until(lambda: rt.current.get("s.n", (0, 2, 0))[0] >= 3)
    async with asyncio.timeout(60):  # only bounds a failure: before the fix stop() never returned
        await rt.stop()
    assert "close did not finish" in caplog.text
    out = (tmp_path / "s" / "samples.jsonl").read_text().splitlines()
    assert len(out) >= 3  # what was read reached the sink before the stop


async def test_a_port_that_accepts_but_never_answers_modbus_backs_off(tmp_path: Path, monkeypatch) -> None:
    """A wrong service on the device's port (here a real TCP server answering HTTP) accepts every connection
    and drops it at the first request: the runner must back off with growing delays, not flap at the initial one."""
    import edged.device as device_mod

    async def http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        writer.write(b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(http, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    attempts: list[int] = []
    real = device_mod.backoff_delay

    def spy(attempt: int, initial: float, maximum: float, rng) -> float:
        attempts.append(attempt)
        return real(attempt, initial, maximum, rng) / 50  # keep the test short; the attempts are what counts

    monkeypatch.setattr(device_mod, "backoff_delay", spy)
    text = MODBUS_CELL.format(state=tmp_path / "s", port=port).replace("backoff_initial_s = 0.2", "backoff_initial_s = 0.5") \
        .replace("backoff_max_s = 0.5", "backoff_max_s = 60")
    cell = parse_cell(tomllib.loads(text), "cell.toml")
    rt = Runtime(cell, serve_metrics=False)
    await rt.start()
    try:
        await until(lambda: len(attempts) >= 5)
    finally:
        await rt.stop()
        server.close()
        await server.wait_closed()
    assert attempts[:5] == [0, 1, 2, 3, 4], attempts
    assert rt.current["plc.fast"][1] == Quality.BAD


async def test_write_while_the_device_is_down_is_refused_counted_and_audited(tmp_path: Path,
                                                                           caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="edged")
    cell = parse_cell(tomllib.loads(MODBUS_CELL.format(state=tmp_path / "s", port=free_port())), "cell.toml")
    drv = cell.devices["plc"].driver
    emu = emulator_for([drv])
    await emu.start()
    rt = Runtime(cell, serve_metrics=False)
    runner = rt.runners["plc"]
    await rt.start()
    try:
        await until(lambda: runner.state is DeviceState.UP)
        await emu.stop()
        await until(lambda: runner.state is DeviceState.DOWN)
        res = await rt.write("plc.sp", 1.0, source="mqtt:up")
        assert not res.ok and "device plc is down" in res.error
        assert rt.stats.writes_refused == {"device_down": 1}
        assert "audit: write refused (device_down) from mqtt:up: plc.sp: device plc is down" in caplog.text
        await emu.start()
        await until(lambda: runner.state is DeviceState.UP)
        ok = await rt.write("plc.sp", 2.0, source="mqtt:up")
        assert ok.ok, ok.error
        assert emu.get_value(cell.tags["plc.sp"]) == pytest.approx(2.0)
        assert "audit: write plc.sp from mqtt:up" in caplog.text
    finally:
        await rt.stop()
        await emu.stop()

