"""Async byte streams for line protocols: a serial port (pyserial, every line setting) or ``tcp://host:port``.

Reads and writes never block the event loop: a serial port is a non-blocking file descriptor watched
with ``loop.add_reader``/``add_writer``; TCP uses asyncio streams. A stream is opened by the path the
config names on every (re)connect, so a USB adapter that comes back under another ``ttyUSB`` number
is found again through its stable link (``/dev/serial/by-id/...``); the caller (a driver under the
DeviceRunner) retries with backoff while the path is absent.

API::

    settings = StreamSettings("/dev/serial/by-id/usb-FTDI-if00-port0", baudrate=9600, bytesize=7,
                              parity="E", stopbits=2, xonxoff=True)
    stream = await open_stream(settings, timeout=1.0)   # SerialStream or TcpStream
    stream.write(b"?Q100\\r\\n")                         # never blocks; queued if the line is busy
    data = await stream.read()                          # the bytes that arrived (waits for at least one)
    stream.close()

Lost lines (EOF, EIO from an unplugged adapter or a closed pty master) raise ``StreamClosed``.
``SharedPorts`` hands one open stream to several users of the same port with the same settings (and
refuses different settings), with a lock so that one conversation runs at a time.
"""
from __future__ import annotations

import asyncio
import errno
import logging
import os
import select
from dataclasses import dataclass, replace
from typing import Any

from edged.transport.serial import SerialSettings, is_pty, open_serial

log = logging.getLogger(__name__)

TCP_PREFIX = "tcp://"
READ_CHUNK = 4096
MAX_WRITE_BUFFER = 256 * 1024  # bytes queued for a line that does not drain; more is a lost line


class StreamClosed(ConnectionError):
    """The other end went away: EOF, an unplugged adapter (EIO/ENODEV), a closed socket."""


@dataclass(frozen=True, slots=True)
class StreamSettings:
    """Where a stream goes and, for a serial port, every line setting pyserial offers."""

    url: str  # a serial device path, or tcp://host:port
    baudrate: int = 9600
    bytesize: int = 8
    parity: str = "N"
    stopbits: int = 1
    xonxoff: bool = False
    rtscts: bool = False
    dtr: bool | None = None  # None: leave the line as pyserial sets it on open (asserted)
    rts: bool | None = None

    @property
    def is_tcp(self) -> bool:
        """True for ``tcp://host:port``."""
        return self.url.startswith(TCP_PREFIX)

    def describe(self) -> str:
        """Like ``/dev/ttyUSB0 9600 7E2 xonxoff`` or ``tcp://10.0.0.5:5051``."""
        if self.is_tcp:
            return self.url
        flow = " xonxoff" if self.xonxoff else ""
        flow += " rtscts" if self.rtscts else ""
        return f"{self.url} {self.baudrate} {self.bytesize}{self.parity}{self.stopbits}{flow}"

    def serial(self) -> SerialSettings:
        """The settings the core's ``open_serial`` takes."""
        return SerialSettings(port=self.url, baudrate=self.baudrate, parity=self.parity, bytesize=self.bytesize,
                              stopbits=self.stopbits)


def parse_tcp_url(url: str) -> tuple[str, int]:
    """``tcp://host:port`` -> (host, port); ValueError with the expected form otherwise."""
    rest = url[len(TCP_PREFIX):] if url.startswith(TCP_PREFIX) else None
    if rest is None:
        raise ValueError(f"expected tcp://HOST:PORT, found {url!r}")
    host, sep, port = rest.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not (port.isascii() and port.isdigit()) or not 1 <= int(port) <= 65535 \
            or any(c.isspace() or c in "/?#@" for c in host):
        raise ValueError(f"expected tcp://HOST:PORT with a port 1 to 65535, found {url!r}")
    return host, int(port)


class ByteStream:
    """A bidirectional byte stream; subclasses implement the I/O."""

    settings: StreamSettings

    async def read(self) -> bytes:
        """The bytes received so far, waiting for at least one; StreamClosed when the line is lost."""
        raise NotImplementedError

    def write(self, data: bytes) -> None:
        """Queue bytes for sending without blocking; StreamClosed when the line is lost or does not drain."""
        raise NotImplementedError

    async def drain(self) -> None:
        """Wait until queued bytes are handed to the OS."""

    def close(self) -> None:
        """Release the port or socket (idempotent)."""
        raise NotImplementedError

    @property
    def closed(self) -> bool:
        """True after close() or a lost line."""
        raise NotImplementedError


