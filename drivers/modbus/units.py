"""Per-unit health behind one Modbus connection: silent units back off alone; a silent link is detected."""
from __future__ import annotations

import logging
import time

log = logging.getLogger(__name__)

UP, SILENT, BACKOFF, DOWN = "up", "silent", "backoff", "down"


class UnitHealth:
    """Tracks each unit id of a device: up, silent (just timed out), backed off, or down with the link.

    A unit that times out is backed off (``backoff_initial_s`` doubling to ``backoff_max_s``): while
    backed off its requests are not sent (its tags are bad), so it costs the scan at most one timeout
    per backoff period. ``link_timeouts`` consecutive timeouts with no answer from any unit in between
    mean the whole link is silent. ``state`` is the device's ``DriverStats.unit_state`` (shared dict).
    """

    def __init__(self, device: str, units: list[int], state: dict[str, str], link_timeouts: int,
                 backoff_initial_s: float, backoff_max_s: float) -> None:
        self.device = device
        self.state = state
        self.link_timeouts = link_timeouts
        self.initial = backoff_initial_s
        self.max = backoff_max_s
        self.retry_at: dict[int, float] = {}
        self.delay: dict[int, float] = {}
        self.consecutive = 0
        for u in units:
            state[self.label(u)] = DOWN

    @staticmethod
    def label(unit: int) -> str:
        """The unit's label in metrics and messages: ``unit 9``."""
        return f"unit {unit}"

    def backed_off(self, unit: int, now: float | None = None) -> bool:
        """True while a silent unit waits for its next probe (its requests are skipped)."""
        at = self.retry_at.get(unit)
        if at is None:
            return False
        if (time.monotonic() if now is None else now) < at:
            self.state[self.label(unit)] = BACKOFF
            return True
        return False

    def answered(self, unit: int) -> None:
        """A unit answered (data or a Modbus exception): the link and the unit are alive."""
        self.consecutive = 0
        if unit in self.retry_at:
            del self.retry_at[unit]
            self.delay.pop(unit, None)
            log.info("device %s: unit %d answers again", self.device, unit)
        self.state[self.label(unit)] = UP

    def link_alive(self) -> None:
        """Something valid arrived on the link (not necessarily from the unit asked)."""
        self.consecutive = 0

    def timed_out(self, unit: int) -> bool:
        """A unit timed out: back it off; True when the whole link is now considered silent."""
        self.consecutive += 1
        first = unit not in self.retry_at
        delay = self.initial if first else min(self.max, self.delay.get(unit, self.initial) * 2)
        self.delay[unit] = delay
        self.retry_at[unit] = time.monotonic() + delay
        self.state[self.label(unit)] = SILENT
        if first and self.consecutive < self.link_timeouts:
            log.warning("device %s: unit %d is silent: its tags are bad; retried every %g..%g s while the "
                        "other units keep their scan", self.device, unit, self.initial, self.max)
        return self.consecutive >= self.link_timeouts

    def link_up(self) -> None:
        """A new connection: every unit starts up, with no backoff."""
        self.consecutive = 0
        self.retry_at.clear()
        self.delay.clear()
        for key in self.state:
            self.state[key] = UP

    def link_down(self) -> None:
        """The connection is gone: every unit is down, backoffs start afresh on the next connection."""
        self.consecutive = 0
        self.retry_at.clear()
        self.delay.clear()
        for key in self.state:
            self.state[key] = DOWN
