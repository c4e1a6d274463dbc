"""The command gate: every write requested from upstream is validated, rate-limited, audited and counted."""
from __future__ import annotations

import logging
import time
from typing import Any

from edged.errors import WriteRefused
from edged.sinks.base import SinkContext, WriteResult
from edged.upstream.metrics import sink_metrics
from edged.writes import check_write

log = logging.getLogger("edged.commands")
audit = logging.getLogger("edged.audit")


class TokenBucket:
    """A token bucket: ``burst`` writes at once, refilled at ``rate_per_s``."""

    __slots__ = ("rate", "burst", "tokens", "stamp")

    def __init__(self, rate_per_s: float, burst: int) -> None:
        self.rate = rate_per_s
        self.burst = float(burst)
        self.tokens = float(burst)
        self.stamp = time.monotonic()

    def take(self) -> bool:
        """Consume one token if available."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class CommandGate:
    """Validates (tag exists, writable, type, range), rate-limits per tag, audits, counts, then writes."""

    def __init__(self, ctx: SinkContext, sink_name: str, rate_per_s: float = 5.0, burst: int = 5) -> None:
        self.ctx = ctx
        self.sink_name = sink_name
        self.rate_per_s = rate_per_s
        self.burst = max(1, burst)
        self._buckets: dict[str, TokenBucket] = {}
        self._metrics = sink_metrics(ctx.registry)

    async def execute(self, tag_key: str, value: Any, source: str, request_id: str = "") -> WriteResult:
        """Validate, rate-limit, audit-log, count and write one value; never raises for a bad request."""
        tag = self.ctx.tags.get(tag_key)
        if tag is None:
            return self._refuse(tag_key, value, source, request_id, "unknown_tag", f"unknown tag {tag_key!r}")
        try:
            checked = check_write(tag, value)
        except WriteRefused as exc:
            reason = "read_only" if not tag.writable else "invalid_value"
            return self._refuse(tag_key, value, source, request_id, reason, str(exc))
        bucket = self._buckets.get(tag_key)
        if bucket is None:
            bucket = self._buckets[tag_key] = TokenBucket(self.rate_per_s, self.burst)
        if not bucket.take():
            return self._refuse(tag_key, value, source, request_id, "rate_limited",
                                f"{tag_key}: rate limit exceeded ({self.rate_per_s:g} writes/s, burst {self.burst})")
        try:
            result = await self.ctx.write(tag_key, checked, source)
        except Exception as exc:  # the runtime reports failures as results; be safe anyway
            log.exception("write of %s from %s failed", tag_key, source)
            result = WriteResult(ok=False, tag=tag_key, value=checked, error=f"{tag_key}: write failed: {exc}")
        if result.ok:
            self._metrics.commands.labels(self.sink_name, "accepted", "").inc()
            audit.info("write accepted: sink=%s source=%s id=%s tag=%s old=%r new=%r", self.sink_name, source,
                       request_id or "-", tag_key, result.old_value, result.value)
        else:
            self._metrics.commands.labels(self.sink_name, "failed", "write_error").inc()
            audit.warning("write failed: sink=%s source=%s id=%s tag=%s value=%r error=%s", self.sink_name,
                          source, request_id or "-", tag_key, checked, result.error)
        return result

    def _refuse(self, tag_key: str, value: Any, source: str, request_id: str, reason: str,
                error: str) -> WriteResult:
        self._metrics.commands.labels(self.sink_name, "refused", reason).inc()
        audit.warning("write refused: sink=%s source=%s id=%s tag=%s value=%r reason=%s: %s", self.sink_name,
                      source, request_id or "-", tag_key, _short(value), reason, error)
        return WriteResult(ok=False, tag=tag_key, value=value, error=error)


def _short(value: Any) -> str:
    """A bounded repr for audit lines (a command may carry anything)."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
