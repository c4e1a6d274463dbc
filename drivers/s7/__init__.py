"""Siemens S7 driver for edged (python-snap7): TIA/PLC4X/nodeS7 addresses, packed reads, bit writes, emulator."""
from typing import Any

DRIVER_CLASS = "S7Driver"
EMULATOR_CLASS = "emulator:S7Emulator"

__all__ = ["S7Driver", "DRIVER_CLASS"]


def __getattr__(name: str) -> Any:
    """Import the driver class on first use (address parsing and tag import do not need it)."""
    if name == "S7Driver":
        from edged.drivers.s7.driver import S7Driver
        return S7Driver
    raise AttributeError(name)
