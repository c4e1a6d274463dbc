"""The local JSON-lines sink: one line per sample (and per gap) from the spool, size-based rotation."""
from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from edged.schema import Section
from edged.sinks.base import Sink, SinkContext
from edged.spool.spool import Gap, Spool
from edged.tag import Quality, Sample, Tag
from edged.upstream.metrics import sink_metrics

log = logging.getLogger("edged.sinks.jsonl")

QUALITY_LABELS = {int(q): q.label for q in Quality}
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


@dataclass(slots=True)
class JsonlSpec:
    """A [sink.<name>] table of type "jsonl"."""

    name: str
    path: str = "samples.jsonl"
    max_bytes: int = 64 * 1024 * 1024
    keep: int = 5
    batch_samples: int = 5000
    fsync: bool = False
    kind: str = "jsonl"


def default_spec() -> JsonlSpec:
    """The sink used when a cell configures none: ``samples.jsonl`` in the state directory."""
    return JsonlSpec(name="local")


def parse_spec(name: str, sec: Section, tags: dict[str, Tag]) -> JsonlSpec:
    """Read the keys of a jsonl sink table (path, max_bytes, keep, batch_samples, fsync)."""
    spec = JsonlSpec(name=name)
    spec.path = sec.get_str("path", spec.path) or spec.path
    spec.max_bytes = sec.get_int("max_bytes", spec.max_bytes, min=4096) or spec.max_bytes
    keep = sec.get_int("keep", spec.keep, min=0, max=1000)
    spec.keep = spec.keep if keep is None else keep
    spec.batch_samples = sec.get_int("batch_samples", spec.batch_samples, min=1, max=1_000_000) or spec.batch_samples
    spec.fsync = bool(sec.get_bool("fsync", False))
    if spec.path.endswith("/"):
        sec.error("path", f"expected a file path, found a directory {spec.path!r}")
    return spec


