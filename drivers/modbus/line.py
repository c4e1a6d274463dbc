"""Connections: a TCP link per device, and serial lines shared by every device that names the same port."""
from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import replace
from functools import partial
from typing import Any

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusIOException
from pymodbus.pdu.bit_message import ReadCoilsResponse, ReadDiscreteInputsResponse, WriteSingleCoilResponse
from pymodbus.pdu.register_message import (MaskWriteRegisterResponse, ReadHoldingRegistersResponse,
                                           ReadInputRegistersResponse, WriteMultipleRegistersResponse,
                                           WriteSingleRegisterResponse)
from pymodbus.transport.serialtransport import SerialTransport

from edged.transport.serial import SerialSettings, open_serial

__all__ = ["Link", "LinkDown", "LinkTimeout", "SerialLine", "SerialSettings", "TcpLink", "attach_serial",
           "detach_serial", "frame_gap_s"]

log = logging.getLogger(__name__)

# pymodbus logs every failed connect ("Failed to connect", "Repeating....") at WARNING, and every frame
# of a peer speaking another protocol ("Invalid Modbus protocol id" plus hex dumps) at ERROR. edged
# counts those errors by kind and logs each device state change once, so pymodbus's own messages would
# only flood the journal: they are shown at --log-level debug only.
if logging.getLogger().getEffectiveLevel() > logging.DEBUG and logging.getLogger("pymodbus").level == logging.NOTSET:
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)

# Our own timeout (asyncio.timeout around each request) always fires first: pymodbus's internal
# response timeout is set well above it, and its retries and reconnect loop are switched off.
_PYMODBUS_TIMEOUT_FACTOR = 4.0
_PYMODBUS_TIMEOUT_MIN_S = 5.0


def _counted(base: type) -> type:
    """A pymodbus response class that also keeps its byte count, data length and raw data bytes."""

    def decode(self: Any, data: bytes) -> None:
        self.byte_count = data[0] if data else -1
        self.data_len = len(data) - 1
        self.raw_data = bytes(data)
        base.decode(self, data)

    return type(f"Counted{base.__name__}", (base,), {"decode": decode, "__doc__": base.__doc__})


# edged checks the byte count of every read response and the exact echo of every write itself
# (pymodbus ignores the byte count of coils and reduces a coil echo to a bool)
COUNTED_RESPONSES = [_counted(c) for c in (ReadCoilsResponse, ReadDiscreteInputsResponse,
                                           ReadHoldingRegistersResponse, ReadInputRegistersResponse,
                                           WriteSingleCoilResponse, WriteSingleRegisterResponse,
                                           WriteMultipleRegistersResponse, MaskWriteRegisterResponse)]


class LinkTimeout(Exception):
    """No response within the device's timeout."""


class LinkDown(Exception):
    """The link is not open, could not be opened, or was lost during a request."""


