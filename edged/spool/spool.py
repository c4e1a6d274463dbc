"""The durable spool: an SQLite (WAL) FIFO of sample chunks with one acknowledged cursor per sink.

Every ``append`` stores its samples as one chunk (one row, one transaction) and gives them
consecutive sequence numbers. Each consumer (sink) takes batches in sequence order, then acks
them strictly in order or releases them to be taken again; a chunk is deleted once every consumer
has acked it. Overflow (bytes) and expiry (age) drop whole chunks that no consumer has in flight;
every sample lost that way is counted and becomes a gap record for each consumer that had not yet
acked it, forwarded with that consumer's next batch.

All methods are called from the asyncio thread (an internal lock makes them safe from others).
"""
from __future__ import annotations

import asyncio
import collections
import logging
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from edged.spool.codec import decode_chunk, encode_chunk
from edged.spool.config import SpoolSpec
from edged.spool.index import Chunk, ChunkIndex
from edged.tag import Sample

log = logging.getLogger("edged.spool")

DB_NAME = "spool.db"
FORMAT_VERSION = 1
ACK_FLUSH_INTERVAL_S = 0.5
MAX_GAPS_PER_BATCH = 100
LOSS_LOG_INTERVAL_S = 60.0
# counted per append against max_bytes besides the encoded samples: its SQLite row and index entry,
# so a spool of many tiny appends stays bounded in disk and memory too
CHUNK_OVERHEAD_BYTES = 64
_now_ns = time.time_ns  # wall clock of append times (replaceable in tests)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS chunk (
    first_seq INTEGER PRIMARY KEY, last_seq INTEGER NOT NULL, t_ns INTEGER NOT NULL,
    nbytes INTEGER NOT NULL, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS consumer (name TEXT PRIMARY KEY, acked_seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS gap (
    id INTEGER PRIMARY KEY, consumer TEXT NOT NULL, device TEXT NOT NULL,
    start_ns INTEGER NOT NULL, end_ns INTEGER NOT NULL, count INTEGER NOT NULL);
"""


@dataclass(slots=True)
class Gap:
    """Samples of one device lost from the spool (overflow or age): time range and count."""

    start_ns: int
    end_ns: int
    device: str
    count: int
    id: int = 0  # unique in this spool; a gap sent again (after a release) has the same id and the final count

    def as_dict(self) -> dict[str, Any]:
        """The gap as a JSON-ready dict."""
        return {"id": self.id, "start_ns": self.start_ns, "end_ns": self.end_ns, "device": self.device,
                "count": self.count}


@dataclass(slots=True, eq=False)
class SpoolBatch:
    """Samples (and gaps) taken by one consumer; ack it once delivered, or release it."""

    consumer: str
    samples: list[Sample]
    gaps: list[Gap]
    first_seq: int
    last_seq: int
    gap_ids: tuple[int, ...] = ()

    def __len__(self) -> int:
        return len(self.samples)


@dataclass(slots=True)
class SpoolStats:
    """A snapshot of the spool for metrics and status."""

    depth_samples: int
    depth_bytes: int
    oldest_age_s: float
    dropped_total: int
    gaps_total: int
    appended_total: int
    chunks: int
    lag_samples: dict[str, int] = field(default_factory=dict)
    acked_total: dict[str, int] = field(default_factory=dict)
    appends_total: int = 0
    append_seconds_total: float = 0.0


@dataclass(slots=True, eq=False)
class _GapRow:
    id: int
    consumer: str
    gap: Gap


class _Consumer:
    """Cursor state of one consumer: acked (durable) and taken (in memory) sequence numbers."""

    __slots__ = ("name", "acked", "taken", "handed", "outstanding", "gaps", "gaps_taken", "event", "acked_total",
                 "dirty")

    def __init__(self, name: str, acked: int) -> None:
        self.name = name
        self.acked = acked
        self.taken = acked
        # highest sequence ever handed out since start: a released batch may have been partly delivered,
        # so it is never dropped (dropping it would report as lost what upstream may have received)
        self.handed = acked
        self.outstanding: collections.deque[SpoolBatch] = collections.deque()
        self.gaps: list[_GapRow] = []
        self.gaps_taken: set[int] = set()
        self.event: asyncio.Event | None = None
        self.acked_total = 0
        self.dirty = False


class SpoolError(Exception):
    """The spool cannot be opened or used (corrupt file, unknown consumer, misuse)."""


class Spool:
    """Durable FIFO between acquisition and sinks; see the module docstring."""

    def __init__(self, directory: Path, spec: SpoolSpec, db: sqlite3.Connection) -> None:
        self.directory = directory
        self.spec = spec
        self._db = db
        self._lock = threading.RLock()
        self._chunks = ChunkIndex()
        self._cache: collections.OrderedDict[int, list[Sample]] = collections.OrderedDict()
        self._cache_samples = 0
        self._consumers: dict[str, _Consumer] = {}
        self._next_seq = 1
        self._next_gap_id = 1
        self._bytes = 0
        self._samples = 0
        self._pending: list[tuple[str, tuple[Any, ...]]] = []
        self._last_commit = time.monotonic()
        self._dropped_total = 0
        self._gaps_total = 0
        self._appended_total = 0
        self._closed = False
        self._storage_failing = False
        self._appends = 0
        self._append_seconds = 0.0
        self._loss_logged_at: dict[str, float] = {}
        self._loss_unlogged: dict[str, int] = {}

    # -- opening and recovery -------------------------------------------------------------
    @classmethod
    def open(cls, directory: Path, spec: SpoolSpec, consumers: list[str]) -> "Spool":
        """Create the spool in ``directory`` or recover it (after a crash or kill -9) for these consumers.

        A file SQLite reports as corrupt is moved aside (``spool.db.corrupt-<time>``, kept for
        inspection) and a new spool is started, so a damaged disk block cannot stop acquisition.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / DB_NAME
        try:
            return cls._open(directory, path, spec, consumers)
        except sqlite3.DatabaseError as exc:
            if getattr(exc, "sqlite_errorname", "") not in ("SQLITE_CORRUPT", "SQLITE_NOTADB"):
                raise SpoolError(f"{path}: cannot open the spool: {exc}") from exc
            aside = path.with_name(f"{DB_NAME}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}")
            log.error("spool: %s is corrupt (%s); moved to %s and starting an empty spool: the samples it held "
                      "were not forwarded", path, exc, aside.name)
            for suffix in ("", "-wal", "-shm"):
                src = Path(str(path) + suffix)
                if src.exists():
                    src.rename(Path(str(aside) + suffix))
            try:
                return cls._open(directory, path, spec, consumers)
            except sqlite3.DatabaseError as exc2:
                raise SpoolError(f"{path}: cannot open the spool: {exc2}") from exc2

    @classmethod
    def _open(cls, directory: Path, path: Path, spec: SpoolSpec, consumers: list[str]) -> "Spool":
        db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={'FULL' if spec.durability == 'batch' else 'NORMAL'}")
            db.execute("PRAGMA journal_size_limit=16777216")
            db.executescript(_SCHEMA)
            row = db.execute("SELECT value FROM meta WHERE key='format'").fetchone()
            if row is None:
                db.execute("INSERT INTO meta VALUES('format', ?)", (FORMAT_VERSION,))
            elif row[0] != FORMAT_VERSION:
                raise SpoolError(f"{path}: spool format {row[0]} is not supported by this edged (it reads format "
                                 f"{FORMAT_VERSION}); move the file aside to start an empty spool")
            spool = cls(directory, spec, db)
            spool._recover(consumers)
        except BaseException:
            db.close()
            raise
        return spool

    def _recover(self, names: list[str]) -> None:
        db = self._db
        for first, last, t_ns, nbytes in db.execute("SELECT first_seq, last_seq, t_ns, nbytes FROM chunk ORDER BY first_seq"):
            self._chunks.append(Chunk(first, last, t_ns, nbytes))
            self._bytes += nbytes + CHUNK_OVERHEAD_BYTES
            self._samples += last - first + 1
        stored = {name: acked for name, acked in db.execute("SELECT name, acked_seq FROM consumer")}
        top = max([self._chunks[-1].last if self._chunks else 0, *stored.values()])
        self._next_seq = top + 1
        floor = (self._chunks[0].first - 1) if self._chunks else top
        db.execute("BEGIN")
        for name in names:
            if name in self._consumers:
                raise SpoolError(f"consumer {name!r} given twice")
            if name in stored:
                acked = stored[name]
            else:
                acked = floor  # a new sink receives the backlog still in the spool
                db.execute("INSERT INTO consumer VALUES(?, ?)", (name, acked))
            self._consumers[name] = _Consumer(name, acked)
        for name in stored:
            if name not in self._consumers:
                log.warning("spool: sink %r is no longer configured; its cursor and gaps are removed", name)
                db.execute("DELETE FROM consumer WHERE name=?", (name,))
                db.execute("DELETE FROM gap WHERE consumer=?", (name,))
        for gid, consumer, device, start, end, count in db.execute(
                "SELECT id, consumer, device, start_ns, end_ns, count FROM gap ORDER BY id"):
            if consumer in self._consumers:
                self._consumers[consumer].gaps.append(_GapRow(gid, consumer, Gap(start, end, device, count, gid)))
            self._next_gap_id = max(self._next_gap_id, gid + 1)
        db.execute("COMMIT")
        self._collect()
        self._commit()
        if self._samples:
            log.info("spool: recovered %d sample(s) in %d chunk(s) from %s", self._samples, len(self._chunks),
                     self.directory)

    # -- appending ---------------------------------------------------------------------------
    def append(self, samples: Sequence[Sample]) -> None:
        """Store samples as one chunk; durable (per spec.durability) when this returns."""
        if not samples:
            return
        t0 = time.perf_counter()
        try:
            self._append(samples)
        finally:
            self._appends += 1
            self._append_seconds += time.perf_counter() - t0

    def _append(self, samples: Sequence[Sample]) -> None:
        with self._lock:
            self._check_open()
            now = _now_ns()
            self._expire(now)
            if not isinstance(samples, list):
                samples = list(samples)
            blob = encode_chunk(samples)
            n = len(samples)
            if not self._make_room(len(blob) + CHUNK_OVERHEAD_BYTES):
                self._drop_new(samples)
                self._try_commit()
                return
            first = self._next_seq
            last = first + n - 1
            insert = ("INSERT INTO chunk VALUES(?, ?, ?, ?, ?)", (first, last, now, len(blob), blob))
            self._pending.append(insert)
            if not self._try_commit():
                # e.g. disk full: these samples cannot be kept; count them and report the gap (the other
                # pending changes are retried with the next commit)
                self._pending.remove(insert)
                self._drop_new(samples)
                return
            self._next_seq = last + 1
            self._chunks.append(Chunk(first, last, now, len(blob)))
            self._bytes += len(blob) + CHUNK_OVERHEAD_BYTES
            self._samples += n
            self._appended_total += n
            self._cache_put(first, samples)
            for c in self._consumers.values():
                if c.event is not None:
                    c.event.set()

    def _make_room(self, nbytes: int) -> bool:
        """Drop chunks per the overflow policy until nbytes fit; False when the new data must go instead."""
        if nbytes > self.spec.max_bytes:
            return False
        while self._bytes + nbytes > self.spec.max_bytes:
            if self.spec.overflow == "drop_newest":
                return False
            idx = self._victim()
            if idx is None:
                return False
            self._drop_chunk(idx, "overflow")
        return True

    def _victim(self) -> int | None:
        """Index of the oldest chunk no consumer has been handed (in flight, or released after a partial send)."""
        for i, ch in enumerate(self._chunks):
            if all(not (ch.first <= c.handed and ch.last > c.acked) for c in self._consumers.values()):
                return i
        return None

    def _expire(self, now_ns: int) -> None:
        limit = now_ns - int(self.spec.max_age_s * 1e9)
        i = 0
        while i < len(self._chunks) and self._chunks[i].t_ns < limit:
            ch = self._chunks[i]
            if any(ch.first <= c.handed and ch.last > c.acked for c in self._consumers.values()):
                i += 1  # in flight: it goes when acked, or expires after a release
                continue
            self._drop_chunk(i, "age")

    def _drop_chunk(self, idx: int, why: str) -> None:
        ch = self._chunks.pop(idx)
        data = self._load(ch)
        lost_any = len(data) - max(0, min(c.acked for c in self._consumers.values()) + 1 - ch.first) \
            if self._consumers else len(data)
        for c in self._consumers.values():
            start = max(0, c.acked + 1 - ch.first)
            if start < len(data):
                self._add_gaps(c, data[start:])
        self._dropped_total += max(0, lost_any)
        self._bytes -= ch.nbytes + CHUNK_OVERHEAD_BYTES
        self._samples -= ch.last - ch.first + 1
        self._cache_pop(ch.first)
        self._pending.append(("DELETE FROM chunk WHERE first_seq=?", (ch.first,)))
        log.debug("spool: dropped chunk %d..%d (%s)", ch.first, ch.last, why)

    def _drop_new(self, samples: list[Sample]) -> None:
        self._dropped_total += len(samples)
        for c in self._consumers.values():
            self._add_gaps(c, samples)

    def _add_gaps(self, c: _Consumer, samples: Sequence[Sample]) -> None:
        """Record lost samples per device, merging into the consumer's newest untaken gap of that device."""
        per_device: dict[str, list[int]] = {}
        for s in samples:
            g = per_device.get(s.device)
            if g is None:
                per_device[s.device] = [s.ts_ns, s.ts_ns, 1]
            else:
                if s.ts_ns < g[0]:
                    g[0] = s.ts_ns
                if s.ts_ns > g[1]:
                    g[1] = s.ts_ns
                g[2] += 1
        for device, (start, end, count) in per_device.items():
            row = next((r for r in reversed(c.gaps) if r.gap.device == device and r.id not in c.gaps_taken), None)
            if row is not None:
                row.gap.start_ns = min(row.gap.start_ns, start)
                row.gap.end_ns = max(row.gap.end_ns, end)
                row.gap.count += count
                self._pending.append(("UPDATE gap SET start_ns=?, end_ns=?, count=? WHERE id=?",
                                      (row.gap.start_ns, row.gap.end_ns, row.gap.count, row.id)))
                continue
            row = _GapRow(self._next_gap_id, c.name, Gap(start, end, device, count, self._next_gap_id))
            self._next_gap_id += 1
            c.gaps.append(row)
            self._gaps_total += 1
            self._pending.append(("INSERT INTO gap VALUES(?, ?, ?, ?, ?, ?)",
                                  (row.id, c.name, device, start, end, count)))
        self._report_loss(c, sum(g[2] for g in per_device.values()))

    def _report_loss(self, c: _Consumer, count: int) -> None:
        """Log lost samples at once, then at most every LOSS_LOG_INTERVAL_S per sink (no log floods)."""
        now = time.monotonic()
        pending = self._loss_unlogged.get(c.name, 0) + count
        if now - self._loss_logged_at.get(c.name, -LOSS_LOG_INTERVAL_S) >= LOSS_LOG_INTERVAL_S:
            log.warning("spool: %d sample(s) lost for sink %r (spool full or too old); counted in "
                        "edged_spool_dropped_samples_total and reported upstream as gaps", pending, c.name)
            self._loss_logged_at[c.name] = now
            pending = 0
        self._loss_unlogged[c.name] = pending

    # -- consuming -----------------------------------------------------------------------------
    def take(self, consumer: str, max_samples: int) -> SpoolBatch | None:
        """The oldest samples this consumer has neither acked nor taken (up to max_samples), with pending gaps."""
        with self._lock:
            self._check_open()
            c = self._consumer(consumer)
            self._expire(_now_ns())
            samples: list[Sample] = []
            first = c.taken + 1
            last = c.taken
            i = self._chunks.after(c.taken)
            while len(samples) < max_samples and i < len(self._chunks):
                ch = self._chunks[i]
                start = max(c.taken + 1, ch.first)
                if not samples:
                    first = start
                data = self._load(ch)
                part = data[start - ch.first: start - ch.first + max_samples - len(samples)]
                samples.extend(part)
                last = start + len(part) - 1
                i += 1
                if last < ch.last:
                    break
            rows = [r for r in c.gaps if r.id not in c.gaps_taken][:MAX_GAPS_PER_BATCH]
            if not samples and not rows:
                return None
            if samples:
                c.taken = last
                if last > c.handed:
                    c.handed = last
            else:
                first, last = c.taken + 1, c.taken
            for r in rows:
                c.gaps_taken.add(r.id)
            batch = SpoolBatch(consumer, samples, [Gap(r.gap.start_ns, r.gap.end_ns, r.gap.device, r.gap.count, r.id)
                                                   for r in rows], first, last, tuple(r.id for r in rows))
            c.outstanding.append(batch)
            return batch

    async def wait(self, consumer: str, timeout: float | None = None) -> None:
        """Return when data may be available for this consumer, or after timeout seconds."""
        c = self._consumer(consumer)
        if self._available(c):
            return
        if c.event is None:
            c.event = asyncio.Event()
        c.event.clear()
        if self._available(c):
            return
        # asyncio.timeout, not wait_for: Python 3.11's wait_for can swallow a cancellation that arrives as
        # the event is set, which would leave a cancelled sink task running
        try:
            async with asyncio.timeout(timeout):
                await c.event.wait()
        except TimeoutError:
            pass

    def _available(self, c: _Consumer) -> bool:
        return (bool(self._chunks) and self._chunks[-1].last > c.taken) or len(c.gaps_taken) < len(c.gaps)

    def ack(self, batch: SpoolBatch) -> None:
        """Acknowledge a delivered batch: it must be this consumer's oldest outstanding batch."""
        with self._lock:
            self._check_open()
            c = self._consumer(batch.consumer)
            if batch not in c.outstanding:
                log.debug("spool: ack of a released or already acked batch of %r ignored", c.name)
                return
            if c.outstanding[0] is not batch:
                raise SpoolError(f"sink {c.name!r} acked batch {batch.first_seq}..{batch.last_seq} before "
                                 f"{c.outstanding[0].first_seq}..{c.outstanding[0].last_seq}: acks must be in order")
            c.outstanding.popleft()
            if batch.samples and batch.last_seq > c.acked:
                c.acked = batch.last_seq
                c.acked_total += len(batch.samples)
            c.dirty = True
            if batch.gap_ids:
                ids = set(batch.gap_ids)
                c.gaps = [r for r in c.gaps if r.id not in ids]
                c.gaps_taken -= ids
                self._pending.extend(("DELETE FROM gap WHERE id=?", (gid,)) for gid in batch.gap_ids)
            self._collect()
            if time.monotonic() - self._last_commit >= ACK_FLUSH_INTERVAL_S:
                self._try_commit()

    def release(self, batch: SpoolBatch) -> None:
        """Give back an unacked batch (and every batch taken after it): taken again next time, same order."""
        with self._lock:
            c = self._consumer(batch.consumer)
            if batch not in c.outstanding:
                return
            while c.outstanding:
                b = c.outstanding.pop()
                c.gaps_taken.difference_update(b.gap_ids)
                if b is batch:
                    break
            c.taken = max(c.acked, batch.first_seq - 1)
            if c.event is not None:
                c.event.set()

    def release_all(self, consumer: str) -> None:
        """Give back every outstanding batch of a consumer (e.g. after the upstream connection dropped)."""
        with self._lock:
            c = self._consumer(consumer)
            if c.outstanding:
                self.release(c.outstanding[0])

    def _collect(self) -> None:
        """Forget chunks that every consumer has acked (deleted from disk at the next commit)."""
        if not self._chunks:
            return
        floor = min((c.acked for c in self._consumers.values()), default=self._chunks[-1].last)
        n = 0
        while n < len(self._chunks) and self._chunks[n].last <= floor:
            ch = self._chunks[n]
            self._bytes -= ch.nbytes + CHUNK_OVERHEAD_BYTES
            self._samples -= ch.last - ch.first + 1
            self._cache_pop(ch.first)
            n += 1
        if n:
            self._chunks.del_prefix(n)
            self._pending.append(("DELETE FROM chunk WHERE last_seq<=?", (floor,)))

    # -- storage helpers -------------------------------------------------------------------------
    def _commit(self) -> None:
        """Write pending changes and dirty cursors in one transaction."""
        dirty = [c for c in self._consumers.values() if c.dirty]
        if not self._pending and not dirty:
            return
        db = self._db
        try:
            db.execute("BEGIN")
            for sql, params in self._pending:
                db.execute(sql, params)
            for c in dirty:
                db.execute("UPDATE consumer SET acked_seq=? WHERE name=?", (c.acked, c.name))
            db.execute("COMMIT")
        except sqlite3.Error:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        self._pending.clear()
        for c in dirty:
            c.dirty = False
        self._last_commit = time.monotonic()

    def _try_commit(self) -> bool:
        """Commit; on a storage error (disk full, I/O error) log once per outage and return False."""
        try:
            self._commit()
        except sqlite3.Error as exc:
            if not self._storage_failing:
                log.error("spool: cannot write %s: %s; new samples are dropped and counted as gaps until "
                          "it works again", self.directory / DB_NAME, exc)
                self._storage_failing = True
            return False
        if self._storage_failing:
            log.info("spool: writing %s again", self.directory / DB_NAME)
            self._storage_failing = False
        return True

    def _load(self, ch: Chunk) -> list[Sample]:
        data = self._cache.get(ch.first)
        if data is not None:
            return data
        row = self._db.execute("SELECT data FROM chunk WHERE first_seq=?", (ch.first,)).fetchone()
        if row is None:
            raise SpoolError(f"spool chunk {ch.first}..{ch.last} is missing from {self.directory / DB_NAME}")
        data = decode_chunk(row[0])
        self._cache_put(ch.first, data)
        return data

    def _cache_put(self, first: int, data: list[Sample]) -> None:
        if self.spec.cache_samples <= 0:
            return
        self._cache[first] = data
        self._cache_samples += len(data)
        while self._cache_samples > self.spec.cache_samples and len(self._cache) > 1:
            _, old = self._cache.popitem(last=False)
            self._cache_samples -= len(old)

    def _cache_pop(self, first: int) -> None:
        data = self._cache.pop(first, None)
        if data is not None:
            self._cache_samples -= len(data)

    def _consumer(self, name: str) -> _Consumer:
        try:
            return self._consumers[name]
        except KeyError:
            raise SpoolError(f"unknown spool consumer {name!r} (known: {', '.join(self._consumers)})") from None

    def _check_open(self) -> None:
        if self._closed:
            raise SpoolError("the spool is closed")

    # -- status ------------------------------------------------------------------------------------
    def stats(self) -> SpoolStats:
        """Depth, age of the oldest sample, drops and gaps, per-consumer lag and acked totals."""
        with self._lock:
            floor = min((c.acked for c in self._consumers.values()), default=0)
            depth = self._samples
            if self._chunks and floor >= self._chunks[0].first:
                depth -= floor - self._chunks[0].first + 1
            age = (_now_ns() - self._chunks[0].t_ns) / 1e9 if self._chunks else 0.0
            top = self._next_seq - 1
            return SpoolStats(
                depth_samples=max(0, depth), depth_bytes=self._bytes, oldest_age_s=max(0.0, age),
                dropped_total=self._dropped_total, gaps_total=self._gaps_total,
                appended_total=self._appended_total, chunks=len(self._chunks),
                lag_samples={c.name: self._lag(c, top) for c in self._consumers.values()},
                acked_total={c.name: c.acked_total for c in self._consumers.values()},
                appends_total=self._appends, append_seconds_total=self._append_seconds,
            )

    def _lag(self, c: _Consumer, top: int) -> int:
        """Samples stored that this consumer has not acked (chunks dropped mid-spool may inflate it)."""
        if not self._chunks:
            return 0
        return max(0, min(self._samples, top - max(c.acked, self._chunks[0].first - 1)))

    @property
    def consumers(self) -> list[str]:
        """The consumer names, in the order given to open()."""
        return list(self._consumers)

    def close(self) -> None:
        """Write acked cursors and close the database (outstanding batches are simply not acked)."""
        with self._lock:
            if self._closed:
                return
            try:
                self._commit()
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                self._closed = True
                self._db.close()
