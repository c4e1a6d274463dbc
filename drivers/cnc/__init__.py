"""Serial CNC driver: GRBL 1.1 and Haas Q-command machines over RS-232 or TCP, with their machine state."""
from edged.drivers.cnc.driver import CncDriver

DRIVER_CLASS = "CncDriver"
EMULATOR_CLASS = "emulator:CncEmulator"

__all__ = ["CncDriver", "DRIVER_CLASS"]
