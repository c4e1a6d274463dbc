"""Modbus TCP/RTU driver for edged: addresses, request planning, Cython codec, shared RTU lines, emulator."""
from edged.drivers.modbus.driver import ModbusDriver

DRIVER_CLASS = "ModbusDriver"

__all__ = ["ModbusDriver", "DRIVER_CLASS"]
