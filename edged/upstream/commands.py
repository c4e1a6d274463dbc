"""The command gate: every write requested from upstream is validated, rate-limited, audited and counted."""
from __future__ import annotations

import logging
import time
from typing import Any

from edged.echo import echo, message, token
from edged.errors import WriteRefused
from edged.sinks.base import SinkContext, WriteResult
from edged.upstream.metrics import sink_metrics
from edged.writes import check_write

log = logging.getLogger("edged.commands")
audit = logging.getLogger("edged.audit")

# The default bound of a command payload, in bytes, checked before it is parsed (``max_command_bytes``).
MAX_COMMAND_BYTES = 4096


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


class RefusalLimiter:
    """Bounds the log lines and answers of refused commands (one bucket per sink, whatever the tag).

    A flood of bad commands (unknown tags, garbage) must not flood the log or the response topic:
    beyond the bucket, refusals are only counted; the next refusal that is let through says how many
    were suppressed since the last one.
    """

    def __init__(self, rate_per_s: float, burst: int) -> None:
        self.bucket = TokenBucket(rate_per_s, max(1, burst))
        self.suppressed = 0  # since the last refusal that was let through
        self.flooding = False  # refusals were suppressed and no refusal since came at a calm rate

    def allow(self) -> tuple[bool, int, bool]:
        """(loud, suppressed since the last loud one, a flood starts with this refusal).

        ``loud``: this refusal may be logged and answered. A flood starts at the first suppressed
        refusal after a calm spell (a refusal let through with none suppressed before it ends a flood).
        """
        if self.bucket.take():
            n, self.suppressed = self.suppressed, 0
            if n == 0:
                self.flooding = False
            return True, n, False
        self.suppressed += 1
        started, self.flooding = not self.flooding, True
        return False, 0, started


class CommandGate:
    """Validates (tag exists, writable, type, range), rate-limits per tag, audits, counts, then writes."""

    def __init__(self, ctx: SinkContext, sink_name: str, rate_per_s: float = 5.0, burst: int = 5) -> None:
        self.ctx = ctx
        self.sink_name = sink_name
        self.rate_per_s = rate_per_s
        self.burst = max(1, burst)
        self._buckets: dict[str, TokenBucket] = {}
        self._metrics = sink_metrics(ctx.registry)
        self.refusals = RefusalLimiter(rate_per_s, self.burst)

    async def execute(self, tag_key: str, value: Any, source: str, request_id: str = "") -> WriteResult:
        """Validate, rate-limit, audit-log, count and write one value; never raises for a bad request."""
        tag = self.ctx.tags.get(tag_key)
        if tag is None:
            return self.refuse(tag_key, value, source, request_id, "unknown_tag", f"unknown tag {echo(tag_key)}")
        try:
            checked = check_write(tag, value)
        except WriteRefused as exc:
            reason = "read_only" if not tag.writable else "invalid_value"
            return self.refuse(tag_key, value, source, request_id, reason, str(exc))
        bucket = self._buckets.get(tag_key)
        if bucket is None:
            bucket = self._buckets[tag_key] = TokenBucket(self.rate_per_s, self.burst)
        if not bucket.take():
            return self.refuse(tag_key, value, source, request_id, "rate_limited",
                               f"{tag_key}: rate limit exceeded ({self.rate_per_s:g} writes/s, burst {self.burst})")
        try:
            result = await self.ctx.write(tag_key, checked, source)
        except Exception as exc:  # the runtime reports failures as results; be safe anyway
            log.exception("write of %s from %s failed", tag_key, token(source))
            result = WriteResult(ok=False, tag=tag_key, value=checked, error=f"{tag_key}: write failed: {echo(exc)}")
        if result.ok:
            self._metrics.commands.labels(self.sink_name, "accepted", "").inc()
            audit.info("write accepted: sink=%s source=%s id=%s tag=%s old=%s new=%s", self.sink_name,
                       token(source), token(request_id or "-"), tag_key, echo(result.old_value), echo(result.value))
        else:
            self._metrics.commands.labels(self.sink_name, "failed", "write_error").inc()
            audit.warning("write failed: sink=%s source=%s id=%s tag=%s value=%s error=%s", self.sink_name,
                          token(source), token(request_id or "-"), tag_key, echo(checked), message(result.error))
        return result

    def refuse(self, tag_key: str, value: Any, source: str, request_id: str, reason: str,
               error: str) -> WriteResult:
        """Count a refused command; audit-log it unless refusals arrive faster than the sink's command rate.

        The result is ``quiet`` when the refusal was suppressed: the sink then sends no answer either.
        """
        self._metrics.commands.labels(self.sink_name, "refused", reason).inc()
        loud, suppressed, flood = self.refusals.allow()
        if not loud:
            self._metrics.refusals_suppressed.labels(self.sink_name).inc()
            if flood:
                log.warning("sink %s: refused commands arrive faster than %g/s (burst %d): further refusals are "
                            "counted in edged_command_refusals_suppressed_total, not logged or answered",
                            self.sink_name, self.rate_per_s, self.burst)
            return WriteResult(ok=False, tag=tag_key, value=None, error=error, quiet=True)
        audit.warning("write refused: sink=%s source=%s id=%s tag=%s value=%s reason=%s: %s%s", self.sink_name,
                      token(source), token(request_id or "-"), token(tag_key), echo(value), reason, message(error),
                      f" ({suppressed} more refusals were not logged or answered)" if suppressed else "")
        return WriteResult(ok=False, tag=tag_key, value=None, error=error)
