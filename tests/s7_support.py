"""Helpers for the S7 tests: cells on free ports, drivers and the emulator in-process."""
from __future__ import annotations

import tomllib
from typing import Any

from daemon_support import free_port
from edged.cell import parse_cell
from edged.drivers.s7.driver import S7Driver
from edged.drivers.s7.emulator import S7Emulator
from edged.tag import Quality, Reading, Tag


def device_doc(port: int, tags: str, name: str = "plc", extra: str = "") -> str:
    """A cell with one S7 device on a loopback port."""
    return f"""
[cell]
name = "t"
[device.{name}]
driver = "s7"
host = "127.0.0.1"
port = {port}
timeout_s = 0.3
{extra}
{tags}
"""


def load(doc: str) -> tuple[dict[str, S7Driver], dict[str, Tag]]:
    """The drivers and tags of a cell document."""
    cell = parse_cell(tomllib.loads(doc), "cell.toml")
    return {n: d.driver for n, d in cell.devices.items()}, {t.key: t for t in cell.tags.values()}  # type: ignore[misc]


async def emulated(doc: str) -> tuple[S7Driver, dict[str, Tag], S7Emulator]:
    """Start an emulator for the cell's one device and connect its driver."""
    drivers, tags = load(doc)
    drv = next(iter(drivers.values()))
    emu = S7Emulator([drv])
    await emu.start()
    await drv.connect()
    return drv, {t.name: t for t in tags.values()}, emu


def by_name(readings: list[Reading]) -> dict[str, Reading]:
    """Readings by tag name."""
    return {r.tag.name: r for r in readings}


def good(readings: list[Reading]) -> dict[str, Any]:
    """Values of the good readings by tag name."""
    return {r.tag.name: r.value for r in readings if r.quality is Quality.GOOD}


__all__ = ["device_doc", "load", "emulated", "by_name", "good", "free_port"]
