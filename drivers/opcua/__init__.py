"""OPC UA client driver for edged (asyncua): subscriptions or batched reads, secure sessions, recovery, browse."""
from edged.drivers.opcua.driver import OpcUaDriver

DRIVER_CLASS = "OpcUaDriver"
EMULATOR_CLASS = "emulator:OpcUaEmulator"

__all__ = ["OpcUaDriver", "DRIVER_CLASS"]
