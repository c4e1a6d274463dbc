"""Helpers for the CNC tests: cells with a GRBL machine on a pty link and a Haas machine on TCP, and the
emulator in a thread of its own (for tests that run the daemon as a subprocess)."""
from __future__ import annotations

import asyncio
import threading
import tomllib
from pathlib import Path
from typing import Any, Callable

from daemon_support import free_port
from edged.cell import Cell, parse_cell
from edged.drivers.cnc.emulator import CncEmulator

GRBL_FIELDS = ["status.state", "status.substate", "mpos.x", "mpos.y", "mpos.z", "wpos.x", "wpos.y", "wpos.z",
               "wco.x", "fs.feed", "fs.spindle", "bf.planner", "bf.rx", "ln", "pins", "pin.x", "acc",
               "acc.flood", "ov.feed", "ov.rapid", "ov.spindle", "build.version", "build.date", "build.options",
               "build.planner_blocks", "build.rx_buffer", "error.code", "error.text", "alarm.code", "alarm.text",
               "msg", "count.ok", "count.error", "count.alarm", "count.reset", "setting:110", "machine.state",
               "machine.parts", "machine.alarm", "machine.alarm_code"]
HAAS_FIELDS = ["q100.serial", "q101.version", "q102.model", "q104.mode", "q200.tool_changes", "q201.tool",
               "q300.power_on_s", "q301.cycle_start_s", "q303.last_cycle_s", "q304.prev_cycle_s", "q402.m30_1",
               "q403.m30_2", "q500.program", "q500.status", "q500.parts", "macro:5041", "machine.state",
               "machine.parts"]


def tag_name(field: str) -> str:
    """A tag name for a field (``mpos.x`` -> ``mpos_x``)."""
    return field.replace(".", "_").replace(":", "_")


def cell_text(tmp: Path, *, grbl_port: str | None = None, haas_port: str | None = None, timeout: float = 1.0,
              extra: str = "", head: str = "") -> str:
    """A cell with device ``g`` (GRBL, every field) and ``h`` (Haas, every field)."""
    grbl_port = grbl_port or str(tmp / "grbl.tty")
    haas_port = haas_port or f"tcp://127.0.0.1:{free_port()}"
    text = head or f'[cell]\nname = "cnc"\nstate_dir = "{tmp / "state"}"\nheartbeat_s = 0\n\n[metrics]\nenabled = false\n'
    text += f"""
[scan.fast]
interval_ms = 100

[device.g]
driver = "cnc"
dialect = "grbl"
port = "{grbl_port}"
timeout_s = {timeout}
backoff_initial_s = 0.1
backoff_max_s = 0.5
allow_reset = true
stream_dir = "{tmp}"
"""
    for f in GRBL_FIELDS:
        text += f'\n[device.g.tag.{tag_name(f)}]\naddress = "{f}"\nscan = "fast"\n'
    for f in ("cmd.feed_hold", "cmd.cycle_start", "cmd.reset", "cmd.stream"):
        text += f'\n[device.g.tag.{tag_name(f)}]\naddress = "{f}"\naccess = "write"\nscan = "fast"\n'
    for f in ("stream.state", "stream.acked", "stream.total", "stream.progress", "stream.error"):
        text += f'\n[device.g.tag.{tag_name(f)}]\naddress = "{f}"\nscan = "fast"\n'
    text += f"""
[device.h]
driver = "cnc"
dialect = "haas"
port = "{haas_port}"
timeout_s = {timeout}
backoff_initial_s = 0.1
backoff_max_s = 0.5
"""
    for f in HAAS_FIELDS:
        text += f'\n[device.h.tag.{tag_name(f)}]\naddress = "{f}"\n'
    return text + extra


def load(text: str) -> Cell:
    """Parse a cell text."""
    return parse_cell(tomllib.loads(text), "cnc-test.toml")


class EmulatorThread:
    """A CncEmulator on its own event loop in a thread; ``call(fn, *args)`` runs a hook on that loop."""

    def __init__(self, cell: Cell, auto: bool = False) -> None:
        self.loop = asyncio.new_event_loop()
        self.emu: CncEmulator | None = None
        self._cell = cell
        self._auto = auto
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> "EmulatorThread":
        self._thread.start()
        drivers = [d.driver for d in self._cell.devices.values() if d.spec.driver == "cnc"]

        async def start() -> CncEmulator:
            emu = CncEmulator(drivers, auto=self._auto)
            await emu.start()
            return emu

        self.emu = asyncio.run_coroutine_threadsafe(start(), self.loop).result(10)
        return self

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run a function on the emulator's loop and return its result."""
        async def run() -> Any:
            return fn(*args)
        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(10)

    def __exit__(self, *exc: object) -> None:
        assert self.emu is not None
        asyncio.run_coroutine_threadsafe(self.emu.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
