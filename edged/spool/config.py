"""The [spool] table: size and age bounds, overflow policy and durability of the on-disk spool."""
from __future__ import annotations

from dataclasses import dataclass

from edged.schema import Section

OVERFLOW_POLICIES = ("drop_oldest", "drop_newest")
DURABILITY_LEVELS = ("batch", "os")


@dataclass(slots=True)
class SpoolSpec:
    """Spool limits and durability.

    ``max_bytes`` bounds the encoded samples kept plus 64 bytes per append (the files take slightly
    more: SQLite pages and a write-ahead log of a few MB). ``max_age_s`` bounds how long a sample may wait in the spool.
    ``overflow`` says what goes when the spool is full: ``drop_oldest`` (default) or
    ``drop_newest``; every dropped sample is counted and recorded as a gap forwarded upstream.
    ``durability``: ``batch`` fsyncs every commit before any sink sees its samples (what was sent
    upstream survives power loss); ``os`` leaves writes to the OS page cache (survives a crash or
    ``kill -9`` of edged, but a power loss may lose the last seconds of samples; the spool stays
    consistent either way).
    ``commit_interval_ms``: the spool's writer thread commits (and fsyncs) at most this often; a
    ``kill -9`` or power loss loses at most the samples of the last interval, never one a sink sent.
    ``queue_samples``: most samples waiting in memory for the next commit; more are dropped as gaps.
    """

    max_bytes: int = 256 * 1024 * 1024
    max_age_s: float = 7 * 86400.0
    overflow: str = "drop_oldest"
    durability: str = "batch"
    cache_samples: int = 262_144
    commit_interval_ms: int = 200
    queue_samples: int = 200_000


def parse_spool(sec: Section | None) -> SpoolSpec:
    """Read the [spool] table (all keys optional)."""
    spec = SpoolSpec()
    if sec is None:
        return spec
    spec.max_bytes = sec.get_int("max_bytes", spec.max_bytes, min=1024) or spec.max_bytes
    spec.max_age_s = sec.get_float("max_age_s", spec.max_age_s, min=1.0) or spec.max_age_s
    spec.overflow = sec.get_str("overflow", spec.overflow, choices=list(OVERFLOW_POLICIES)) or spec.overflow
    spec.durability = sec.get_str("durability", spec.durability, choices=list(DURABILITY_LEVELS)) or spec.durability
    spec.cache_samples = sec.get_int("cache_samples", spec.cache_samples, min=0, max=100_000_000)
    if spec.cache_samples is None:
        spec.cache_samples = SpoolSpec.cache_samples
    spec.commit_interval_ms = sec.get_int("commit_interval_ms", spec.commit_interval_ms, min=10,
                                          max=60_000) or spec.commit_interval_ms
    spec.queue_samples = sec.get_int("queue_samples", spec.queue_samples, min=100,
                                     max=100_000_000) or spec.queue_samples
    sec.finish()
    return spec
