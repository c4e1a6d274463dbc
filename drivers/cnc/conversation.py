"""The request/response conversations of the two dialects over one ByteStream: matching, timeouts, resets.

A reader task feeds every received byte through the shared LineSplitter and hands lines to the
dialect. Responses are matched strictly: GRBL answers in order (one status report per ``?``, one
``ok``/``error:N`` per command line), so each request keeps its place in a queue even after it timed
out, and a late answer fills the abandoned place instead of answering a later request; Haas answers
name their command, so a late answer is recognised by its keyword. A second timeout in a row means
the conversation cannot be trusted any more: DeviceUnavailable, and the DeviceRunner reconnects.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import time
from typing import Any, Callable

from edged.driver import DriverStats
from edged.errors import DeviceUnavailable, ReadFailed
from edged.transport.stream import ByteStream, StreamClosed

from . import grbl, haas
from .framing import FramingError, LineSplitter

log = logging.getLogger("edged.drivers.cnc")

LOST_AFTER = 2  # a timed-out request whose answer has not come within this many timeouts never gets one


class ControllerReset(Exception):
    """The controller reset (GRBL printed its banner) while a request was outstanding."""


class RequestRefused(Exception):
    """The controller answered a request with an error (``error:N``, Haas ``UNKNOWN``)."""


class Conversation:
    """Owns one connection's stream, line splitter and reader task; subclasses add the dialect."""

    framed = False

    def __init__(self, name: str, stream: ByteStream, stats: DriverStats, timeout_s: float,
                 on_event: Callable[[str, Any], None] | None = None) -> None:
        self.name = name
        self.stream = stream
        self.stats = stats
        self.timeout_s = timeout_s
        self.splitter = LineSplitter(framed=self.framed)
        self.on_event = on_event or (lambda kind, value: None)
        self.lost: BaseException | None = None
        self.late = 0  # answers that arrived after their request timed out (discarded)
        self.unanswered = 0  # timed-out requests given up as never answered
        self.malformed = 0
        self._timeouts_in_row = 0
        self._reader: asyncio.Task | None = None
        self._logged_malformed = False
        self._noise_seen = 0

    def start(self) -> None:
        """Start reading."""
        self._reader = asyncio.create_task(self._read_loop(), name=f"cnc-read:{self.name}")

    async def _read_loop(self) -> None:
        try:
            while True:
                data = await self.stream.read()
                for line in self.splitter.feed(data):
                    try:
                        self.on_line(line)
                    except FramingError as exc:
                        self._malformed(str(exc))
                noise = self.splitter.noise + self.splitter.overflows
                if noise != self._noise_seen:
                    errors = self.stats.errors
                    errors["noise"] = errors.get("noise", 0) + noise - self._noise_seen
                    self._noise_seen = noise
        except (StreamClosed, OSError) as exc:
            self._lose(exc)
        except asyncio.CancelledError:
            raise

    def _malformed(self, message: str) -> None:
        self.malformed += 1
        self.stats.error("malformed")
        if not self._logged_malformed:  # once per connection: no log floods from a noisy line
            self._logged_malformed = True
            log.warning("device %s: malformed line (counted in edged_device_errors_total{kind=\"malformed\"}): %s",
                        self.name, message)

    def _lose(self, exc: BaseException) -> None:
        self.lost = exc
        self.fail_pending(DeviceUnavailable(f"device {self.name}: line lost: {exc}"))

    def fail_pending(self, exc: BaseException) -> None:
        """Fail every outstanding request (a reset or a lost line)."""

    def on_line(self, text: str) -> None:
        """Handle one received line (FramingError when it is not a line of the dialect)."""
        raise NotImplementedError

    def send(self, data: bytes) -> None:
        """Write to the line; a lost line is DeviceUnavailable."""
        if self.lost is not None:
            raise DeviceUnavailable(f"device {self.name}: line lost: {self.lost}")
        try:
            self.stream.write(data)
        except (StreamClosed, OSError) as exc:
            self._lose(exc)
            raise DeviceUnavailable(f"device {self.name}: write failed: {exc}") from None

    async def _await(self, fut: asyncio.Future, what: str) -> Any:
        """Wait for an answer; count a timeout; two in a row drop the connection."""
        try:
            async with asyncio.timeout(self.timeout_s):
                result = await asyncio.shield(fut)
        except asyncio.CancelledError:
            fut.cancel()  # abandoned: its answer must fill its place, not a later request's
            raise
        except TimeoutError:
            fut.cancel()  # its place stays queued: a late answer fills it, not a later request
            self.stats.timeouts += 1
            self._timeouts_in_row += 1
            if self._timeouts_in_row >= 2:
                raise DeviceUnavailable(f"device {self.name}: {what}: no answer within {self.timeout_s} s, "
                                        f"twice in a row") from None
            raise ReadFailed(f"device {self.name}: {what}: no answer within {self.timeout_s} s",
                             kind="timeout") from None
        self._timeouts_in_row = 0
        return result

    async def close(self) -> None:
        """Stop reading and close the stream."""
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        self.stream.close()
        self.fail_pending(DeviceUnavailable(f"device {self.name}: closed"))


