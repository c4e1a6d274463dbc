"""BlockingWorker: one thread per device that owns a blocking, non-thread-safe client library (python-snap7's Client).

The asyncio side awaits ``call(fn, ...)``; ``fn`` runs on the worker thread, one call at a time, in
order. A call that outlives its timeout is abandoned by the awaiting coroutine (which raises
``WorkerTimeout`` at once, so acquisition never waits), and the worker is *poisoned*: every later call
fails until ``reset()`` has run the driver's close function **on the worker thread** after the hung
call returned. So a client is never closed from another thread while it is inside a call, and a late
answer can never be taken for the next request's: the connection it arrived on is gone.

``abort`` (optional) is the one thing that may run on the asyncio thread while a call hangs: it must
be thread-safe at the OS level, e.g. ``socket.shutdown(SHUT_RDWR)``, which makes a blocked ``recv``
return at once.
"""
from __future__ import annotations

import asyncio
import logging
import queue
import threading
from typing import Any, Callable, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
_STOP = object()


class WorkerTimeout(Exception):
    """A call did not return within its timeout; the worker is poisoned until reset()."""


class WorkerPoisoned(Exception):
    """A previous call hung; the client must be reset (closed on the worker thread) before it is used again."""


class BlockingWorker:
    """A dedicated thread that runs blocking calls for one device, in order; see the module docstring."""

    def __init__(self, name: str, abort: Callable[[], None] | None = None) -> None:
        self.name = name
        self.abort = abort
        self.poisoned = False
        self.calls = 0
        self.abandoned = 0
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=f"edged-worker:{name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            fn, args, loop, fut = item
            try:
                result = fn(*args)
            except BaseException as exc:  # handed to the awaiting coroutine, if it still waits
                if not loop.is_closed():
                    loop.call_soon_threadsafe(_settle, fut, None, exc)
            else:
                if not loop.is_closed():
                    loop.call_soon_threadsafe(_settle, fut, result, None)

    async def call(self, fn: Callable[..., T], *args: Any, timeout: float | None = None) -> T:
        """Run ``fn(*args)`` on the worker thread; WorkerTimeout (and poisoned) when it takes longer than timeout."""
        if self.poisoned:
            raise WorkerPoisoned(f"{self.name}: a previous call hung; reset the connection first")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        self.calls += 1
        self._queue.put((fn, args, loop, fut))
        try:
            async with asyncio.timeout(timeout):
                return await asyncio.shield(fut)
        except TimeoutError:
            fut.add_done_callback(_consume)
            self._abandon()
            raise WorkerTimeout(f"{self.name}: no answer within {timeout:g} s") from None
        except asyncio.CancelledError:
            if not fut.done():
                fut.add_done_callback(_consume)
                self._abandon()  # the call goes on in the thread: its answer must never be used
            raise

    def _abandon(self) -> None:
        self.poisoned = True
        self.abandoned += 1
        if self.abort is not None:
            try:
                self.abort()
            except Exception as exc:  # aborting is best effort; reset() closes for real
                log.debug("%s: abort failed: %r", self.name, exc)

    async def reset(self, close: Callable[[], Any], timeout: float = 5.0) -> bool:
        """Run ``close()`` on the worker thread after any hung call returned; True when it ran in time.

        The worker is usable again once close ran. When it did not run in time (the hung call never
        returns), the worker stays poisoned, and the caller should ``replace()`` it.
        """
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        self._queue.put((close, (), loop, fut))
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(fut)
        except TimeoutError:
            fut.add_done_callback(_consume)
            log.warning("%s: the blocked call did not return within %.0f s", self.name, timeout)
            return False
        except Exception as exc:  # a failing close still leaves the client closed as far as we are concerned
            log.debug("%s: close failed: %r", self.name, exc)
        self.poisoned = False
        return True

    def replace(self) -> "BlockingWorker":
        """A fresh worker for the same device; this one's thread exits once its hung call returns."""
        self.stop()
        return BlockingWorker(self.name, self.abort)

    def stop(self) -> None:
        """Let the thread exit after the calls already queued."""
        self._queue.put(_STOP)

    @property
    def alive(self) -> bool:
        """True while the thread runs."""
        return self._thread.is_alive()


def _settle(fut: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    if fut.done():
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(result)


def _consume(fut: asyncio.Future[Any]) -> None:
    """Retrieve an abandoned call's outcome so asyncio does not report it as never retrieved."""
    if not fut.cancelled():
        fut.exception()