class SerialStream(ByteStream):
    """A serial port as a non-blocking fd watched by the event loop (pyserial opens and configures it)."""

    def __init__(self, ser: Any, settings: StreamSettings, loop: asyncio.AbstractEventLoop) -> None:
        self.settings = settings
        self.ser = ser
        self.fd: int = ser.fd
        self._loop = loop
        self._rx = bytearray()
        self._tx = bytearray()
        self._event = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()
        self._error: BaseException | None = None
        self._closed = False
        self._writing = False
        loop.add_reader(self.fd, self._on_readable)

    def _on_readable(self) -> None:
        try:
            data = os.read(self.fd, READ_CHUNK)
        except BlockingIOError:
            return
        except OSError as exc:  # EIO: pty master closed / adapter gone; ENODEV, ENXIO: device removed
            self._lose(StreamClosed(f"{self.settings.url}: {exc.strerror or exc}"))
            return
        if not data:
            # A tty in raw mode (VMIN 0) reads 0 bytes when nothing is there (another reader of the port took
            # the data, a spurious wake-up); only a hang-up (an adapter gone) is the end of the line
            if _hung_up(self.fd):
                self._lose(StreamClosed(f"{self.settings.url}: hung up (line closed)"))
            return
        self._rx += data
        self._event.set()

    def _lose(self, exc: BaseException) -> None:
        if self._error is None:
            self._error = exc
        self._stop_watching()
        self._event.set()
        self._drained.set()

    def _stop_watching(self) -> None:
        if self._closed:
            return
        try:
            self._loop.remove_reader(self.fd)
            if self._writing:
                self._loop.remove_writer(self.fd)
                self._writing = False
        except (ValueError, OSError):  # fd already closed
            pass

    async def read(self) -> bytes:
        """The bytes received so far, waiting for at least one."""
        while not self._rx:
            if self._error is not None:
                raise self._error
            if self._closed:
                raise StreamClosed(f"{self.settings.url}: closed")
            self._event.clear()
            await self._event.wait()
        data = bytes(self._rx)
        self._rx.clear()
        return data

    def write(self, data: bytes) -> None:
        """Send what the OS takes now; queue the rest and send it when the fd is writable."""
        if self._error is not None:
            raise self._error
        if self._closed:
            raise StreamClosed(f"{self.settings.url}: closed")
        if not data:
            return
        if self._tx:
            self._queue(data)
            return
        try:
            n = os.write(self.fd, data)
        except BlockingIOError:
            n = 0
        except OSError as exc:
            self._lose(StreamClosed(f"{self.settings.url}: write failed: {exc.strerror or exc}"))
            raise self._error from None  # type: ignore[misc]
        if n < len(data):
            self._queue(data[n:])

    def _queue(self, data: bytes) -> None:
        if len(self._tx) + len(data) > MAX_WRITE_BUFFER:
            self._lose(StreamClosed(f"{self.settings.url}: the line does not take data "
                                    f"({len(self._tx)} bytes queued)"))
            raise self._error  # type: ignore[misc]
        self._tx += data
        self._drained.clear()
        if not self._writing:
            self._loop.add_writer(self.fd, self._on_writable)
            self._writing = True

    def _on_writable(self) -> None:
        try:
            n = os.write(self.fd, self._tx)
        except BlockingIOError:
            return
        except OSError as exc:
            self._lose(StreamClosed(f"{self.settings.url}: write failed: {exc.strerror or exc}"))
            return
        del self._tx[:n]
        if not self._tx:
            self._loop.remove_writer(self.fd)
            self._writing = False
            self._drained.set()

    async def drain(self) -> None:
        """Wait until the queue is empty (or the line is lost)."""
        await self._drained.wait()
        if self._error is not None:
            raise self._error

    def close(self) -> None:
        """Stop watching the fd and close the port."""
        if self._closed:
            return
        self._stop_watching()
        self._closed = True
        self._event.set()
        self._drained.set()
        try:
            self.ser.close()
        except OSError:
            pass

    @property
    def closed(self) -> bool:
        """True after close() or a lost line."""
        return self._closed or self._error is not None


def _hung_up(fd: int) -> bool:
    """True when the tty reports a hang-up or an error (poll, no wait)."""
    p = select.poll()
    p.register(fd, select.POLLIN)
    try:
        events = p.poll(0)
    except OSError:
        return True
    return any(ev & (select.POLLHUP | select.POLLERR | select.POLLNVAL) for _, ev in events)


