"""Modbus TCP/RTU driver for edged: addresses, request planning, Cython codec, shared RTU lines, emulator."""
from edged.drivers.modbus.driver import ModbusDriver

DRIVER_CLASS = "ModbusDriver"
EMULATOR_CLASS = "emulator:ModbusEmulator"

__all__ = ["ModbusDriver", "DRIVER_CLASS"]
