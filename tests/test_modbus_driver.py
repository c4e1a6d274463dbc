"""The Modbus driver against real pymodbus servers: round trips, errors, timeouts, reconnects, shared RTU lines."""
from __future__ import annotations

import asyncio
import logging
import math
import os
from pathlib import Path
from typing import Any

import pytest

from edged.drivers.modbus.address import Order, Table
from edged.drivers.modbus.driver import ModbusDriver
from edged.drivers.modbus.emulator import ModbusEmulator
from edged.errors import DeviceUnavailable, ReadFailed, WriteFailed
from edged.tag import Quality, Reading, Tag
from edged.writes import check_write
import modbus_support
from modbus_support import free_port, load_devices, socat_pair, tcp_device

pytestmark = pytest.mark.timeout(120)

F32_MAX = 3.4028234663852886e38
F64_MAX = 1.7976931348623157e308
LIMITS: dict[str, list[Any]] = {
    "int16": [-32768, 32767, 0, -1],
    "uint16": [0, 65535, 1, 0x8001],
    "int32": [-(2**31), 2**31 - 1, 0, -1],
    "uint32": [0, 2**32 - 1, 1, 0x80000001],
    "int64": [-(2**63), 2**63 - 1, 0, -1],
    "uint64": [0, 2**64 - 1, 1, 2**63 + 1],
    "float32": [-F32_MAX, F32_MAX, 0.0, -1.5, 1.401298464324817e-45],
    "float64": [-F64_MAX, F64_MAX, 0.0, -1.5, 5e-324],
    "string": ["", "A", "ABCDEFGHI", "\u00e9t\u00e9 \u00ff", "12345678"],   # length 9: odd, 5 registers
    "bool": [True, False, True, False],
}