class Link:
    """One pymodbus client and the lock that lets one request at a time through it."""

    drop_on_cancel = True

    def __init__(self, name: str) -> None:
        self.name = name
        self.lock = asyncio.Lock()
        self.client: Any = None
        self.lost = False

    # -- to implement -------------------------------------------------------------
    def _make_client(self, timeout_s: float) -> Any:
        raise NotImplementedError

    # -- lifecycle ------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        """True while the client is open and no loss was seen."""
        return self.client is not None and not self.lost and bool(self.client.connected)

    async def open(self, timeout_s: float) -> None:
        """Open the client unless already open; raise LinkDown when it cannot be opened."""
        if self.connected:
            return
        self.drop()
        client = self._make_client(timeout_s)
        try:
            async with asyncio.timeout(timeout_s):
                ok = await client.connect()
        except (TimeoutError, OSError) as exc:
            client.close()
            raise LinkDown(f"cannot open {self.name}: {exc or 'timeout'}") from None
        except asyncio.CancelledError:
            client.close()
            raise
        except Exception as exc:  # termios.error, serial.SerialException: a port that refuses its settings
            client.close()
            detail = exc.args[-1] if isinstance(exc.args, tuple) and exc.args else exc
            raise LinkDown(f"cannot open {self.name}: {detail} (does the port support these serial settings?)") \
                from None
        if not ok:
            client.close()
            raise LinkDown(f"cannot open {self.name}")
        self.client, self.lost = client, False
        self._guard(client)

    def _guard(self, client: Any) -> None:
        """Make pymodbus's frame handling safe: count a frame it chokes on instead of a traceback per frame.

        A frame pymodbus cannot parse (a lying byte count or MBAP length) makes its ``data_received``
        raise, which asyncio logs with a traceback for every frame. Here it fails the pending request
        with ModbusIOException (the driver counts it as malformed) and drops the connection.
        """
        for cls in COUNTED_RESPONSES:
            client.register(cls)
        ctx = client.ctx
        inner = ctx.data_received

        def data_received(data: bytes) -> None:
            try:
                inner(data)
            except Exception as exc:  # pymodbus choked on a frame: never let asyncio log a traceback
                self.lost = True
                fut = getattr(ctx, "response_future", None)
                if fut is not None and not fut.done():
                    fut.set_exception(ModbusIOException(f"unparsable frame: {exc!r}"))
                transport = getattr(ctx, "transport", None)
                if transport is not None:
                    transport.abort()

        ctx.data_received = data_received

    def drop(self) -> None:
        """Close the client so that no late response can ever be read as the answer to a later request."""
        client, self.client = self.client, None
        if client is not None:
            try:
                client.close()
            except Exception as exc:  # closing must never fail the caller
                log.debug("%s: close failed: %r", self.name, exc)

    def _on_connect(self, connected: bool) -> None:
        """pymodbus connection callback: fail the pending request at once when the connection drops."""
        if connected:
            return
        self.lost = True
        fut = getattr(getattr(self.client, "ctx", None), "response_future", None)
        if fut is not None and not fut.done():
            fut.set_exception(ConnectionException(f"{self.name}: connection lost"))

    # -- requests -------------------------------------------------------------------
    async def call(self, method: str, timeout_s: float, **kwargs: Any) -> Any:
        """One request without taking the lock (the caller holds it); LinkTimeout or LinkDown on failure."""
        client = self.client
        if client is None or self.lost or not client.connected:
            raise LinkDown(f"{self.name} is not connected")
        try:
            async with asyncio.timeout(timeout_s):
                result = await getattr(client, method)(**kwargs)
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                # Python 3.11's asyncio.wait_for (inside pymodbus) returns the answer and swallows a
                # cancellation that arrives together with it; honour the cancellation here, or the
                # cancelled task would carry on as if nothing happened.
                raise asyncio.CancelledError()
            return result
        except TimeoutError:
            raise LinkTimeout(f"no response within {timeout_s:g} s") from None
        except ConnectionException as exc:
            self.lost = True
            raise LinkDown(f"{self.name}: {exc}") from None
        except asyncio.CancelledError:
            if self.drop_on_cancel:  # an answer may still come: never let it meet the next request
                self.drop()
            raise

    async def request(self, method: str, timeout_s: float, **kwargs: Any) -> Any:
        """One request, serialized with every other request on this link."""
        async with self.lock:
            return await self.call(method, timeout_s, **kwargs)


class TcpLink(Link):
    """A Modbus/TCP connection owned by one device."""

    def __init__(self, host: str, port: int) -> None:
        super().__init__(f"tcp {host}:{port}")
        self.host, self.port = host, port

    def _make_client(self, timeout_s: float) -> Any:
        return AsyncModbusTcpClient(
            self.host, port=self.port, name=self.name, retries=0, reconnect_delay=0,
            timeout=max(_PYMODBUS_TIMEOUT_MIN_S, timeout_s * _PYMODBUS_TIMEOUT_FACTOR),
            trace_connect=self._on_connect)


