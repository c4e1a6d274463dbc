"""DeviceRunner: connects one device with backoff and jitter, runs its scan groups and push task, tracks its state."""
from __future__ import annotations

import asyncio
import enum
import logging
import random
import time
from typing import Any, Callable

from prometheus_client import Histogram

from edged.backoff import backoff_delay
from edged.cell import Device, ScanSpec
from edged.driver import Driver
from edged.errors import DeviceUnavailable, ReadFailed
from edged.scan import ScanGroup, phase_for
from edged.tag import Quality, Reading, Tag

log = logging.getLogger(__name__)


class DeviceState(enum.Enum):
    """Connection state of a device, logged once per change."""

    CONNECTING = "connecting"
    UP = "up"
    DEGRADED = "degraded"
    DOWN = "down"


CLOSE_TIMEOUT_S = 5.0  # a driver's close() that takes longer is abandoned (logged)
STALE_SCANS = 3  # a group whose last poll is older than this many intervals (and 1 s) has stale values


class DeviceRunner:
    """Owns one device's driver at run time; a slow or failing device never delays another's scans."""

    def __init__(self, device: Device, scans: dict[str, ScanSpec], deliver: Callable[[list[Reading]], None],
                 poll_hist: Histogram | None = None, group_index: dict[tuple[str, str], tuple[int, int]] | None = None,
                 current: dict[str, tuple[Any, int, int]] | None = None) -> None:
        self.device = device
        self.name = device.spec.name
        self.driver = device.driver
        self.deliver = deliver
        self.state = DeviceState.CONNECTING
        self.state_since = time.time()
        self.last_error = ""
        self.connects = 0
        self._rng = random.Random()
        self._lost = asyncio.Event()
        self._poll_hist = poll_hist
        self._tags_by_group: dict[str, list[Tag]] = {}
        for t in device.tags:
            self._tags_by_group.setdefault(t.scan, []).append(t)
        self.groups: list[ScanGroup] = []
        for g in self.driver.polled_groups():
            spec = scans[g]
            idx, count = (group_index or {}).get((self.name, g), (0, 1))
            phase = spec.phase_s if spec.phase_s is not None else phase_for(idx, count, spec.interval_s)
            self.groups.append(ScanGroup(self.name, g, spec.interval_s, phase, self._poller(g)))
        self._group_bad: set[str] = set()
        self._current = current if current is not None else {}
        self._stale: set[str] = set()
        self._polled_ok = False  # a poll of the current connection returned (the link really works)

    # -- state ----------------------------------------------------------------
    def _set_state(self, state: DeviceState, reason: str = "") -> None:
        if state is self.state:
            return
        old, self.state, self.state_since = self.state, state, time.time()
        reason = reason.removeprefix(f"device {self.name}: ")
        msg = f"device {self.name}: {old.value} -> {state.value}" + (f" ({reason})" if reason else "")
        (log.warning if state in (DeviceState.DOWN, DeviceState.DEGRADED) else log.info)(msg)

    def _mark_bad(self, tags: list[Tag]) -> None:
        now = time.time_ns()
        self.deliver([Reading(t, None, Quality.BAD, now) for t in tags])

    # -- polling ----------------------------------------------------------------
    def _poller(self, group: str) -> Callable[[], Any]:
        hist = self._poll_hist.labels(device=self.name, scan=group) if self._poll_hist else None

        async def poll() -> None:
            t0 = time.perf_counter()
            try:
                readings = await self.driver.read(group)
            except DeviceUnavailable as exc:
                self.last_error = str(exc)
                self._lost.set()
                await asyncio.sleep(3600)  # cancelled by run() when it reconnects
                return
            except ReadFailed as exc:
                self._polled_ok = True  # the device answered, if with an error: the link works
                self.last_error = str(exc)
                self._group_bad.add(group)
                self._set_state(DeviceState.DEGRADED, str(exc))
                self._mark_bad(self._tags_by_group.get(group, []))
                return
            finally:
                if hist is not None:
                    hist.observe(time.perf_counter() - t0)
            self._polled_ok = True
            bad = any(r.quality is Quality.BAD for r in readings)
            if bad:
                self._group_bad.add(group)
            else:
                self._group_bad.discard(group)
            if self._group_bad:
                self._set_state(DeviceState.DEGRADED, "some reads return bad quality")
            elif self.state is DeviceState.DEGRADED:
                self._set_state(DeviceState.UP, "all reads good again")
            self.deliver(readings)

        return poll

    # -- main loop ----------------------------------------------------------------
    async def run(self) -> None:
        """Connect, scan, and reconnect with backoff until cancelled."""
        attempt = 0
        spec = self.device.spec
        while True:
            self._lost.clear()
            try:
                try:
                    await self.driver.connect()
                except (DeviceUnavailable, asyncio.CancelledError):
                    raise
                except Exception as exc:  # a driver bug or an unexpected library error: same as unreachable
                    if self.state is not DeviceState.DOWN:
                        log.error("device %s: connect failed unexpectedly: %r", self.name, exc, exc_info=exc)
                    raise DeviceUnavailable(f"connect failed: {exc!r}") from exc
            except DeviceUnavailable as exc:
                self.last_error = str(exc)
                if self.state is not DeviceState.DOWN:
                    self._set_state(DeviceState.DOWN, str(exc))
                    self._mark_bad(self.device.tags)
                await self._close_quietly()
                await asyncio.sleep(backoff_delay(attempt, spec.backoff_initial_s, spec.backoff_max_s, self._rng))
                attempt += 1
                continue
            self.connects += 1  # the driver counts stats.reconnects itself (it also sees CLI connects)
            self._polled_ok = not self.groups  # a connection only counts as healthy after a good poll
            self._group_bad.clear()
            self._set_state(DeviceState.UP, "connected")
            tasks = [asyncio.create_task(g.run(), name=f"scan:{self.name}:{g.name}") for g in self.groups]
            tasks.append(asyncio.create_task(self._push(), name=f"push:{self.name}"))
            if self.groups:
                tasks.append(asyncio.create_task(self._stale_watch(), name=f"stale:{self.name}"))
            lost = asyncio.create_task(self._lost.wait())
            try:
                await asyncio.wait([lost, *tasks], return_when=asyncio.FIRST_COMPLETED)
            finally:
                for t in (lost, *tasks):
                    t.cancel()
                await asyncio.gather(lost, *tasks, return_exceptions=True)
            for t in tasks:
                if t.done() and not t.cancelled() and t.exception() is not None:
                    exc = t.exception()
                    if not isinstance(exc, DeviceUnavailable):  # a bug: keep its traceback
                        log.error("device %s: %s failed: %r", self.name, t.get_name(), exc, exc_info=exc)
                    self.last_error = str(exc)
            self._set_state(DeviceState.DOWN, self.last_error or "connection lost")
            self._mark_bad(self.device.tags)
            await self._close_quietly()
            if self._polled_ok:
                attempt = 0
            # a device that accepts connections but never answers a poll (a wrong service on the port)
            # backs off like one that refuses them, instead of flapping up/down every backoff_initial_s
            await asyncio.sleep(backoff_delay(attempt, spec.backoff_initial_s, spec.backoff_max_s, self._rng))
            attempt += 1

    async def _stale_watch(self) -> None:
        """Mark a group's good values uncertain (stale) when its polls stop completing in time.

        This happens when a device or a shared RTU line is too slow for the configured rates: the
        values are the last ones read, but no longer current.
        """
        loop = asyncio.get_running_loop()
        period = max(0.2, min(g.interval_s for g in self.groups))
        started = loop.time()
        self._stale.clear()  # values of the previous connection were marked bad when it was lost
        while True:
            await asyncio.sleep(period)
            now = loop.time()
            for g in self.groups:
                limit = max(STALE_SCANS * g.interval_s, 1.0)
                # a poll completed before this connection says nothing about it (after a reconnect
                # the group's first poll may still be ahead)
                age = now - max(g.last_done, started)
                if age > limit and g.name not in self._stale:
                    self._stale.add(g.name)
                    log.warning("device %s: scan %s has not completed for %.1f s: values are stale", self.name,
                                g.name, age)
                    ts = time.time_ns()
                    readings = []
                    for t in self._tags_by_group.get(g.name, []):
                        value, quality, _ = self._current.get(t.key, (None, int(Quality.BAD), 0))
                        if quality == Quality.GOOD:
                            readings.append(Reading(t, value, Quality.UNCERTAIN, ts))
                    self.deliver(readings)
                elif age <= limit and g.name in self._stale:
                    self._stale.discard(g.name)

    async def _push(self) -> None:
        try:
            await self.driver.run_push(self.deliver)
        except DeviceUnavailable as exc:
            self.last_error = str(exc)
            self._lost.set()
            return
        if type(self.driver).run_push is not Driver.run_push:
            # a push driver's stream ended without an error (e.g. the server closed the subscription):
            # nothing would arrive any more, so treat it as a loss and reconnect
            self.last_error = "the push stream ended"
            self._lost.set()
            return
        await asyncio.Event().wait()  # polled drivers: nothing to push; keep the task alive

    async def _close_quietly(self) -> None:
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_S):  # a hanging close must not hang reconnects or stop()
                await self.driver.close()
        except TimeoutError:
            log.warning("device %s: close did not finish within %.0f s; going on", self.name, CLOSE_TIMEOUT_S)
        except Exception as exc:  # a close failure must never stop reconnecting
            log.debug("device %s: close failed: %r", self.name, exc)

    async def stop(self) -> None:
        """Close the driver (the run task is cancelled by the runtime)."""
        await self._close_quietly()
