"""Open a serial port with a cell's settings, tolerating pseudo-terminals (socat bridges, HIL rigs, serial-over-IP).

A pty accepts parity and stop-bit settings without applying them, and some kernels refuse them with
EINVAL (or read them back without PARENB), which makes pyserial fail to open a port that works for
libmodbus. ``open_serial`` opens a pty with the requested settings, accepts whatever part of them the
pty ignores, and logs one info line saying so. A real serial line must take every setting: its errors
are raised as they are.

API (kept small for every driver that talks over a serial line)::

    settings = SerialSettings(port="/dev/ttyUSB0", baudrate=19200, parity="E")
    ser = open_serial(settings)      # serial.Serial, open, non-blocking (timeout 0)
    is_pty("/tmp/ttyV0")             # True for a pseudo-terminal (after following links)
"""
from __future__ import annotations

import errno
import logging
import os
import stat
import termios
from dataclasses import dataclass

import serial

log = logging.getLogger(__name__)

# Unix98 pty slaves (/dev/pts/N) use majors 136..143 (Linux devices.txt); BSD-style ttyp* use 3.
_PTY_MAJORS = frozenset(range(136, 144)) | {3}
_PARITY_FLAGS = {"N": 0, "E": termios.PARENB, "O": termios.PARENB | termios.PARODD}


@dataclass(frozen=True, slots=True)
class SerialSettings:
    """Settings of one serial line; every device on the line must agree on them."""

    port: str
    baudrate: int = 19200
    parity: str = "N"
    bytesize: int = 8
    stopbits: int = 1

    def describe(self) -> str:
        """Like ``/dev/ttyUSB0 19200 8N1``."""
        return f"{self.port} {self.baudrate} {self.bytesize}{self.parity}{self.stopbits}"


def is_pty(path: str) -> bool:
    """True when a path (links followed) is a pseudo-terminal slave rather than a real serial line."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    if not stat.S_ISCHR(st.st_mode):
        return False
    real = os.path.realpath(path)
    return real.startswith("/dev/pts/") or os.major(st.st_rdev) in _PTY_MAJORS


def _ignored(ser: serial.Serial, settings: SerialSettings) -> list[str]:
    """The requested settings the open port does not show when read back (parity, stop bits, data bits)."""
    try:
        cflag = termios.tcgetattr(ser.fd)[2]
    except termios.error:
        return []
    out = []
    if cflag & (termios.PARENB | termios.PARODD) != _PARITY_FLAGS.get(settings.parity, 0):
        out.append(f"parity {settings.parity}")
    if bool(cflag & termios.CSTOPB) != (settings.stopbits == 2):
        out.append(f"stopbits {settings.stopbits}")
    size = {7: termios.CS7, 8: termios.CS8}.get(settings.bytesize)
    if size is not None and cflag & termios.CSIZE != size:
        out.append(f"bytesize {settings.bytesize}")
    return out


def open_serial(settings: SerialSettings, exclusive: bool = True) -> serial.Serial:
    """An open, non-blocking ``serial.Serial`` with the requested settings.

    On a pseudo-terminal, settings the pty refuses (EINVAL) or does not keep are accepted: the port is
    opened anyway and one info line names what the pty ignores. Any other failure raises
    ``serial.SerialException`` (or ``termios.error``/``OSError``) as pyserial reports it.
    """
    pty = is_pty(settings.port)
    ser = serial.Serial(None, baudrate=settings.baudrate, bytesize=settings.bytesize, parity=settings.parity,
                        stopbits=settings.stopbits, timeout=0, write_timeout=0, exclusive=exclusive)
    ser.port = settings.port
    try:
        ser.open()
    except (serial.SerialException, termios.error, OSError) as exc:
        code = exc.errno if isinstance(exc, OSError) else (exc.args[0] if exc.args else None)
        if not pty or code != errno.EINVAL:
            raise
        # The pty refused a line setting: open it with the settings a pty takes, then keep the
        # requested ones as the port's nominal settings (the pty carries bytes, not bits).
        ser = serial.Serial(None, baudrate=settings.baudrate, bytesize=8, parity="N", stopbits=1,
                            timeout=0, write_timeout=0, exclusive=exclusive)
        ser.port = settings.port
        ser.open()
        log.info("serial %s is a pseudo-terminal that refuses %s (%s): opened without them; a pty ignores "
                 "line settings", settings.port, settings.describe(), os.strerror(errno.EINVAL))
        return ser
    if pty:
        ignored = _ignored(ser, settings)
        if ignored:
            log.info("serial %s is a pseudo-terminal that ignores %s: accepted as requested (%s)",
                     settings.port, ", ".join(ignored), settings.describe())
    return ser