@pytest.fixture(autouse=True, params=["edged", "pymodbus"])
def client(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every TCP test runs with edged's own client and with the pymodbus client (``client`` device key)."""
    if request.param == "pymodbus" and "tcp_device" not in request.function.__code__.co_names:
        pytest.skip("no TCP device in this test")
    orig = modbus_support.tcp_device
    monkeypatch.setitem(globals(), "tcp_device", lambda *a, **k: orig(*a, **{"client": request.param, **k}))
    return request.param


def by_name(readings: list[Reading]) -> dict[str, Reading]:
    return {r.tag.name: r for r in readings}


async def started(doc: str, **emu_kw: Any) -> tuple[dict[str, ModbusDriver], dict[str, Tag], ModbusEmulator]:
    devices, tags = load_devices(doc)
    drivers = {name: dev.driver for name, dev in devices.items()}
    emu = ModbusEmulator(list(drivers.values()), **emu_kw)
    await emu.start()
    return drivers, tags, emu


async def test_every_type_and_order_round_trips_at_its_limits() -> None:
    tags_toml: dict[str, dict[str, Any]] = {}
    offset = 0
    for tname in LIMITS:
        if tname == "bool":
            continue
        for order in Order:
            keys = {"address": f"hr:{offset}", "type": tname, "order": order.name, "access": "write"}
            if tname == "string":
                keys["length"] = 9
            tags_toml[f"{tname}_{order.name}"] = keys
            offset += 5 if tname == "string" else 4
    for i, address in enumerate(("co:0", "co:9", f"hr:{offset}.0", f"hr:{offset}.15")):
        tags_toml[f"bool_{i}"] = {"address": address, "access": "write"}
    doc = tcp_device("plc", free_port(), tags_toml, timeout_s=5.0)
    drivers, tags, emu = await started(doc)
    drv = drivers["plc"]
    try:
        await drv.connect()
        # 128 + 20 + 1 registers: two requests (no value split across them), and the coils
        assert [line.split(":")[0] for line in drv.plan()["default"]] == \
            ["unit 1 co 0..9 (10 bits)", "unit 1 hr 0..123 (124 regs)", "unit 1 hr 124..148 (25 regs)"]
        for i in range(max(len(v) for v in LIMITS.values())):
            expected = {}
            for tag in tags.values():
                values = LIMITS[tag.dtype.value]
                value = check_write(tag, values[i % len(values)])
                await drv.write(tag, value)
                expected[tag.name] = value
            got = by_name(await drv.read("default"))
            assert {n: r.value for n, r in got.items()} == expected
            assert all(r.quality is Quality.GOOD for r in got.values())
            for tag in tags.values():                       # the emulator decodes the same registers alike
                assert emu.get_value(tag) == expected[tag.name]
        assert drv.stats.writes == len(tags) * 5 and drv.stats.writes_failed == 0
        assert drv.stats.requests == 5 * 3 and drv.stats.values == 5 * len(tags)
    finally:
        await drv.close()
        await emu.stop()


async def test_emulated_values_read_with_scale_strings_bits_and_coils() -> None:
    doc = tcp_device("press1", free_port(), {
        "oil_temp": {"address": "40001", "type": "float32", "order": "CDAB"},
        "pressure": {"address": "hr:2", "type": "int16", "scale": 0.1, "offset": -5.0},
        "lube_low": {"address": "hr:3.3"},
        "lube_ok": {"address": "400004.4"},
        "recipe": {"address": "hr:10", "type": "string", "length": 7, "order": "BADC", "access": "write"},
        "run": {"address": "co:7", "access": "write"},
        "door": {"address": "10003"},
        "speed": {"address": "ir:4", "type": "uint32", "order": "DCBA", "scale": 0.5},
        "nan": {"address": "hr:20", "type": "float32"},
    })
    drivers, tags, emu = await started(doc)
    drv = drivers["press1"]
    try:
        emu.set_value(tags["press1.oil_temp"], 61.25)
        emu.set_value(tags["press1.pressure"], 95.5)      # raw 1005
        emu.set_value(tags["press1.lube_low"], True)
        emu.set_value(tags["press1.recipe"], "PART-7")
        emu.set_value(tags["press1.run"], True)
        emu.set_value(tags["press1.door"], True)
        emu.set_value(tags["press1.speed"], 1500.0)
        emu.set_value(tags["press1.nan"], 0.0)
        await drv.connect()
        got = by_name(await drv.read("default"))
        assert got["oil_temp"].value == 61.25
        assert got["pressure"].value == pytest.approx(95.5)
        assert got["lube_low"].value is True and got["lube_ok"].value is False
        assert got["recipe"].value == "PART-7"
        assert got["run"].value is True and got["door"].value is True
        assert got["speed"].value == 1500.0
        assert {r.quality for r in got.values()} == {Quality.GOOD}
        ts = {r.ts_ns for r in got.values()}
        assert all(t > 1_600_000_000 * 10**9 for t in ts)
        # NaN from the device is delivered as NaN with good quality (documented)
        emu.set_value(tags["press1.nan"], math.nan)
        got = by_name(await drv.read("default"))
        assert math.isnan(got["nan"].value) and got["nan"].quality is Quality.GOOD
        emu.set_value(tags["press1.nan"], -math.inf)
        assert by_name(await drv.read("default"))["nan"].value == -math.inf
        # writes: string and coil
        await drv.write(tags["press1.recipe"], "AB")
        await drv.write(tags["press1.run"], False)
        assert emu.get_value(tags["press1.recipe"]) == "AB"
        assert emu.get_value(tags["press1.run"]) is False
    finally:
        await drv.close()
        await emu.stop()


@pytest.mark.parametrize("bit_write", ["mask", "read_modify_write"])
async def test_bit_of_register_writes_leave_other_bits_alone(bit_write: str) -> None:
    doc = tcp_device("p", free_port(), {
        "word": {"address": "hr:5", "type": "uint16"},
        "b0": {"address": "hr:5.0", "access": "write"},
        "b15": {"address": "hr:5.15", "access": "write"},
    }, bit_write=bit_write)
    drivers, tags, emu = await started(doc)
    drv = drivers["p"]
    try:
        emu.set_value(tags["p.word"], 0x0F0E)
        await drv.connect()
        await drv.write(tags["p.b0"], True)
        await drv.write(tags["p.b15"], True)
        assert emu.get_value(tags["p.word"]) == 0x8F0F
        await drv.write(tags["p.b0"], False)
        got = by_name(await drv.read("default"))
        assert (got["word"].value, got["b0"].value, got["b15"].value) == (0x8F0E, False, True)
    finally:
        await drv.close()
        await emu.stop()


async def test_several_unit_ids_share_one_connection() -> None:
    doc = tcp_device("gw", free_port(), {
        "a": {"address": "hr:0"},
        "b": {"address": "hr:0", "unit_id": 2},
        "c": {"address": "hr:0", "unit_id": 3, "access": "write"},
    }, unit_id=1)
    drivers, tags, emu = await started(doc)
    drv = drivers["gw"]
    try:
        for name, v in (("a", 11), ("b", 22), ("c", 33)):
            emu.set_value(tags[f"gw.{name}"], v)
        await drv.connect()
        assert {n: r.value for n, r in by_name(await drv.read("default")).items()} == {"a": 11, "b": 22, "c": 33}
        await drv.write(tags["gw.c"], 44)
        assert (emu.get_value(tags["gw.a"]), emu.get_value(tags["gw.b"]), emu.get_value(tags["gw.c"])) == (11, 22, 44)
    finally:
        await drv.close()
        await emu.stop()


async def test_exception_response_gives_bad_quality_counts_and_logs_once(caplog: pytest.LogCaptureFixture) -> None:
    doc = tcp_device("press1", free_port(), {
        "temp": {"address": "hr:100", "type": "float32"},
        "level": {"address": "hr:300"},
    })
    drivers, tags, emu = await started(doc)
    drv = drivers["press1"]
    try:
        emu.set_value(tags["press1.level"], 77)
        emu.set_exception(1, Table.HOLDING, 101, 2)
        await drv.connect()
        caplog.set_level(logging.WARNING, logger="edged.drivers.modbus.driver")
        for _ in range(3):
            got = by_name(await drv.read("default"))
            assert got["temp"].quality is Quality.BAD and got["temp"].value is None
            assert got["level"].quality is Quality.GOOD and got["level"].value == 77
        assert drv.stats.errors == {"exception": 3}
        assert drv.stats.requests == 6 and drv.stats.values == 3
        logged = [r.getMessage() for r in caplog.records if "ILLEGAL DATA ADDRESS" in r.getMessage()]
        assert logged == ["device press1: fc 3 unit 1 holding registers 100..101: exception 2 ILLEGAL DATA ADDRESS "
                          "(an off-by-one address or a read spanning a hole in the device's map?); "
                          "tags temp get bad quality"]
        # every request of the group failing: ReadFailed (the runner marks the group bad)
        emu.set_exception(1, Table.HOLDING, 300, 4)
        with pytest.raises(ReadFailed, match="SERVER DEVICE FAILURE") as info:
            await drv.read("default")
        assert info.value.kind == "exception"
        # recovery: good again, and a new failure is logged again
        emu.set_exception(1, Table.HOLDING, 101, None)
        emu.set_exception(1, Table.HOLDING, 300, None)
        assert {r.quality for r in await drv.read("default")} == {Quality.GOOD}
    finally:
        await drv.close()
        await emu.stop()


async def test_malformed_response_gives_bad_quality() -> None:
    doc = tcp_device("p", free_port(), {"a": {"address": "hr:0", "type": "uint32"},
                                        "b": {"address": "hr:0", "unit_id": 2}})
    drivers, tags, emu = await started(doc)
    drv = drivers["p"]
    try:
        emu.set_value(tags["p.b"], 5)
        emu.malformed(1)
        await drv.connect()
        got = by_name(await drv.read("default"))
        assert got["a"].quality is Quality.BAD and got["b"].value == 5
        assert drv.stats.errors == {"malformed": 1}
        emu.malformed(1, False)
        assert by_name(await drv.read("default"))["a"].quality is Quality.GOOD
    finally:
        await drv.close()
        await emu.stop()


async def test_timeout_drops_the_connection_and_the_next_read_is_fresh() -> None:
    doc = tcp_device("p", free_port(), {"v": {"address": "hr:0", "type": "int32"}}, timeout_s=0.3)
    drivers, tags, emu = await started(doc)
    drv = drivers["p"]
    tag = tags["p.v"]
    try:
        emu.set_value(tag, 1)
        await drv.connect()
        assert (await drv.read("default"))[0].value == 1
        emu.delay(1, 2.0)                      # the device samples 1 now but answers after 2 s
        with pytest.raises(DeviceUnavailable, match="no response within 0.3 s"):
            await drv.read("default")
        assert drv.stats.timeouts == 1 and drv.stats.errors == {"timeout": 1}
        with pytest.raises(DeviceUnavailable, match="not connected"):   # dropped: no read on that connection
            await drv.read("default")
        emu.delay(1, 0)
        emu.set_value(tag, 2)
        await drv.close()
        await drv.connect()
        assert drv.stats.reconnects == 1
        for _ in range(6):                     # never the late answer (1): the new connection only sees 2
            assert (await drv.read("default"))[0].value == 2
            await asyncio.sleep(0.5)
    finally:
        await drv.close()
        await emu.stop()


async def test_connection_loss_and_unreachable_device() -> None:
    port = free_port()
    doc = tcp_device("p", port, {"v": {"address": "hr:0"}}, timeout_s=2.0)
    drivers, tags, emu = await started(doc)
    drv = drivers["p"]
    try:
        await drv.connect()
        await drv.read("default")
        await emu.stop()
        with pytest.raises(DeviceUnavailable):
            for _ in range(200):               # the loss is seen at the latest by the next request
                await drv.read("default")
                await asyncio.sleep(0.02)
        assert drv.stats.errors.get("connection", 0) >= 1 and drv.stats.timeouts == 0
        await drv.close()
        with pytest.raises(DeviceUnavailable, match=f"127.0.0.1:{port}"):
            await drv.connect()
        await emu.start()
        await drv.connect()
        assert (await drv.read("default"))[0].quality is Quality.GOOD
        assert drv.stats.reconnects == 1
    finally:
        await drv.close()
        await emu.stop()


async def test_write_failures() -> None:
    doc = tcp_device("p", free_port(), {"sp": {"address": "hr:0", "type": "int16", "access": "write"},
                                        "ro": {"address": "hr:1"},
                                        "name": {"address": "hr:2", "type": "string", "length": 4, "access": "write"}})
    drivers, tags, emu = await started(doc)
    drv = drivers["p"]
    try:
        await drv.connect()
        with pytest.raises(WriteFailed, match="p.sp: write refused, nothing sent: value 40000 is outside the range "
                                             r"of int16 \[-32768, 32767\]") as info:
            await drv.write(tags["p.sp"], 40000)
        assert info.value.kind == "refused"
        with pytest.raises(WriteFailed, match="p.name: write refused, nothing sent: expected at most 4 characters"):
            await drv.write(tags["p.name"], "ABCDE")
        with pytest.raises(WriteFailed, match="p.ro: write refused: the tag is not writable"):
            await drv.write(tags["p.ro"], 1)
        emu.set_exception(1, Table.HOLDING, 0, 3)
        with pytest.raises(WriteFailed, match=r"write sp \(fc 6 unit 1 holding registers hr 0\) refused: "
                                             r"exception 3 ILLEGAL DATA VALUE"):
            await drv.write(tags["p.sp"], 5)
        assert drv.stats.writes == 0 and drv.stats.writes_failed == 4
        assert emu.request_count() == 1          # only the write the device refused was sent
        emu.set_exception(1, Table.HOLDING, 0, None)
        await drv.write(tags["p.sp"], -5)
        assert emu.get_value(tags["p.sp"]) == -5 and drv.stats.writes == 1
    finally:
        await drv.close()
        await emu.stop()


def rtu_doc(port: str, timeout_s: float = 0.5) -> str:
    return f"""
[device.oven]
driver = "modbus"
transport = "rtu"
port = "{port}"
baudrate = 115200
unit_id = 1
timeout_s = {timeout_s}
[device.oven.tag.temp]
address = "ir:0"
type = "int16"
scale = 0.1
[device.oven.tag.setpoint]
address = "hr:0"
access = "write"

[device.conveyor]
driver = "modbus"
transport = "rtu"
port = "{port}"
baudrate = 115200
unit_id = 2
timeout_s = {timeout_s}
[device.conveyor.tag.speed]
address = "ir:3"
"""


async def test_rtu_line_shared_by_two_units_with_one_silent(tmp_path: Path) -> None:
    with socat_pair(tmp_path) as (near, far):
        drivers, tags, emu = await started(rtu_doc(near), serial_peers={near: far})
        oven, conveyor = drivers["oven"], drivers["conveyor"]
        try:
            emu.set_value(tags["oven.temp"], 180.5)
            emu.set_value(tags["conveyor.speed"], 42)
            await oven.connect()
            await conveyor.connect()
            assert by_name(await conveyor.read("default"))["speed"].value == 42
            emu.silence(2)
            for cycle in range(4):
                before = emu.request_count()
                emu.set_value(tags["oven.temp"], 100.0 + cycle)
                # both devices poll concurrently, as their runners do; the line takes one request at a time
                oven_r, conv_r = await asyncio.gather(oven.read("default"), conveyor.read("default"),
                                                      return_exceptions=True)
                assert not isinstance(oven_r, BaseException), oven_r
                assert by_name(oven_r)["temp"].value == pytest.approx(100.0 + cycle)
                assert isinstance(conv_r, DeviceUnavailable) and "no response within 0.5 s" in str(conv_r)
                await conveyor.close()             # what the runner does before it retries
                await conveyor.connect()
                await oven.write(tags["oven.setpoint"], cycle)   # the line still works for unit 1
                assert emu.get_value(tags["oven.setpoint"]) == cycle
                # the silent unit cost exactly one request (no retries): oven 2 reads + 1 write, conveyor 1
                assert emu.request_count() - before == 4
            assert conveyor.stats.timeouts == 4 and oven.stats.timeouts == 0 and oven.stats.errors == {}
            emu.silence(2, False)
            assert by_name(await conveyor.read("default"))["speed"].value == 42
        finally:
            await oven.close()
            await conveyor.close()
            await emu.stop()


async def test_rtu_devices_must_agree_on_line_settings(tmp_path: Path) -> None:
    """Caught at load (edged check) by the driver's cell-level check, through another name of the same port; and
    still refused at connect if devices of different cells ever met on one line."""
    from edged.cell import parse_cell
    from edged.errors import ConfigError
    import tomllib

    with socat_pair(tmp_path) as (near, far):
        alias = tmp_path / "by-id-alias"          # another name of the same line, like /dev/serial/by-id
        alias.symlink_to(near)
        same = rtu_doc(near).replace("baudrate = 115200\nunit_id = 2", "baudrate = 9600\nunit_id = 2")
        with pytest.raises(ConfigError, match=r"device\.conveyor\.baudrate: expected the same baudrate as device "
                                              r"oven on serial port .*\(115200: .*found 9600"):
            parse_cell(tomllib.loads(same), "cell.toml")
        doc = same.replace(f'[device.conveyor]\ndriver = "modbus"\ntransport = "rtu"\nport = "{near}"',
                           f'[device.conveyor]\ndriver = "modbus"\ntransport = "rtu"\nport = "{alias}"')
        assert str(alias) in doc
        ok, _, emu = await started(rtu_doc(near), serial_peers={near: far})
        try:
            await ok["oven"].connect()
            from dataclasses import replace

            bad = load_devices(doc.replace("baudrate = 9600", "baudrate = 115200"))[0]["conveyor"].driver
            bad.settings = replace(bad.settings, serial=replace(bad.settings.serial, baudrate=9600))
            with pytest.raises(DeviceUnavailable, match=r"serial settings .* 9600 8N1 differ .* 115200 8N1"):
                await bad.connect()
        finally:
            await ok["oven"].close()
            await emu.stop()


async def test_rtu_emulator_makes_its_own_pty_pair(tmp_path: Path) -> None:
    port = str(tmp_path / "ttyPLC")
    drivers, tags, emu = await started(rtu_doc(port, timeout_s=2.0))
    try:
        assert os.path.exists(port)
        emu.set_value(tags["oven.temp"], -12.5)
        await drivers["oven"].connect()
        assert by_name(await drivers["oven"].read("default"))["temp"].value == pytest.approx(-12.5)
    finally:
        await drivers["oven"].close()
        await emu.stop()
    assert not os.path.lexists(port) and not os.path.lexists(port + ".emu")
    await emu.start()                              # an emulator can be started again after stop()
    try:
        await drivers["oven"].connect()
        assert by_name(await drivers["oven"].read("default"))["temp"].value == pytest.approx(-12.5)
    finally:
        await drivers["oven"].close()
        await emu.stop()


async def test_a_cancellation_swallowed_inside_pymodbus_is_honoured() -> None:
    """Python 3.11's wait_for (inside pymodbus) can return the answer and drop a cancellation that
    arrived with it; the link must still raise CancelledError (a real race, so a stand-in client)."""
    from edged.drivers.modbus.line import Link

    class SwallowingClient:
        connected = True

        def close(self) -> None:
            pass

        async def read_holding_registers(self, **_: Any) -> str:
            asyncio.current_task().cancel()      # the cancellation arrives ...
            try:
                await asyncio.sleep(0)
            except asyncio.CancelledError:
                pass                             # ... and is swallowed, as 3.11's wait_for does
            return "answer"

    link = Link("test")
    link.client = SwallowingClient()
    with pytest.raises(asyncio.CancelledError):
        await link.call("read_holding_registers", 1.0, address=0, count=1, device_id=1)
    asyncio.current_task().uncancel()            # the test itself goes on
    assert link.client is None                   # a TCP link also drops the connection


async def test_rtu_port_that_does_not_exist(tmp_path: Path) -> None:
    missing = tmp_path / "ttyUSB9"
    devices, _ = load_devices(rtu_doc(str(missing)))
    oven = devices["oven"].driver
    with pytest.raises(DeviceUnavailable, match=f"device oven: cannot open serial {missing} 115200 8N1"):
        await oven.connect()
    assert oven.stats.errors == {"connection": 1}
    with pytest.raises(DeviceUnavailable, match="not connected"):
        await oven.read("default")
    await oven.close()


async def test_emulator_rounds_fractional_values_of_integer_registers() -> None:
    doc = tcp_device("p", free_port(), {"n": {"address": "hr:0", "type": "int16"},
                                        "s": {"address": "hr:1", "type": "uint16", "scale": 0.1}})
    devices, tags = load_devices(doc)
    emu = ModbusEmulator([devices["p"].driver])
    emu.set_value(tags["p.n"], -7.6)
    emu.set_value(tags["p.s"], 12.34)                # raw 123.4 -> 123
    assert emu.get_value(tags["p.n"]) == -8
    assert emu.get_value(tags["p.s"]) == pytest.approx(12.3)
    with pytest.raises(ValueError, match="outside the range of int16"):
        emu.set_value(tags["p.n"], 40000)


@pytest.mark.parametrize("baudrate,parity,bytesize,stopbits,gap_ms", [
    (9600, "E", 8, 1, 3.5 * 11 / 9.6),
    (9600, "N", 8, 1, 3.5 * 10 / 9.6),
    (19200, "N", 8, 2, 3.5 * 11 / 19.2),
    (1200, "O", 7, 1, 3.5 * 10 / 1.2),
    (38400, "E", 8, 1, 1.75),
    (115200, "N", 8, 1, 1.75),
])
def test_rtu_inter_frame_gap(baudrate: int, parity: str, bytesize: int, stopbits: int, gap_ms: float) -> None:
    from edged.drivers.modbus.line import SerialSettings, frame_gap_s

    settings = SerialSettings("/dev/ttyS0", baudrate, parity, bytesize, stopbits)
    assert frame_gap_s(settings) * 1000 == pytest.approx(gap_ms)
