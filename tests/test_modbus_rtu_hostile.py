"""RTU through pymodbus, checked by edged: a hostile RTU device on a socat pty never gets an invented value good."""
from __future__ import annotations

import logging
import struct
import threading
from pathlib import Path

import pytest

from edged.drivers.modbus.driver import ModbusDriver
from edged.errors import DeviceUnavailable, ReadFailed
from edged.tag import Quality
from edged.transport.serial import SerialSettings, open_serial
from modbus_support import load_devices, socat_pair

pytestmark = pytest.mark.timeout(120)

REAL = [1000, 1001, 1002, 1003]
FAKE = [0xDEAD] * 5


def crc16(data: bytes) -> bytes:
    crc = 0xFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return struct.pack("<H", crc)


def rtu(pdu: bytes) -> bytes:
    return pdu + crc16(pdu)


def answer(case: str, unit: int, fc: int, count: int) -> bytes:
    real = struct.pack(f">{count}H", *REAL[:count])
    fake = struct.pack(f">{count}H", *FAKE[:count])
    if case == "ok":
        return rtu(bytes([unit, fc, len(real)]) + real)
    if case == "wrong_unit":
        return rtu(bytes([unit + 1, fc, len(fake)]) + fake)
    if case == "more_registers":
        more = struct.pack(f">{count + 1}H", *FAKE[:count + 1])
        return rtu(bytes([unit, fc, len(more)]) + more)
    if case == "lying_bytecount":
        return rtu(bytes([unit, fc, len(fake) + 2]) + fake)
    if case == "wrong_function":
        return rtu(bytes([unit, 4 if fc == 3 else 3, len(fake)]) + fake)
    if case == "exception_wrong_fc":
        return rtu(bytes([unit, 0x84, 2]))
    if case == "bad_crc":
        return bytes([unit, fc, len(fake)]) + fake + b"\x00\x00"
    raise ValueError(case)


CASES = ["ok", "wrong_unit", "more_registers", "lying_bytecount", "wrong_function", "exception_wrong_fc", "bad_crc"]


class HostileRtu:
    """Answers every read request on the far end of a pty pair as the current case says."""

    def __init__(self, port: str) -> None:
        self.ser = open_serial(SerialSettings(port, 115200))
        self.case = "ok"
        self.running = True
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        import time
        buf = b""
        while self.running:
            try:
                buf += self.ser.read(256)
            except Exception:
                return
            while len(buf) >= 8:
                req, buf = buf[:8], buf[8:]
                unit, fc, _start, count = struct.unpack(">BBHH", req[:6])
                self.ser.write(answer(self.case, unit, fc, count))
            time.sleep(0.002)

    def stop(self) -> None:
        self.running = False
        self.thread.join(5)
        self.ser.close()


DOC = """
[device.d]
driver = "modbus"
transport = "rtu"
port = "{port}"
baudrate = 115200
timeout_s = 0.3
[device.d.tag.r0]
address = "hr:0"
[device.d.tag.r1]
address = "hr:1"
[device.d.tag.r2]
address = "hr:2"
[device.d.tag.r3]
address = "hr:3"
"""


@pytest.mark.parametrize("case", CASES)
async def test_hostile_rtu_answers_never_give_invented_values(tmp_path: Path, case: str,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    with socat_pair(tmp_path) as (near, far):
        dev = HostileRtu(far)
        dev.case = case
        devices, _ = load_devices(DOC.format(port=near))
        drv: ModbusDriver = devices["d"].driver
        try:
            with caplog.at_level(logging.DEBUG):
                await drv.connect()
                try:
                    readings = await drv.read("default")
                except (ReadFailed, DeviceUnavailable):
                    readings = []
            good = [r for r in readings if r.quality is Quality.GOOD]
            if case == "ok":
                assert [r.value for r in good] == REAL
            else:
                assert good == [], good
                assert drv.stats.errors.get("malformed", 0) + drv.stats.errors.get("timeout", 0) >= 1
            assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
            assert "Fatal error" not in caplog.text
        finally:
            await drv.close()
            dev.stop()