class TcpStream(ByteStream):
    """A TCP connection (Haas MDC over Ethernet, a serial-to-Ethernet converter) on asyncio streams."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, settings: StreamSettings) -> None:
        self.settings = settings
        self._reader = reader
        self._writer = writer
        self._closed = False
        self._error: BaseException | None = None

    async def read(self) -> bytes:
        """The bytes received so far, waiting for at least one."""
        if self._error is not None:
            raise self._error
        try:
            data = await self._reader.read(READ_CHUNK)
        except OSError as exc:
            self._error = StreamClosed(f"{self.settings.url}: {exc.strerror or exc}")
            raise self._error from None
        if not data:
            self._error = StreamClosed(f"{self.settings.url}: connection closed by the device")
            raise self._error
        return data

    def write(self, data: bytes) -> None:
        """Queue bytes on the socket."""
        if self._error is not None:
            raise self._error
        if self._closed or self._writer.is_closing():
            raise StreamClosed(f"{self.settings.url}: closed")
        if self._writer.transport.get_write_buffer_size() + len(data) > MAX_WRITE_BUFFER:
            self._error = StreamClosed(f"{self.settings.url}: the connection does not take data")
            raise self._error
        self._writer.write(data)

    async def drain(self) -> None:
        """Wait for the socket's write buffer to drain."""
        try:
            await self._writer.drain()
        except OSError as exc:
            self._error = StreamClosed(f"{self.settings.url}: {exc.strerror or exc}")
            raise self._error from None

    def close(self) -> None:
        """Close the socket (without waiting)."""
        if not self._closed:
            self._closed = True
            self._writer.close()

    @property
    def closed(self) -> bool:
        """True after close() or a lost connection."""
        return self._closed or self._error is not None


def _apply_lines(ser: Any, settings: StreamSettings) -> None:
    """Flow control and DTR/RTS after open; a pseudo-terminal that refuses one is logged, not fatal."""
    import termios

    import serial

    pty = is_pty(settings.url)
    for attr in ("xonxoff", "rtscts", "dtr", "rts"):
        value = getattr(settings, attr)
        if value is None or (attr in ("xonxoff", "rtscts") and not value):
            continue
        try:
            setattr(ser, attr, value)
        except (OSError, ValueError, termios.error, serial.SerialException) as exc:
            code = getattr(exc, "errno", None)
            if not pty or code not in (errno.EINVAL, errno.ENOTTY, None):
                raise OSError(code or errno.EIO, f"{settings.url}: cannot set {attr}={value}: {exc}") from None
            log.info("serial %s is a pseudo-terminal that refuses %s=%s: ignored", settings.url, attr, value)


async def open_stream(settings: StreamSettings, timeout: float = 5.0) -> ByteStream:
    """Open a serial port (by its configured path, every time) or a TCP connection.

    Raises OSError (FileNotFoundError while an adapter is unplugged, PermissionError, a refused
    connection) or TimeoutError; the caller reports it and retries with backoff.
    """
    if settings.is_tcp:
        host, port = parse_tcp_url(settings.url)
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port)
        return TcpStream(reader, writer, settings)
    import serial  # pyserial: only serial users pay for the import

    if not os.path.exists(settings.url):
        raise FileNotFoundError(errno.ENOENT, f"serial port {settings.url} is absent (adapter unplugged?)")
    try:
        # exclusive (TIOCEXCL) on real lines; not on a pty, whose other side (an emulator, socat) may keep
        # it open so that the flag would outlive our close and refuse our own reconnect (EBUSY)
        ser = open_serial(settings.serial(), exclusive=not is_pty(settings.url))
    except serial.SerialException as exc:
        raise OSError(getattr(exc, "errno", None) or errno.EIO, f"{settings.url}: {exc}") from None
    try:
        _apply_lines(ser, settings)
        ser.reset_input_buffer()  # bytes from before this connection belong to no request of ours
    except BaseException:
        ser.close()
        raise
    return SerialStream(ser, settings, asyncio.get_running_loop())


class SharedPort:
    """One open stream used by several devices of one line, one conversation at a time (``async with port.lock``)."""

    def __init__(self, settings: StreamSettings) -> None:
        self.settings = settings
        self.stream: ByteStream | None = None
        self.users = 0
        self.lock = asyncio.Lock()

    async def open(self, timeout: float) -> ByteStream:
        """The port's stream, opened (again) when it is closed or lost."""
        if self.stream is None or self.stream.closed:
            if self.stream is not None:
                self.stream.close()
            self.stream = await open_stream(self.settings, timeout)
        return self.stream


class SharedPorts:
    """Registry of ports by path: the same settings share one SharedPort; different settings are refused."""

    def __init__(self) -> None:
        self._ports: dict[str, SharedPort] = {}

    def claim(self, settings: StreamSettings) -> SharedPort:
        """A user's handle on the port (ValueError when the port is open with other settings)."""
        port = self._ports.get(settings.url)
        if port is None:
            port = self._ports[settings.url] = SharedPort(settings)
        elif replace(port.settings) != settings:
            raise ValueError(f"port {settings.url} is used with {port.settings.describe()}, "
                             f"not {settings.describe()}")
        port.users += 1
        return port

    def release(self, port: SharedPort) -> None:
        """Drop one user; the last one closes the stream."""
        port.users -= 1
        if port.users <= 0:
            if port.stream is not None:
                port.stream.close()
            self._ports.pop(port.settings.url, None)


shared_ports = SharedPorts()
