"""edged's own Modbus/TCP client: an asyncio Protocol with Cython MBAP framing, transaction ids and pipelining.

One connection per device. Each request gets a fresh transaction id (1..65535, never 0) and a future;
``data_received`` cuts the stream into frames (``edged.cext.mbap.Splitter``) and hands each to the
future of its transaction id. A frame whose id is not outstanding is never taken for an answer: a late
answer (its request timed out) is discarded and counted as ``late``, any other is counted as a stray
frame. The connection is dropped only when the stream cannot be resynchronised (a header that cannot be
one, or a request timing out while a partial frame is stuck in the buffer), or when the driver decides
the whole link is silent. At most ``max_outstanding`` requests are in flight at once.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import socket
from typing import Callable

from edged.cext import mbap

from .line import LinkDown, LinkTimeout

log = logging.getLogger(__name__)

LATE_MEMORY = 1024  # transaction ids of timed-out requests remembered, to recognise their late answers


class StreamBroken(LinkDown):
    """The byte stream cannot be resynchronised; the connection was dropped."""


class _Pending:
    """One request in flight: its future, unit (for the timeout hook), deadline and timeout."""

    __slots__ = ("fut", "unit", "deadline", "timeout_s")

    def __init__(self, fut: asyncio.Future, unit: int, deadline: float, timeout_s: float) -> None:
        self.fut = fut
        self.unit = unit
        self.deadline = deadline
        self.timeout_s = timeout_s


class MbapLink(asyncio.Protocol):
    """A Modbus/TCP connection of edged's own (see the module docstring)."""

    def __init__(self, host: str, port: int, max_outstanding: int = 1,
                 on_event: Callable[[str, int], None] | None = None) -> None:
        self.name = f"tcp {host}:{port}"
        self.host, self.port = host, port
        self.max_outstanding = max_outstanding
        self.on_event = on_event or (lambda kind, unit: None)  # ("timeout"|"late"|"stray"|"broken", unit)
        self.loop: asyncio.AbstractEventLoop | None = None  # set by open()
        self.transport: asyncio.Transport | None = None
        self.splitter = mbap.Splitter()
        self.pending: dict[int, _Pending] = {}
        self.late: collections.OrderedDict[int, int] = collections.OrderedDict()
        self.waiters: collections.deque[asyncio.Future] = collections.deque()
        self.outstanding = 0
        self._tid = 0
        self._timer: asyncio.TimerHandle | None = None
        self.lost_error: Exception | None = None

    # -- lifecycle ---------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        """True while the TCP connection is open."""
        return self.transport is not None

    async def open(self, timeout_s: float) -> None:
        """Connect unless connected; LinkDown when the device cannot be reached."""
        if self.transport is not None:
            return
        self.loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout_s):
                await self.loop.create_connection(lambda: self, self.host, self.port)
        except (TimeoutError, OSError) as exc:
            self.drop()
            raise LinkDown(f"cannot open {self.name}: {exc or 'timeout'}") from None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """asyncio callback: the connection is open (TCP_NODELAY: requests leave at once)."""
        self.transport = transport  # type: ignore[assignment]
        self.splitter = mbap.Splitter()
        self.lost_error: Exception | None = None
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass

    def connection_lost(self, exc: Exception | None) -> None:
        """asyncio callback: fail every request in flight when the peer closed the connection."""
        if self.transport is not None:  # closed by the peer (not by drop())
            self.lost_error = LinkDown(f"{self.name}: connection lost" + (f": {exc}" if exc else ""))
            self._fail_all(self.lost_error)
        self.transport = None

    def drop(self, reason: str = "", silent: bool = False) -> None:
        """Close the connection; every request in flight fails (LinkTimeout when the link fell silent,
        StreamBroken when the stream broke, LinkDown otherwise); ``lost_error`` keeps that error."""
        transport, self.transport = self.transport, None
        if silent:
            err: Exception = LinkTimeout(reason)
        elif reason:
            err = StreamBroken(f"{self.name}: {reason}")
        else:
            err = LinkDown(f"{self.name}: connection closed")
        if transport is not None or reason:
            self.lost_error = err
        self._fail_all(err)
        self.late.clear()
        if transport is not None:
            transport.abort()

    def _fail_all(self, err: Exception) -> None:
        pending, self.pending = self.pending, {}
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for p in pending.values():
            if not p.fut.done():
                p.fut.set_exception(err)
        self.outstanding = 0
        waiters, self.waiters = self.waiters, collections.deque()
        for w in waiters:
            if not w.done():
                w.set_exception(err)

    # -- request window ------------------------------------------------------------------
    async def acquire(self) -> None:
        """Wait for a free slot among ``max_outstanding`` (LinkDown if the connection goes)."""
        if self.transport is None:
            raise LinkDown(f"{self.name} is not connected")
        if self.outstanding < self.max_outstanding and not self.waiters:
            self.outstanding += 1
            return
        fut = self.loop.create_future()  # type: ignore[union-attr]
        self.waiters.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                self._release()  # the slot was handed over as we were cancelled: pass it on
            else:
                try:
                    self.waiters.remove(fut)
                except ValueError:
                    pass
            raise

    def _release(self) -> None:
        while self.waiters:
            w = self.waiters.popleft()
            if not w.done():
                w.set_result(None)  # the slot passes to the waiter (outstanding unchanged)
                return
        if self.outstanding > 0:
            self.outstanding -= 1

    def release_unused(self) -> None:
        """Give back a slot taken with ``acquire`` but not used for a request."""
        self._release()

    def send(self, unit: int, data_for_tid: Callable[[int], bytes], timeout_s: float) -> asyncio.Future:
        """Send one request (after ``acquire``); the future gets the response frame or LinkTimeout/LinkDown."""
        transport = self.transport
        if transport is None:
            self._release()
            raise LinkDown(f"{self.name} is not connected")
        tid = self._tid
        while True:
            tid = tid + 1 if tid < 0xFFFF else 1
            if tid not in self.pending and tid not in self.late:
                break
        self._tid = tid
        loop = self.loop
        fut = loop.create_future()  # type: ignore[union-attr]
        deadline = loop.time() + timeout_s  # type: ignore[union-attr]
        self.pending[tid] = _Pending(fut, unit, deadline, timeout_s)
        timer = self._timer
        if timer is None or deadline < timer.when():
            # one timer per connection, armed for the earliest deadline (no timer per request)
            if timer is not None:
                timer.cancel()
            self._timer = loop.call_at(deadline, self._on_timer)  # type: ignore[union-attr]
        transport.write(data_for_tid(tid))
        return fut

    def _on_timer(self) -> None:
        """Expire every request past its deadline; re-arm for the earliest one left."""
        self._timer = None
        now = self.loop.time() + 1e-6  # type: ignore[union-attr]  # asyncio may fire a hair early
        for tid in [t for t, p in self.pending.items() if p.deadline <= now]:
            p = self.pending.get(tid)
            if p is not None:
                self._expire(tid, p.timeout_s)
        if self.pending and self._timer is None and self.transport is not None:
            self._timer = self.loop.call_at(min(p.deadline for p in self.pending.values()),  # type: ignore[union-attr]
                                            self._on_timer)

    def _expire(self, tid: int, timeout_s: float) -> None:
        p = self.pending.pop(tid, None)
        if p is None:
            return
        self.late[tid] = p.unit
        if len(self.late) > LATE_MEMORY:
            self.late.popitem(last=False)
        self._release()
        if p.fut.cancelled():  # its reader went away (a cancelled scan): not the unit's fault
            return
        if not p.fut.done():
            p.fut.set_exception(LinkTimeout(f"no response within {timeout_s:g} s"))
        if self.splitter.pending and not self.pending:
            # a partial frame is stuck in the buffer and nothing else is in flight: its length lied
            self.on_event("broken", p.unit)
            self.drop(f"a partial frame of {self.splitter.pending} bytes never completed")
            return
        self.on_event("timeout", p.unit)

    # -- receiving ------------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        """asyncio callback: cut frames and hand each to the request of its transaction id (never raises)."""
        try:
            frames = self.splitter.feed(data)
        except mbap.FramingError as exc:
            self.on_event("broken", 0)
            self.drop(f"stream out of step: {exc}")
            return
        pending = self.pending
        for f in frames:
            tid = (f[0] << 8) | f[1]
            p = pending.pop(tid, None)
            if p is None:
                unit = self.late.pop(tid, None)
                self.on_event("late" if unit is not None else "stray", f[6] if unit is None else unit)
                continue
            self._release()
            if not p.fut.done():
                p.fut.set_result(f)
        if self.splitter.pending and not pending and not self.late:
            # bytes after the last answer while nothing is in flight: trailing garbage, resynchronised here
            self.on_event("trailing", 0)
            self.splitter.clear()

    def eof_received(self) -> bool:
        """asyncio callback: the peer closed its side; close ours (connection_lost follows)."""
        return False

    # -- convenience ------------------------------------------------------------------------
    async def transact(self, unit: int, data_for_tid: Callable[[int], bytes], timeout_s: float) -> bytes:
        """Acquire a slot, send one request and await its response frame."""
        await self.acquire()
        fut = self.send(unit, data_for_tid, timeout_s)
        return await fut


def read_frame_maker(unit: int, fc: int, start: int, count: int) -> Callable[[int], bytes]:
    """The request bytes of a read, given the transaction id."""
    return lambda tid: mbap.read_request(tid, unit, fc, start, count)


def pdu_frame_maker(unit: int, pdu: bytes) -> Callable[[int], bytes]:
    """The request bytes of any PDU (writes), given the transaction id."""
    return lambda tid: mbap.frame(tid, unit, pdu)


def describe_event(kind: str) -> str:
    """Words for a link event in log lines."""
    return {"late": "a late answer (discarded)", "stray": "a frame with a transaction id nobody asked for",
            "trailing": "trailing bytes after an answer", "broken": "a stream that cannot be resynchronised",
            "timeout": "a timeout"}.get(kind, kind)


