"""Report by exception: a reading becomes a sample when its value moved beyond the deadband, its quality changed, or a heartbeat is due."""
from __future__ import annotations

from typing import Any, Iterable

from edged.tag import Reading, Sample


class ChangeFilter:
    """Remembers the last reported value per tag slot and lets through only what changed (or heartbeats)."""

    def __init__(self, slots: int, heartbeat_s: float = 0.0) -> None:
        self.last_value: list[Any] = [None] * slots
        self.last_quality: list[int] = [-1] * slots
        self.last_ts: list[int] = [0] * slots
        self.heartbeat_ns = int(heartbeat_s * 1e9)
        self.suppressed = 0

    def filter(self, readings: Iterable[Reading]) -> list[Sample]:
        """The samples to emit for a batch of readings."""
        out: list[Sample] = []
        lv, lq, lt, hb = self.last_value, self.last_quality, self.last_ts, self.heartbeat_ns
        for tag, value, quality, ts in readings:
            s = tag.slot
            q = int(quality)
            prev = lv[s]
            changed = q != lq[s]
            if not changed:
                if tag.deadband > 0.0 and prev is not None and value is not None:
                    changed = abs(value - prev) > tag.deadband
                else:
                    changed = value != prev
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
