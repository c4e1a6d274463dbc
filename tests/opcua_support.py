"""Helpers for the OPC UA tests: cell texts for an emulated server, loading them, collecting readings."""
from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any, Callable

from edged.cell import Cell, load_cell
from edged.tag import Quality, Reading

NS = "urn:acme:robot"

TAGS = f"""
[device.{{dev}}.tag.axis]
address = "nsu={NS};s=Axis1"
type = "float64"
unit = "deg"
scan = "fast"

[device.{{dev}}.tag.count]
address = "nsu={NS};i=1001"
type = "uint32"
scan = "fast"

[device.{{dev}}.tag.running]
address = "nsu={NS};s=Running"
type = "bool"
scan = "fast"

[device.{{dev}}.tag.program]
address = "/Objects/<{NS}>Controller/<{NS}>Program"
type = "string"

[device.{{dev}}.tag.joints]
address = "nsu={NS};s=Joints"
type = "float64"
dims = [3]
unit = "deg"

[device.{{dev}}.tag.level]
address = "ns=2;s=Level"
type = "int16"

[device.{{dev}}.tag.when]
address = "nsu={NS};s=LastCycle"
type = "datetime"

[device.{{dev}}.tag.temp]
address = "nsu={NS};s=Temp"
type = "float32"
unit = "degC"
deadband = 1.0

[device.{{dev}}.tag.speed]
address = "nsu={NS};s=SpeedOverride"
type = "float64"
access = "write"
min = 0
max = 100
"""

VALUES: dict[str, Any] = {"axis": 12.5, "count": 42, "running": True, "program": "PICK01",
                          "joints": [1.0, 2.0, 3.0], "level": -7, "when": "2026-05-01T10:00:00.000000Z",
                          "temp": 21.5, "speed": 50.0}


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cell_text(port: int, dev: str = "robot", keys: str = 'security_policy = "None"', tags: str = TAGS,
              fast_ms: int = 100) -> str:
    """A cell with one OPC UA device at 127.0.0.1:port, the test tags and a fast scan group."""
    return (f'[cell]\nname = "opcua-test"\n\n[scan.fast]\ninterval_ms = {fast_ms}\n\n'
            f'[device.{dev}]\ndriver = "opcua"\nendpoint = "opc.tcp://127.0.0.1:{port}"\ntimeout_s = 1.0\n'
            f'keepalive_s = 0.5\nstatus_interval_s = 0.5\n{keys}\n' + tags.replace("{dev}", dev))


def load(tmp_path: Path, text: str, name: str = "cell.toml") -> Cell:
    """Write a cell into tmp_path (relative paths resolve there) and load it."""
    path = tmp_path / name
    path.write_text(text)
    return load_cell(path)


class Collector:
    """Readings delivered by a driver or runner: all of them, and the latest per tag name."""

    def __init__(self) -> None:
        self.all: list[Reading] = []
        self.latest: dict[str, Reading] = {}

    def __call__(self, readings: list[Reading]) -> None:
        self.all.extend(readings)
        for r in readings:
            self.latest[r.tag.name] = r

    def value(self, name: str) -> Any:
        """The latest good or uncertain value of a tag (None when bad or not seen)."""
        r = self.latest.get(name)
        return None if r is None or r.quality == Quality.BAD else r.value

    def quality(self, name: str) -> Quality | None:
        """The latest quality of a tag."""
        r = self.latest.get(name)
        return None if r is None else Quality(r.quality)


async def until(cond: Callable[[], object], timeout: float = 20.0, what: str = "") -> None:
    """Wait until cond() is true (polling every 20 ms); fail with `what` after timeout."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for {what or cond}")
        await asyncio.sleep(0.02)


def set_all(emu: Any, cell: Cell, values: dict[str, Any] = VALUES, dev: str = "robot") -> None:
    """Set every test value on the emulator."""
    for name, v in values.items():
        emu.set_value(cell.tags[f"{dev}.{name}"], v)
