"""A whole cell in-process: Modbus inputs drive an interlock and a part counter whose outputs are written
back to a real pymodbus server, read back by the scan, and reported to the sink."""
from __future__ import annotations

import asyncio
import json
import tomllib
from pathlib import Path

from daemon_support import free_port
from edged.driver import emulator_for
from edged.cell import parse_cell
from edged.runtime import Runtime
from edged.tag import Quality

CELL = """
[cell]
name = "ctl"
state_dir = "{state}"

[metrics]
enabled = false

[device.press1]
driver = "modbus"
host = "127.0.0.1"
port = {port}
timeout_s = 5.0

[device.press1.tag.part_sensor]
address = "10001"
type = "bool"
scan_ms = 20

[device.press1.tag.guard_closed]
address = "10002"
type = "bool"
scan_ms = 20

[device.press1.tag.oil_temp]
address = "hr:0"
type = "float32"
scan_ms = 20

[device.press1.tag.good_parts]
address = "hr:10"
type = "uint32"
access = "write"
min = 0
max = 1000000
scan_ms = 20

[device.press1.tag.machine_state]
address = "hr:20"
type = "uint16"
access = "write"
scan_ms = 20

[device.press1.tag.motor_enable]
address = "co:0"
type = "bool"
access = "write"
scan_ms = 20

[device.press1.tag.oil_high]
address = "co:1"
type = "bool"
access = "write"
scan_ms = 20

[task.fast]
period_us = 2000

[task.fast.block.part_edge]
type = "R_TRIG"
in = {{ CLK = "press1.part_sensor" }}

[task.fast.block.parts]
type = "CTU"
in = {{ CU = "part_edge.Q", PV = 1000 }}
out = {{ CV = "press1.good_parts" }}

[task.fast.block.hot]
type = "GT"
in = {{ IN1 = "press1.oil_temp", IN2 = 80.0, HYST = 5.0 }}

[task.fast.block.hot_out]
type = "MOVE"
in = {{ IN = "hot.OUT" }}
out = {{ OUT = "press1.oil_high" }}

[task.fast.block.cool]
type = "NOT"
in = {{ IN = "hot.OUT" }}

[task.fast.block.permit]
type = "AND"
in = {{ IN1 = "press1.guard_closed", IN2 = "cool.OUT" }}
out = {{ OUT = "press1.motor_enable" }}
safe = {{ OUT = false }}
bad_after_ms = 500

[task.slow]
period_us = 10000

[task.slow.block.state]
type = "SEL"
in = {{ G = "press1.oil_high", IN0 = 1, IN1 = 2 }}     # tasks exchange values through tags
out = {{ OUT = "press1.machine_state" }}
"""


async def until(cond, timeout: float = 30.0, what: str = "condition") -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        assert loop.time() < end, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


async def test_interlock_and_counter_write_back_to_modbus(tmp_path: Path) -> None:
    cell = parse_cell(tomllib.loads(CELL.format(state=tmp_path / "state", port=free_port())), "cell.toml")
    tags = cell.tags
    drv = cell.devices["press1"].driver
    emu = emulator_for([drv])
    await emu.start()
    emu.set_value(tags["press1.part_sensor"], False)
    emu.set_value(tags["press1.guard_closed"], True)
    emu.set_value(tags["press1.oil_temp"], 60.0)
    rt = Runtime(cell, serve_metrics=False)
    await rt.start()

    def current(key: str):
        return rt.current.get(key, (None, Quality.BAD, 0))[:2]

    def device(key: str):
        return emu.get_value(tags[key])

    try:
        fast = rt.control.tasks[0]
        # interlock permits, counter starts at 0, state idle-running (1); all read back by the scan
        await until(lambda: device("press1.motor_enable") is True, what="motor enabled")
        await until(lambda: current("press1.good_parts") == (0, Quality.GOOD), what="counter read back")
        await until(lambda: device("press1.machine_state") == 1, what="state 1")

        for n in range(1, 4):
            emu.set_value(tags["press1.part_sensor"], True)
            await until(lambda: device("press1.good_parts") == n, what=f"count {n} written")
            emu.set_value(tags["press1.part_sensor"], False)
            await until(lambda: current("press1.part_sensor") == (False, Quality.GOOD), what="sensor off")
            seen = fast.thread.cycles
            await until(lambda: fast.thread.cycles >= seen + 2, what="cycles after sensor off")
        await until(lambda: current("press1.good_parts") == (3, Quality.GOOD), what="count 3 read back")

        # overheat opens the interlock and moves the state machine (through a tag into the slow task)
        emu.set_value(tags["press1.oil_temp"], 90.0)
        await until(lambda: device("press1.motor_enable") is False, what="interlock open")
        await until(lambda: device("press1.machine_state") == 2, what="state 2")
        emu.set_value(tags["press1.oil_temp"], 78.0)      # inside the hysteresis band: still hot
        await until(lambda: current("press1.oil_temp") == (78.0, Quality.GOOD), what="78 read")
        seen = fast.thread.cycles
        await until(lambda: fast.thread.cycles >= seen + 5, what="cycles at 78")
        assert device("press1.motor_enable") is False
        emu.set_value(tags["press1.oil_temp"], 70.0)
        await until(lambda: device("press1.motor_enable") is True, what="interlock closed again")
        await until(lambda: device("press1.machine_state") == 1, what="state back to 1")

        # the guard opening drops the permit at once
        emu.set_value(tags["press1.guard_closed"], False)
        await until(lambda: device("press1.motor_enable") is False, what="guard open")
        await until(lambda: current("press1.motor_enable") == (False, Quality.GOOD), what="enable read back")
    finally:
        await rt.stop()
        await emu.stop()

    lines = [json.loads(x) for x in (tmp_path / "state" / "samples.jsonl").read_text().splitlines()]
    cv = [x["value"] for x in lines
          if x.get("device") == "fast" and x.get("tag") == "parts.CV" and x["quality"] == "good"]
    assert cv == [0, 1, 2, 3]
    permit = [x["value"] for x in lines if x.get("device") == "fast" and x.get("tag") == "permit.OUT"
              and x["quality"] == "good"]
    assert permit == [True, False, True, False]
    read_back = [x["value"] for x in lines if x.get("device") == "press1" and x.get("tag") == "good_parts"]
    assert read_back[-1] == 3
