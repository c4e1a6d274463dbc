"""The systemd notify protocol (READY, STATUS, WATCHDOG, STOPPING) over $NOTIFY_SOCKET, without libsystemd."""
from __future__ import annotations

import os
import socket


def notify(message: str) -> bool:
    """Send one notify datagram; False when not run under systemd (no $NOTIFY_SOCKET) or on failure."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return False
    if path.startswith("@"):
        path = "\0" + path[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(path)
            sock.sendall(message.encode())
        return True
    except OSError:
        return False


def watchdog_interval_s() -> float | None:
    """Half the watchdog period systemd asks for ($WATCHDOG_USEC), or None when there is no watchdog."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid.isdigit() and int(pid) != os.getpid()):
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 2e6 if value > 0 else None  # 0 or a negative value would feed the watchdog in a busy loop