class SerialLine(Link):
    """A Modbus RTU serial line shared by every device (unit id) configured on the same port.

    One request at a time crosses the line. A timeout does not close the port (other units keep
    working): pymodbus clears its receive buffer before each request and skips frames whose unit id
    differs from the one asked, so a late answer of a silent unit is never taken for another's.
    """

    drop_on_cancel = False

    def __init__(self, settings: SerialSettings) -> None:
        super().__init__(f"serial {settings.describe()}")
        self.settings = settings
        self.users: set[int] = set()
        self.loop = asyncio.get_running_loop()
        self.gap_s = frame_gap_s(settings)
        self._quiet_at = 0.0

    async def call(self, method: str, timeout_s: float, **kwargs: Any) -> Any:
        """One request, sent no sooner than the inter-frame gap after the previous one ended."""
        wait = self._quiet_at - self.loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        try:
            return await super().call(method, timeout_s, **kwargs)
        finally:
            self._quiet_at = self.loop.time() + self.gap_s

    def _make_client(self, timeout_s: float) -> Any:
        s = self.settings
        client = AsyncModbusSerialClient(
            s.port, baudrate=s.baudrate, parity=s.parity, bytesize=s.bytesize, stopbits=s.stopbits,
            name=self.name, retries=0, reconnect_delay=0,
            timeout=max(_PYMODBUS_TIMEOUT_MIN_S, timeout_s * _PYMODBUS_TIMEOUT_FACTOR),
            trace_connect=self._on_connect)
        # pymodbus opens the port with serial_for_url, which fails on a pty that refuses parity E/O:
        # open it through edged.transport.serial instead (same settings, pty-tolerant).
        open_through_edged(client.ctx, s)
        return client


def open_through_edged(protocol: Any, settings: SerialSettings) -> None:
    """Make a pymodbus serial client's or server's protocol open its port with ``open_serial``."""
    protocol.call_create = partial(_create_serial_connection, protocol.loop, protocol.handle_new_connection, settings)


class _EdgedSerialTransport(SerialTransport):
    """pymodbus's asyncio serial transport over a port opened by ``edged.transport.serial.open_serial``."""

    def __init__(self, loop: asyncio.AbstractEventLoop, protocol: asyncio.BaseProtocol,
                 settings: SerialSettings) -> None:
        asyncio.Transport.__init__(self)  # pylint: disable=non-parent-init-called
        self.async_loop = loop
        self.intern_protocol = protocol
        self.sync_serial = open_serial(settings)
        self.intern_write_buffer: list[bytes] = []
        self.poll_task = None
        self._poll_wait_time = 0.0005


async def _create_serial_connection(loop: asyncio.AbstractEventLoop, protocol_factory: Any,
                                    settings: SerialSettings) -> tuple[asyncio.Transport, asyncio.BaseProtocol]:
    """pymodbus's ``create_serial_connection``, opening the port pty-tolerantly."""
    protocol = protocol_factory()
    transport = _EdgedSerialTransport(loop, protocol, settings)
    loop.call_soon(transport.setup)
    return transport, protocol


def frame_gap_s(settings: SerialSettings) -> float:
    """The RTU silent interval between frames: 3.5 characters, fixed at 1.75 ms above 19200 baud.

    A character is 1 start bit + data bits + parity bit + stop bits (11 bits for 8E1, 10 for 8N1),
    as in the Modbus over serial line specification, section 2.5.1.1.
    """
    if settings.baudrate > 19200:
        return 0.00175
    bits = 1 + settings.bytesize + (0 if settings.parity == "N" else 1) + settings.stopbits
    return 3.5 * bits / settings.baudrate


_LINES: dict[str, SerialLine] = {}


def _line_key(port: str) -> str:
    """Devices reach one line through different names (a /dev/serial/by-id link, the tty itself)."""
    return os.path.realpath(port)


def attach_serial(settings: SerialSettings, user: int, device: str) -> SerialLine:
    """The shared line of a port (created on first use); LinkDown if its settings differ."""
    key = _line_key(settings.port)
    line = _LINES.get(key)
    if line is not None and (line.loop is not asyncio.get_running_loop() or line.loop.is_closed()):
        line.drop()  # left over from an event loop that no longer runs
        line = None
    if line is None:
        line = _LINES[key] = SerialLine(settings)
    elif replace(line.settings, port=settings.port) != settings:
        raise LinkDown(f"device {device}: serial settings {settings.describe()} differ from those of the "
                       f"devices already using the port ({line.settings.describe()})")
    line.users.add(user)
    return line


def detach_serial(line: SerialLine, user: int) -> None:
    """Leave a shared line; the port is closed when its last device leaves."""
    line.users.discard(user)
    if not line.users:
        line.drop()
        for key in [k for k, v in _LINES.items() if v is line]:
            del _LINES[key]
