"""ScanGroup: polls one scan group of one device at absolute deadlines with a phase offset, never queuing overruns."""
from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import Awaitable, Callable

log = logging.getLogger(__name__)


class ScanGroup:
    """Runs ``poll()`` every ``interval_s`` at absolute deadlines (no drift); missed deadlines are counted and skipped."""

    def __init__(self, device: str, name: str, interval_s: float, phase_s: float,
                 poll: Callable[[], Awaitable[None]]) -> None:
        self.device = device
        self.name = name
        self.interval_s = interval_s
        self.phase_s = phase_s % interval_s if interval_s > 0 else 0.0
        self.poll = poll
        self.overruns = 0
        self.scans = 0
        self.last_duration_s = 0.0
        self.last_done = 0.0  # loop time of the last completed poll (0: none yet)

    def first_deadline(self, now: float) -> float:
        """The first deadline: the next multiple of the interval after now, plus the phase.

        Aligning to multiples of the interval on the monotonic clock keeps groups with the same
        interval in a fixed relation, and the phase spreads them apart.
        """
        base = math.floor(now / self.interval_s) * self.interval_s + self.phase_s
        return base if base > now else base + self.interval_s

    async def run(self) -> None:
        """Poll until cancelled."""
        loop = asyncio.get_running_loop()
        deadline = self.first_deadline(loop.time())
        while True:
            delay = deadline - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            t0 = time.perf_counter()
            await self.poll()
            self.last_duration_s = time.perf_counter() - t0
            self.last_done = loop.time()
            self.scans += 1
            deadline += self.interval_s
            now = loop.time()
            if now >= deadline:
                missed = int((now - deadline) // self.interval_s) + 1
                self.overruns += missed
                deadline += missed * self.interval_s


def phase_for(index: int, count: int, interval_s: float) -> float:
    """Spread ``count`` groups of one interval evenly: group ``index`` gets this phase (seconds)."""
    if count <= 1:
        return 0.0
    return interval_s * index / count
