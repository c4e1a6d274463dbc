"""Transports shared by drivers: opening serial ports (real lines and pseudo-terminals alike)."""
