"""Control in the daemon (edged run as a subprocess) against a real pymodbus server in the test: safe values
written on SIGTERM, and a retained counter that continues its count after a restart."""
from __future__ import annotations

import asyncio
import json
import threading
import tomllib
from pathlib import Path
from typing import Any

import pytest

from daemon_support import Proc, eventually, free_port
from edged.driver import emulator_for
from edged.cell import parse_cell
from edged.control.retain import decode, retain_path

CELL = """
[cell]
name = "ctl"
state_dir = "{state}"
heartbeat_s = 0

[metrics]
enabled = false

[device.press1]
driver = "modbus"
host = "127.0.0.1"
port = {port}
timeout_s = 2.0
backoff_initial_s = 0.2
backoff_max_s = 1.0

[device.press1.tag.motor_enable]
address = "co:0"
type = "bool"
access = "write"
scan_ms = 50

[device.press1.tag.speed_sp]
address = "hr:0"
type = "uint16"
access = "write"
scan_ms = 50

[device.press1.tag.good_parts]
address = "hr:10"
type = "uint32"
access = "write"
scan_ms = 50

[device.press1.tag.alive]
address = "co:1"
type = "bool"
access = "write"
scan_ms = 50

[task.fast]
period_us = 5000

[task.fast.block.run]
type = "MOVE"
in = {{ IN = true }}
out = {{ OUT = "press1.motor_enable" }}
safe = {{ OUT = false }}

[task.fast.block.speed]
type = "MOVE"
in = {{ IN = 1500 }}
out = {{ OUT = "press1.speed_sp" }}
safe = {{ OUT = 0 }}

[task.fast.block.pulse]
type = "HEARTBEAT"
in = {{ PT = "20ms" }}
out = {{ Q = "press1.alive" }}
report = false

[task.fast.block.parts]
type = "CTU"
in = {{ CU = "pulse.Q", PV = 1000000 }}
out = {{ CV = "press1.good_parts" }}
retain = true
retain_interval_ms = {retain_ms}
"""


class ThreadedEmulator:
    """The Modbus emulator (pymodbus servers) on its own event loop thread, for tests of a daemon subprocess."""

    def __init__(self, cell: Any) -> None:
        drv = cell.devices["press1"].driver
        self.tags = cell.tags
        self.emu = emulator_for([drv])
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> "ThreadedEmulator":
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.emu.start(), self.loop).result(30)
        return self

    def __exit__(self, *exc: Any) -> None:
        asyncio.run_coroutine_threadsafe(self.emu.stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    def get(self, key: str) -> Any:
        return self.emu.get_value(self.tags[key])

    def set(self, key: str, value: Any) -> None:
        self.loop.call_soon_threadsafe(self.emu.set_value, self.tags[key], value)


def _cell(tmp_path: Path, retain_ms: int = 100) -> tuple[Path, Any]:
    text = CELL.format(state=tmp_path / "state", port=free_port(), retain_ms=retain_ms)
    # retain_interval_ms is a task key: move it from the block table to the task table
    text = text.replace(f"retain = true\nretain_interval_ms = {retain_ms}\n", "retain = true\n")
    text = text.replace("[task.fast]\nperiod_us = 5000\n", f"[task.fast]\nperiod_us = 5000\nretain_interval_ms = {retain_ms}\n")
    path = tmp_path / "cell.toml"
    path.write_text(text)
    return path, parse_cell(tomllib.loads(text), str(path))


def _samples(state: Path, tag: str) -> list[Any]:
    lines = [json.loads(x) for x in (state / "samples.jsonl").read_text().splitlines() if x.strip()]
    return [x["value"] for x in lines if x.get("device") == "fast" and x.get("tag") == tag and x["quality"] == "good"]


def test_sigterm_writes_safe_values_to_the_device(tmp_path: Path) -> None:
    path, cell = _cell(tmp_path)
    with ThreadedEmulator(cell) as emu:
        d = Proc(["run", "-c", str(path)], tmp_path)
        try:
            eventually(lambda: emu.get("press1.motor_enable") is True and emu.get("press1.speed_sp") == 1500,
                       30, what="control outputs written")
        finally:
            rc = d.stop()
        assert rc == 0, d.stderr
        # after the daemon exited, the device holds the safe values, and each write was logged
        assert emu.get("press1.motor_enable") is False, d.stderr
        assert emu.get("press1.speed_sp") == 0
    assert "stop: wrote safe value press1.motor_enable = False" in d.stderr
    assert "stop: wrote safe value press1.speed_sp = 0" in d.stderr
    assert "Traceback" not in d.stderr


def test_retained_counter_continues_after_a_daemon_restart(tmp_path: Path) -> None:
    path, cell = _cell(tmp_path)
    state = tmp_path / "state"
    with ThreadedEmulator(cell) as emu:
        d = Proc(["run", "-c", str(path)], tmp_path)
        try:
            eventually(lambda: (emu.get("press1.good_parts") or 0) >= 5, 30, what="counted 5 parts")
        finally:
            assert d.stop() == 0, d.stderr
        saved = decode(retain_path(state, "fast").read_bytes(), "fast")
        assert saved["parts"][0] == "CTU"
        n1 = int(saved["parts"][1][0])
        assert n1 >= 5

        emu.set("press1.good_parts", 0)           # the device forgets: only the retained state can continue
        d2 = Proc(["run", "-c", str(path)], tmp_path)
        try:
            d2.wait_for(r"restored the retained state of 1 block", 30, stream="err")
            eventually(lambda: (emu.get("press1.good_parts") or 0) > n1, 30, what="counting on from the retained value")
        finally:
            assert d2.stop() == 0, d2.stderr
    cv = _samples(state, "parts.CV")
    # one count across both runs: 0, 1, ... n1 (stop) n1 (the first cycle after the restart reports the
    # retained count), n1 + 1, ... A cold restart would report 0 again.
    assert cv.count(n1) == 2
    steps = [v for i, v in enumerate(cv) if i == 0 or v != cv[i - 1]]
    assert steps == list(range(0, steps[-1] + 1)) and steps[-1] > n1


def test_a_corrupted_retain_file_is_reported_and_the_block_starts_cold(tmp_path: Path) -> None:
    path, cell = _cell(tmp_path)
    state = tmp_path / "state"
    f = retain_path(state, "fast")
    f.parent.mkdir(parents=True)
    good = json.dumps({"format": "edged-retain", "version": 1, "sha256": "0" * 64,
                       "body": {"task": "fast", "blocks": {"parts": {"type": "CTU", "s": [500, 0, 0, 0],
                                                                     "elapsed_ns": 0}}}})
    f.write_text(good)
    with ThreadedEmulator(cell) as emu:
        d = Proc(["run", "-c", str(path)], tmp_path)
        try:
            d.wait_for(r"retained state .* rejected: checksum mismatch", 30, stream="err")
            eventually(lambda: (emu.get("press1.good_parts") or 0) >= 2, 30, what="counting")
        finally:
            assert d.stop() == 0, d.stderr
    cv = _samples(state, "parts.CV")
    assert cv[0] == 0 and max(cv) < 500         # cold: nothing of the rejected file was loaded
    assert (f.parent / "fast.json.bad").read_text() == good
    assert cv[-1] <= decode(f.read_bytes(), "fast")["parts"][1][0] < 500   # a good file replaced it
