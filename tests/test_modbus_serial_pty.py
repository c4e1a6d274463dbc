"""RTU on pseudo-terminals: a cell's real line settings (parity E/O) open on a socat pty and reads work."""
from __future__ import annotations

import errno
import logging
import os
import termios
from pathlib import Path

import pytest
import serial

from edged.drivers.modbus.emulator import ModbusEmulator
from edged.errors import ReadFailed
from edged.drivers.modbus.line import SerialSettings as LineSerialSettings
from edged.transport import serial as edged_serial
from edged.transport.serial import SerialSettings, is_pty, open_serial
from modbus_support import load_devices, socat_pair

pytestmark = pytest.mark.timeout(120)


def rtu_doc(port: str, parity: str) -> str:
    return f"""
[device.oven]
driver = "modbus"
transport = "rtu"
port = "{port}"
baudrate = 19200
parity = "{parity}"
stopbits = 1
timeout_s = 2.0
[device.oven.tag.temp]
address = "ir:0"
type = "int16"
scale = 0.1
[device.oven.tag.setpoint]
address = "hr:0"
access = "write"
"""


def test_serial_settings_are_reexported_by_the_modbus_line_module() -> None:
    assert LineSerialSettings is SerialSettings


def test_is_pty(tmp_path: Path) -> None:
    with socat_pair(tmp_path) as (near, _far):
        assert is_pty(near)                      # a socat link to /dev/pts/N
    master, slave = os.openpty()
    try:
        assert is_pty(os.ttyname(slave))
    finally:
        os.close(master)
        os.close(slave)
    assert not is_pty(str(tmp_path / "missing"))
    assert not is_pty("/dev/null")               # a character device, not a pty
    (tmp_path / "file").write_text("x")
    assert not is_pty(str(tmp_path / "file"))


@pytest.mark.parametrize("parity", ["E", "O"])
async def test_rtu_reads_and_writes_with_parity_on_a_socat_pty(tmp_path: Path, parity: str) -> None:
    with socat_pair(tmp_path) as (near, far):
        devices, tags = load_devices(rtu_doc(near, parity))
        drv = devices["oven"].driver
        emu = ModbusEmulator([drv], serial_peers={near: far})
        await emu.start()
        try:
            emu.set_value(tags["oven.temp"], 21.5)
            await drv.connect()
            readings = {r.tag.name: r for r in await drv.read("default")}
            assert readings["temp"].value == pytest.approx(21.5)
            await drv.write(tags["oven.setpoint"], 7)
            assert emu.get_value(tags["oven.setpoint"]) == 7
        finally:
            await drv.close()
            await emu.stop()


def test_a_pty_that_refuses_parity_with_einval_is_opened_with_one_info_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Some kernels refuse PARENB on a pty with EINVAL (this one may not): emulate that kernel's answer."""
    real = termios.tcsetattr

    def refusing(fd: int, when: int, attrs: list) -> None:
        if attrs[2] & termios.PARENB:
            raise termios.error(errno.EINVAL, "Invalid argument")
        real(fd, when, attrs)

    monkeypatch.setattr(serial.serialposix.termios, "tcsetattr", refusing)
    with socat_pair(tmp_path) as (near, far):
        with caplog.at_level(logging.INFO, logger=edged_serial.__name__):
            ser = open_serial(SerialSettings(near, 19200, "E"))
        try:
            assert ser.is_open
            peer = open_serial(SerialSettings(far))
            try:
                ser.write(b"\x01\x03")
                ser.flush()
                got = b""
                for _ in range(200):
                    got += peer.read(16)
                    if got:
                        break
                    import time
                    time.sleep(0.01)
                assert got == b"\x01\x03"       # bytes cross the pty whatever the parity
            finally:
                peer.close()
        finally:
            ser.close()
        infos = [r for r in caplog.records if r.name == edged_serial.__name__]
        assert len(infos) == 1 and infos[0].levelno == logging.INFO and "pseudo-terminal" in infos[0].getMessage()
        assert not any(r.exc_info for r in caplog.records)


def test_a_real_line_refusing_its_settings_still_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tolerance is for ptys only: a non-pty port that refuses a setting raises (here a pty posing as a line)."""
    monkeypatch.setattr(edged_serial, "is_pty", lambda path: False)

    def refusing(fd: int, when: int, attrs: list) -> None:
        raise termios.error(errno.EINVAL, "Invalid argument")

    monkeypatch.setattr(serial.serialposix.termios, "tcsetattr", refusing)
    with socat_pair(tmp_path) as (near, _far):
        with pytest.raises((termios.error, serial.SerialException)):
            open_serial(SerialSettings(near, 19200, "E"))


RTU_UNITS = """
[device.line]
driver = "modbus"
transport = "rtu"
port = "{port}"
baudrate = 115200
timeout_s = 0.3
backoff_initial_s = 30.0
[device.line.tag.a]
address = "hr:0"
[device.line.tag.far]
address = "hr:0"
unit_id = 2
"""


async def test_rtu_device_with_a_silent_unit_keeps_the_other_units_tags_good(tmp_path: Path) -> None:
    with socat_pair(tmp_path) as (near, far):
        devices, tags = load_devices(RTU_UNITS.format(port=near))
        drv = devices["line"].driver
        emu = ModbusEmulator([drv], serial_peers={near: far})
        await emu.start()
        try:
            emu.set_value(tags["line.a"], 11)
            emu.silence(2)
            await drv.connect()
            for scan in range(3):
                readings = {r.tag.name: r for r in await drv.read("default")}
                assert readings["a"].value == 11 and readings["a"].quality == 0
                assert readings["far"].value is None and readings["far"].quality == 2
            assert drv.stats.timeouts == 1           # backed off after its first timeout
            assert drv.stats.unit_state == {"unit 1": "up", "unit 2": "backoff"}
        finally:
            await drv.close()
            await emu.stop()


async def test_rtu_short_answer_is_malformed_not_good(tmp_path: Path) -> None:
    """The pymodbus RTU path: edged checks the count of what pymodbus returns."""
    with socat_pair(tmp_path) as (near, far):
        devices, tags = load_devices(RTU_UNITS.format(port=near).replace("unit_id = 2", "unit_id = 1")
                                     .replace('address = "hr:0"\nunit_id', 'address = "hr:1"\nunit_id'))
        drv = devices["line"].driver
        emu = ModbusEmulator([drv], serial_peers={near: far})
        await emu.start()
        try:
            emu.set_value(tags["line.a"], 5)
            emu.set_value(tags["line.far"], 6)
            emu.malformed(1)                          # one register fewer than asked
            await drv.connect()
            with pytest.raises(ReadFailed, match="malformed") as exc:
                await drv.read("default")
            assert exc.value.kind == "malformed"
            assert drv.stats.errors["malformed"] == 1 and drv.malformed == {"count": 1}
            emu.malformed(1, False)
            assert [r.value for r in await drv.read("default")] == [5, 6]
        finally:
            await drv.close()
            await emu.stop()
