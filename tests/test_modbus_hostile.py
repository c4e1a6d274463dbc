"""Trust nothing from the wire: a hostile Modbus/TCP server plays every lie; no invented value is ever good."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from daemon_support import Proc, eventually
from edged.drivers.modbus.driver import ModbusDriver
from edged.errors import DeviceUnavailable, ReadFailed, WriteFailed
from edged.tag import Quality, Reading
from hostile_modbus import CASES, INVENTED, REAL_BASE, HostileServer, real_bit
from modbus_support import load_devices, tcp_device

pytestmark = pytest.mark.timeout(120)

ACCEPTED = {"ok", "split", "trailing_garbage", "tid0_first"}  # a correct answer reaches the driver
CLIENTS = ["edged", "pymodbus"]
SCANS = "[scan.regs]\ninterval_ms = 50\n[scan.coils]\ninterval_ms = 50\n"


def hostile_doc(port: int, client: str, unit_id: int = 1, timeout_s: float = 0.5) -> str:
    tags: dict[str, dict[str, Any]] = {f"r{i}": {"address": f"hr:{i}", "type": "uint16", "scan": "regs"}
                                       for i in range(4)}
    tags.update({f"c{i}": {"address": f"co:{i}", "scan": "coils"} for i in range(5)})
    return SCANS + tcp_device("h", port, tags, timeout_s=timeout_s, client=client, unit_id=unit_id)


def real_value(r: Reading) -> Any:
    a = r.tag.addr
    return real_bit(a.offset) if a.table.is_bit else REAL_BASE + a.offset


def assert_nothing_invented(readings: list[Reading]) -> None:
    for r in readings:
        if r.quality is Quality.GOOD:
            assert r.value == real_value(r), f"{r.tag.name} = {r.value!r} reported good (invented)"
            assert r.value != INVENTED


async def read_once(drv: ModbusDriver, group: str) -> tuple[list[Reading], Exception | None]:
    try:
        await drv.connect()
        return await drv.read(group), None
    except (DeviceUnavailable, ReadFailed) as exc:
        return [], exc
    finally:
        await drv.close()


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("case", CASES)
async def test_each_lie_is_refused_and_counted(case: str, client: str, caplog: pytest.LogCaptureFixture) -> None:
    server = HostileServer(case)
    port = await server.start()
    devices, _ = load_devices(hostile_doc(port, client))
    drv: ModbusDriver = devices["h"].driver
    try:
        with caplog.at_level(logging.DEBUG):
            for group in ("regs", "coils"):
                readings, exc = await read_once(drv, group)
                assert_nothing_invented(readings)
                if case in ACCEPTED and not (case == "tid0_first" and client == "pymodbus"):
                    assert exc is None, exc
                    assert [r.quality for r in readings] == [Quality.GOOD] * len(readings)
                    assert [r.value for r in readings] == [real_value(r) for r in readings]
                else:
                    assert not any(r.quality is Quality.GOOD for r in readings), readings
        if case in ACCEPTED - {"ok", "split"}:
            # the stray frame (tid 0) and the trailing bytes are counted, yet the answer is good
            assert drv.stats.errors.get("malformed", 0) >= (1 if client == "edged" else 0)
        elif case not in ACCEPTED:
            assert drv.stats.errors.get("malformed", 0) + drv.stats.errors.get("timeout", 0) >= 2, drv.stats
        assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
        assert "Fatal error" not in caplog.text
    finally:
        await drv.close()
        await server.stop()


@pytest.mark.parametrize("client", CLIENTS)
async def test_unit_id_0_accepts_only_answers_from_unit_0(client: str) -> None:
    server = HostileServer("wrong_unit")
    port = await server.start()
    devices, _ = load_devices(hostile_doc(port, client, unit_id=0))
    drv: ModbusDriver = devices["h"].driver
    try:
        readings, exc = await read_once(drv, "regs")
        assert not any(r.quality is Quality.GOOD for r in readings) and isinstance(exc, ReadFailed)
        assert drv.malformed.get("unit") == 1
        server.case = "ok"                             # a correct answer names unit 0 as asked
        readings, exc = await read_once(drv, "regs")
        assert exc is None and [r.value for r in readings] == [REAL_BASE + i for i in range(4)]
    finally:
        await server.stop()


async def test_a_stray_tid_0_frame_keeps_the_connection_and_the_real_answer_is_taken() -> None:
    server = HostileServer("tid0_first")
    port = await server.start()
    devices, _ = load_devices(hostile_doc(port, "edged"))
    drv: ModbusDriver = devices["h"].driver
    try:
        await drv.connect()
        for _ in range(3):
            readings = await drv.read("regs")
            assert [r.value for r in readings] == [REAL_BASE + i for i in range(4)]
        assert server.accepts == 1 and drv.malformed == {"stray": 3}
    finally:
        await drv.close()
        await server.stop()


def test_daemon_against_a_rotation_of_every_lie(tmp_path: Path) -> None:
    """`edged run` against the hostile server rotating through every case: no traceback, nothing invented good."""
    server = HostileServer("rotate")
    port = server.start_in_thread()
    cell = tmp_path / "cell.toml"
    cell.write_text(f'[cell]\nname = "h"\nstate_dir = "{tmp_path / "state"}"\nheartbeat_s = 0\n'
                    + hostile_doc(port, "edged").replace("timeout_s = 0.5", "timeout_s = 0.2\nbackoff_initial_s = 0.05"
                                                         "\nbackoff_max_s = 0.2"))
    d = Proc(["run", "-c", str(cell)], tmp_path)
    try:
        eventually(lambda: all(server.played.get(c, 0) >= 2 for c in CASES), 90, what="two rotations of every case")
    finally:
        code = d.stop()
        server.stop_thread()
    assert code == 0, d.stderr
    assert "Traceback" not in d.stderr and "Fatal error" not in d.stderr
    samples = [json.loads(x) for x in (tmp_path / "state" / "samples.jsonl").read_text().splitlines() if x.strip()]
    good = [s for s in samples if s.get("quality") == "good"]
    assert good, "the correct answers of the rotation were never reported good"
    for s in good:
        n = int(s["tag"][1:])
        expected = REAL_BASE + n if s["tag"].startswith("r") else real_bit(n)
        assert s["value"] == expected, f"invented value reported good: {s}"
    assert any(s.get("quality") == "bad" for s in samples)


@pytest.mark.parametrize("case", ["short_mbap_2", "lying_bytecount", "trailing_garbage", "tid0_first", "wrong_unit"])
async def test_a_repeated_lie_is_logged_once_per_state_change(case: str, caplog: pytest.LogCaptureFixture) -> None:
    server = HostileServer(case)
    port = await server.start()
    devices, _ = load_devices(hostile_doc(port, "edged"))
    drv: ModbusDriver = devices["h"].driver
    try:
        with caplog.at_level(logging.INFO):
            for _ in range(8):
                await read_once(drv, "regs")         # reconnects each time when the lie breaks the stream
            assert drv.stats.errors["malformed"] >= 8
            mine = [r for r in caplog.records if r.name.startswith("edged.drivers.modbus")]
            assert 1 <= len(mine) <= 2, [r.getMessage() for r in mine]
            server.case = "ok"
            await read_once(drv, "regs")
            await read_once(drv, "regs")
            server.case = case                        # after a clean scan, the lie is a new state: logged again
            await read_once(drv, "regs")
            again = [r for r in caplog.records if r.name.startswith("edged.drivers.modbus")][len(mine):]
            assert any(r.levelno == logging.WARNING for r in again), [r.getMessage() for r in again]
        assert not [r for r in caplog.records if r.exc_info]
    finally:
        await server.stop()


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("case", ["ok", "wrong_unit", "wrong_function", "exception_wrong_fc"])
async def test_a_write_answer_must_echo_the_request(case: str, client: str) -> None:
    server = HostileServer(case)
    port = await server.start()
    doc = SCANS + tcp_device("h", port, {"sp": {"address": "hr:5", "type": "uint16", "access": "write"},
                                         "wide": {"address": "hr:6", "type": "uint32", "access": "write"},
                                         "run": {"address": "co:1", "access": "write"}},
                             timeout_s=0.5, client=client)
    devices, tags = load_devices(doc)
    drv: ModbusDriver = devices["h"].driver
    try:
        await drv.connect()
        for name, value in (("sp", 7), ("wide", 70000), ("run", True)):
            if case == "ok":
                await drv.write(tags[f"h.{name}"], value)
            else:
                with pytest.raises((WriteFailed, DeviceUnavailable)) as info:
                    await drv.write(tags[f"h.{name}"], value)
                if isinstance(info.value, WriteFailed):
                    assert info.value.kind == "malformed"
                await drv.close()
                await drv.connect()
        assert drv.stats.writes == (3 if case == "ok" else 0)
        assert server.registers.get(5) == 7                    # the server did get the writes
    finally:
        await drv.close()
        await server.stop()
