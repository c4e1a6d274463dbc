"""Signal-generator driver for commissioning, demos and tests: counter, ramp, sine, square, random, constant."""
from edged.drivers.sim.driver import SimDriver

DRIVER_CLASS = "SimDriver"
EMULATOR_CLASS = "driver:SimEmulator"

__all__ = ["SimDriver", "DRIVER_CLASS"]