def rfc3339(ts_ns: int) -> str:
    """UTC time with microseconds, e.g. ``2026-11-25T08:00:00.123456Z``."""
    return (_EPOCH + dt.timedelta(microseconds=ts_ns // 1000)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _json_value(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # "nan", "inf", "-inf": JSON has no literal for them
    return value


class _LineEncoder:
    """Encodes sample lines exactly as ``json.dumps`` would, with the per-second and per-tag parts cached.

    The sink writes every sample it forwards, so this is per-value work: the timestamp's seconds
    prefix changes once a second and a tag's ``"device": ..., "tag": ...`` part never changes.
    """

    def __init__(self) -> None:
        self._sec = -1
        self._prefix = ""
        self._names: dict[tuple[str, str], str] = {}

    def ts(self, ts_ns: int) -> str:
        """The RFC 3339 timestamp of ``ts_ns`` (same text as :func:`rfc3339`)."""
        us = ts_ns // 1000
        sec = us // 1_000_000
        if sec != self._sec:
            self._sec = sec
            self._prefix = (_EPOCH + dt.timedelta(seconds=sec)).strftime("%Y-%m-%dT%H:%M:%S")
        return f"{self._prefix}.{us % 1_000_000:06d}Z"

    def line(self, s: Sample) -> str:
        """The JSON line of one sample."""
        names = self._names.get((s.device, s.tag))
        if names is None:
            names = self._names[(s.device, s.tag)] = (
                f'"device": {json.dumps(s.device, ensure_ascii=False)}, "tag": {json.dumps(s.tag, ensure_ascii=False)}')
        v = s.value
        t = type(v)
        if v is None:
            value = "null"
        elif t is bool:
            value = "true" if v else "false"
        elif t is int:
            value = int.__repr__(v)
        elif t is float and math.isfinite(v):
            value = float.__repr__(v)
        else:
            value = json.dumps(_json_value(v), ensure_ascii=False, default=str)
        quality = QUALITY_LABELS.get(s.quality)
        if quality is None:
            quality = str(s.quality)
        return f'{{"ts": "{self.ts(s.ts_ns)}", "ts_ns": {s.ts_ns}, {names}, "value": {value}, "quality": "{quality}"}}'


_encoder = _LineEncoder()


def sample_line(s: Sample) -> str:
    """The JSON line of one sample."""
    return _encoder.line(s)


def gap_line(g: Gap) -> str:
    """The JSON line of a gap: samples lost from the spool."""
    return json.dumps({"gap": {"id": g.id, "start": rfc3339(g.start_ns), "end": rfc3339(g.end_ns), "start_ns": g.start_ns,
                               "end_ns": g.end_ns, "device": g.device, "count": g.count}}, ensure_ascii=False)


class RotatingFile:
    """An append-only text file rotated by size: ``path`` -> ``path.1`` -> ... ``path.<keep>``."""

    def __init__(self, path: Path, max_bytes: int, keep: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.keep = keep
        self._f: IO[bytes] | None = None
        self._size = 0

    def _open(self) -> IO[bytes]:
        if self._f is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._f = open(self.path, "ab")
            self._size = self._f.tell()
            if self._size:
                self._repair_tail()
        return self._f

    def _repair_tail(self) -> None:
        """After a crash mid-line, end the partial line so the next record starts on its own line."""
        with open(self.path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                assert self._f is not None
                self._f.write(b"\n")
                self._size += 1

    def write(self, data: bytes) -> None:
        """Append bytes (whole lines), rotating first when the file would pass max_bytes."""
        f = self._open()
        if self._size and self._size + len(data) > self.max_bytes:
            self.rotate()
            f = self._open()
        f.write(data)
        self._size += len(data)

    def flush(self, fsync: bool) -> None:
        """Flush to the OS, and to the disk when fsync."""
        if self._f is not None:
            self._f.flush()
            if fsync:
                os.fsync(self._f.fileno())

    def rotate(self) -> None:
        """Close the current file and shift the numbered ones; the oldest beyond ``keep`` is deleted."""
        self.close()
        if self.keep == 0:
            self.path.unlink(missing_ok=True)
            return
        oldest = self.path.with_name(f"{self.path.name}.{self.keep}")
        oldest.unlink(missing_ok=True)
        for i in range(self.keep - 1, 0, -1):
            src = self.path.with_name(f"{self.path.name}.{i}")
            if src.exists():
                src.rename(self.path.with_name(f"{self.path.name}.{i + 1}"))
        if self.path.exists():
            self.path.rename(self.path.with_name(f"{self.path.name}.1"))

    def close(self) -> None:
        """Close the file (reopened on the next write)."""
        if self._f is not None:
            try:
                self._f.close()
            finally:
                self._f = None
                self._size = 0


class JsonlSink(Sink):
    """Writes every sample and gap of its spool consumer as JSON lines, acking after each written batch."""

    def __init__(self, spec: JsonlSpec, spool: Spool, ctx: SinkContext) -> None:
        super().__init__(spec, spool, ctx)
        path = Path(spec.path)
        if not path.is_absolute():
            path = Path(ctx.state_dir or ".") / path
        self.path = path
        self.file = RotatingFile(path, spec.max_bytes, spec.keep)
        self.metrics = sink_metrics(ctx.registry)
        self._failing = False

    async def run(self) -> None:
        """Forward until cancelled; on a write error keep the batch in the spool and retry with backoff."""
        m = self.metrics
        m.connected.labels(self.name).set(1)
        delay = 0.5
        while True:
            batch = self.spool.take(self.name, self.spec.batch_samples)
            if batch is None:
                await self.spool.wait(self.name, timeout=5.0)
                continue
            t0 = time.perf_counter()
            try:
                lines = [gap_line(g) for g in batch.gaps] + [sample_line(s) for s in batch.samples]
                self.file.write(("\n".join(lines) + "\n").encode())
                if self.spec.fsync:
                    await asyncio.to_thread(self.file.flush, True)
                else:
                    self.file.flush(False)
            except OSError as exc:
                self.spool.release(batch)
                self.file.close()
                if not self._failing:
                    log.error("sink %s: cannot write %s: %s (samples stay in the spool; retrying)",
                              self.name, self.path, exc.strerror or exc)
                    m.connected.labels(self.name).set(0)
                self._failing = True
                await asyncio.sleep(delay)
                delay = min(30.0, delay * 2)
                continue
            if self._failing:
                log.info("sink %s: writing %s again", self.name, self.path)
                m.connected.labels(self.name).set(1)
                self._failing = False
                delay = 0.5
            self.spool.ack(batch)
            m.latency.labels(self.name).observe(time.perf_counter() - t0)
            m.published.labels(self.name).inc(len(batch.samples))
            m.acked.labels(self.name).inc(len(batch.samples))
            m.messages.labels(self.name).inc(len(lines))
            if batch.gaps:
                m.gaps.labels(self.name).inc(len(batch.gaps))

    async def close(self) -> None:
        """Flush and close the file."""
        try:
            self.file.flush(True)
        except OSError:
            pass
        self.file.close()
        self.metrics.connected.labels(self.name).set(0)


SINK_CLASS = JsonlSink