class GrblConversation(Conversation):
    """GRBL 1.1: ``?`` status reports, command lines answered ``ok``/``error:N`` in order, events."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.model = grbl.GrblModel()
        # (future, send time) per status query and (future, lines so far, send time) per command line
        self._status_q: collections.deque[tuple[asyncio.Future, float]] = collections.deque()
        self._cmd_q: collections.deque[tuple[asyncio.Future, list[grbl.Line], float]] = collections.deque()
        self.in_flight = 0  # bytes of command lines not yet answered (character counting)
        self._sizes: collections.deque[int] = collections.deque()
        self.reset_event = asyncio.Event()

    def on_line(self, text: str) -> None:
        """Dispatch one GRBL line (a self-delimited message after noise on the same line is recovered)."""
        try:
            line = grbl.parse_line(text)
        except FramingError as exc:
            start = max(text.rfind("<") if text.endswith(">") else -1, text.rfind("[") if text.endswith("]") else -1,
                        text.rfind("Grbl "))
            if start <= 0:
                raise
            self._malformed(f"noise before a message: {exc}")
            line = grbl.parse_line(text[start:])
        m = self.model
        kind = line.kind
        if kind == "status":
            self._expire(self._status_q)
            fut = self._status_q.popleft()[0] if self._status_q else None
            if fut is None or fut.done():
                self.late += 1  # the answer of a timed-out query: its place, not a later one
                return
            m.apply(line.status)  # type: ignore[arg-type]
            fut.set_result(line.status)
        elif kind in ("ok", "error"):
            if kind == "ok":
                m.oks += 1
            else:
                m.errors += 1
                m.last_error = line.code
                self.on_event("error", line.code)
            if self._sizes:
                self.in_flight -= self._sizes.popleft()
            self._expire(self._cmd_q)
            if not self._cmd_q:
                self.late += 1
                return
            fut, lines, _ = self._cmd_q.popleft()
            if fut.done():
                self.late += 1
            elif kind == "ok":
                fut.set_result(lines)
            else:
                fut.set_exception(RequestRefused(f"error:{line.code} ({grbl.error_text(line.code)})"))
        elif kind == "alarm":
            m.alarms += 1
            m.last_alarm = line.code
            self.on_event("alarm", line.code)
        elif kind == "msg":
            m.last_msg = line.value
            self.on_event("msg", line.value)
        elif kind == "banner":
            m.banner = line.text
            m.resets += 1
            self.fail_pending(ControllerReset(f"controller reset ({line.text})"))
            self.reset_event.set()
            self.on_event("reset", line.text)
        elif self._cmd_q and not self._cmd_q[0][0].done():  # (a bracket/setting line of the head command)
            self._cmd_q[0][1].append(line)  # [VER:], [OPT:], $n=v ... of the command being answered
        else:
            self.late += 1

    def _expire(self, queue: collections.deque) -> None:
        """Drop timed-out places older than LOST_AFTER timeouts: their answers were lost (a dropped byte, a
        controller that missed the ``?``), so the next answer belongs to a later request."""
        limit = time.monotonic() - LOST_AFTER * self.timeout_s
        while len(queue) > 1 and queue[0][0].done() and queue[0][-1] < limit:
            queue.popleft()
            self.unanswered += 1
            if queue is self._cmd_q and self._sizes:
                self.in_flight -= self._sizes.popleft()

    def fail_pending(self, exc: BaseException) -> None:
        """A reset or lost line: nothing outstanding will be answered."""
        for fut, _ in self._status_q:
            if not fut.done():
                fut.set_exception(exc)
                fut.exception()  # retrieved: the waiter may be gone
        for fut, _, _ in self._cmd_q:
            if not fut.done():
                fut.set_exception(exc)
                fut.exception()
        self._status_q.clear()
        self._cmd_q.clear()
        self._sizes.clear()
        self.in_flight = 0

    async def status(self) -> grbl.StatusReport:
        """Send ``?`` and wait for its report (a reset while waiting: asked once more)."""
        for attempt in range(2):
            fut = asyncio.get_running_loop().create_future()
            self._status_q.append((fut, time.monotonic()))
            self.send(grbl.STATUS_QUERY)
            self.stats.requests += 1
            try:
                return await self._await(fut, "status query ?")
            except ControllerReset:
                if attempt:
                    raise ReadFailed(f"device {self.name}: controller reset twice during a status query",
                                     kind="reset") from None
        raise AssertionError("unreachable")

    def queue_command(self, text: str) -> asyncio.Future:
        """Send one command line now (the caller counts characters) and return the future of its answer."""
        data = text.encode("ascii") + b"\n"
        fut = asyncio.get_running_loop().create_future()
        self._cmd_q.append((fut, [], time.monotonic()))
        self._sizes.append(len(data))
        self.in_flight += len(data)
        self.send(data)
        self.stats.requests += 1
        return fut

    async def command(self, text: str) -> list[grbl.Line]:
        """Send a command line and wait for ``ok``: the lines that came with it; RequestRefused on error:N."""
        try:
            return await self._await(self.queue_command(text), text)
        except ControllerReset as exc:
            raise ReadFailed(f"device {self.name}: {text}: {exc}", kind="reset") from None

    def realtime(self, data: bytes) -> None:
        """Send a real-time character (``!``, ``~``, Ctrl-X): no answer, no buffer use."""
        self.send(data)


class HaasConversation(Conversation):
    """Haas Q commands: one request at a time, answers matched by their keyword."""

    framed = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._waiting: tuple[int, int | None, asyncio.Future] | None = None
        # (number, macro arg, send time) of timed-out requests whose answers may still come
        self._abandoned: collections.deque[tuple[int, int | None, float]] = collections.deque()
        self._lock = asyncio.Lock()
        self.first_retries = 0

    def on_line(self, text: str) -> None:
        """Match one framed answer to the waiting request, or discard it as late."""
        if text == haas.PROMPT or text.startswith("?Q"):
            return  # a prompt on its own line, or our own request echoed by a terminal server
        ans = haas.parse_answer(text)
        key = (ans.number, ans.arg if ans.number == 600 else None)
        ab = self._abandoned
        limit = time.monotonic() - LOST_AFTER * self.timeout_s
        while ab and ab[0][2] < limit:  # never answered (dropped): the next answer is a later request's
            ab.popleft()
            self.unanswered += 1
        if ab and (ab[0][:2] == key or ans.number == 0):
            ab.popleft()  # answers come in order: this one belongs to the oldest timed-out request
            self.late += 1
            return
        w = self._waiting
        if w is not None and not w[2].done():
            number, arg, fut = w
            if key == (number, arg if number == 600 else None):
                fut.set_result(ans)
                self.unanswered += len(ab)
                ab.clear()  # answers come in order: those of older timed-out requests are not coming
                return
            if ans.number == 0:
                fut.set_exception(RequestRefused(ans.values["error"]))
                fut.exception()
                return
        for item in list(ab):
            if item[:2] == key:
                ab.remove(item)
                break
        self.late += 1

    def fail_pending(self, exc: BaseException) -> None:
        """A lost line: the waiting request fails."""
        if self._waiting is not None and not self._waiting[2].done():
            self._waiting[2].set_exception(exc)
            self._waiting[2].exception()

    async def ask(self, number: int, arg: int | None = None, first: bool = False) -> haas.Answer:
        """Send ``?Qnnn`` and wait for its answer.

        ``first``: re-send once when the first request of a connection gets no answer (a known Haas quirk).
        """
        async with self._lock:
            fut = asyncio.get_running_loop().create_future()
            self._waiting = (number, arg, fut)
            sent = time.monotonic()
            self.send(haas.request(number, arg))
            self.stats.requests += 1
            try:
                if first:
                    try:
                        async with asyncio.timeout(min(self.timeout_s, 1.0)):
                            return await asyncio.shield(fut)
                    except TimeoutError:
                        self.first_retries += 1
                        log.info("device %s: no answer to the first request ?Q%d; sending it again (Haas "
                                 "machines may ignore the first command of a connection)", self.name, number)
                        self.send(haas.request(number, arg))
                        self.stats.requests += 1
                try:
                    return await self._await(fut, f"?Q{number}" + (f" {arg}" if arg is not None else ""))
                except ReadFailed:
                    self._abandoned.append((number, arg if number == 600 else None, sent))
                    raise
            finally:
                self._waiting = None
