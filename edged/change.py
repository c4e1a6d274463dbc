"""Report by exception: a reading becomes a sample when its value moved beyond the deadband, its quality changed, or a heartbeat is due.

``ChangeFilter`` is the compiled implementation (``cext/change.pyx``) used by the runtime;
``PyChangeFilter`` is the same logic in Python, kept as the readable reference the tests compare
the compiled one against.
"""
from __future__ import annotations

import math
from typing import Any, Iterable

from edged.cext.change import ChangeFilter
from edged.tag import Reading, Sample

__all__ = ["ChangeFilter", "PyChangeFilter"]


class PyChangeFilter:
    """Remembers the last reported value per tag slot and lets through only what changed (or heartbeats)."""

    def __init__(self, slots: int, heartbeat_s: float = 0.0) -> None:
        self.last_value: list[Any] = [None] * slots
        self.last_quality: list[int] = [-1] * slots
        self.last_ts: list[int] = [0] * slots
        self.heartbeat_ns = int(heartbeat_s * 1e9)
        self.suppressed = 0

    @staticmethod
    def _moved(value: Any, prev: Any, deadband: float) -> bool:
        numeric = type(value) in (int, float)
        if numeric != (type(prev) in (int, float)):
            return True
        if not numeric:
            return value != prev
        vnan = isinstance(value, float) and math.isnan(value)
        pnan = isinstance(prev, float) and math.isnan(prev)
        if vnan or pnan:
            return vnan != pnan
        if deadband > 0.0:
            return abs(value - prev) > deadband
        return value != prev

    def filter(self, readings: Iterable[Reading], current: dict[str, tuple[Any, int, int]] | None = None
               ) -> list[Sample]:
        """The samples to emit for a batch of readings (and, with ``current``, the current value table updated)."""
        out: list[Sample] = []
        lv, lq, lt, hb = self.last_value, self.last_quality, self.last_ts, self.heartbeat_ns
        for tag, value, quality, ts in readings:
            s = tag.slot
            q = int(quality)
            if current is not None:
                current[tag.key] = (value, q, ts)
            changed = q != lq[s] or self._moved(value, lv[s], tag.deadband)
            if not changed and hb and ts - lt[s] >= hb:
                changed = True
            if changed:
                lv[s] = value
                lq[s] = q
                lt[s] = ts
                out.append(Sample(ts, tag.device, tag.name, value, q))
            else:
                self.suppressed += 1
        return out
