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
from edged.driver import PushSink
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
PUSH_GROUPS = "(pushed)"  # the entry of _group_bad that stands for bad pushed values
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
        self.pushed: list[str] = self.driver.pushed_groups()
        self.push_sink: PushSink | None = None
        for g in self.driver.polled_groups():
            spec = scans[g]
            idx, count = (group_index or {}).get((self.name, g), (0, 1))
            phase = spec.phase_s if spec.phase_s is not None else phase_for(idx, count, spec.interval_s)
            self.groups.append(ScanGroup(self.name, g, spec.interval_s, phase, self._poller(g)))
        self._group_bad: set[str] = set()
        self._push_bad: set[str] = set()  # keys of pushed tags whose last value was bad
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
            self._polled_ok = not self.groups and not self.pushed  # healthy only after a good poll or push
            self._group_bad.clear()
            self._push_bad.clear()
            self._set_state(DeviceState.UP, "connected")
            tasks = [asyncio.create_task(g.run(), name=f"scan:{self.name}:{g.name}") for g in self.groups]
            if self.pushed:
                tasks.append(asyncio.create_task(self._push(), name=f"push:{self.name}"))
            if self.groups or self.pushed:
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
        """Mark a group's good values uncertain (stale) when its polls stop completing in time, or a
        pushed group stays silent (no value, no keep-alive) longer than the driver's ``stale_after_s``.

        This happens when a device or a shared line is too slow for the configured rates, or a
        subscription stopped publishing: the values are the last ones received, but no longer current.
        """
        loop = asyncio.get_running_loop()
        intervals = [g.interval_s for g in self.groups] + [self.driver.spec.intervals.get(g, 1.0) for g in self.pushed]
        period = max(0.2, min(intervals))
        started = loop.time()
        self._stale.clear()  # values of the previous connection were marked bad when it was lost
        limits = {g.name: max(STALE_SCANS * g.interval_s, 1.0) for g in self.groups}
        limits.update({g: self.driver.stale_after_s(g) for g in self.pushed})
        while True:
            await asyncio.sleep(period)
            now = loop.time()
            last = {g.name: g.last_done for g in self.groups}
            if self.push_sink is not None:
                last.update({g: self.push_sink.seen.get(g, 0.0) for g in self.pushed})
            for name, limit in limits.items():
                # a poll completed before this connection says nothing about it (after a reconnect
                # the group's first poll may still be ahead)
                age = now - max(last.get(name, 0.0), started)
                if age > limit and name not in self._stale:
                    self._stale.add(name)
                    what = "has not completed" if name not in self.pushed else "has delivered nothing"
                    log.warning("device %s: scan %s %s for %.1f s: values are stale", self.name, name, what, age)
                    self._mark_stale(name)
                elif age <= limit and name in self._stale:
                    self._stale.discard(name)

    def _mark_stale(self, group: str) -> None:
        """Deliver the group's good current values again as uncertain."""
        ts = time.time_ns()
        readings = []
        for t in self._tags_by_group.get(group, []):
            value, quality, _ = self._current.get(t.key, (None, int(Quality.BAD), 0))
            if quality == Quality.GOOD:
                readings.append(Reading(t, value, Quality.UNCERTAIN, ts))
        self.deliver(readings)

    async def _push(self) -> None:
        """Run the driver's push stream; its end or a DeviceUnavailable is a lost connection."""
        loop = asyncio.get_running_loop()
        self.push_sink = PushSink(self._pushed, loop.time)
        try:
            await self.driver.run_push(self.push_sink)
        except DeviceUnavailable as exc:
            self.last_error = str(exc)
            self._lost.set()
            return
        # the stream ended without an error (e.g. the server closed the subscription): nothing would
        # arrive any more, so treat it as a loss and reconnect
        self.last_error = "the push stream ended"
        self._lost.set()

    def _pushed(self, readings: list[Reading]) -> None:
        """Pushed readings: the link works; any pushed tag whose last value is bad makes the device degraded."""
        if readings:
            self._polled_ok = True
            bad = self._push_bad
            for r in readings:
                if r.quality is Quality.BAD:
                    bad.add(r.tag.key)
                else:
                    bad.discard(r.tag.key)
            if bad:
                self._group_bad.add(PUSH_GROUPS)
                self._set_state(DeviceState.DEGRADED, "some pushed values are bad")
            else:
                self._group_bad.discard(PUSH_GROUPS)
                if not self._group_bad and self.state is DeviceState.DEGRADED:
                    self._set_state(DeviceState.UP, "all values good again")
        self.deliver(readings)

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
