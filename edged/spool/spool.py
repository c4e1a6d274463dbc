"""The durable spool: an SQLite (WAL) FIFO of sample chunks with one acknowledged cursor per sink.

``append`` hands samples over in memory and returns at once: the spool's writer thread (which owns
the SQLite connection) stores them as chunks with consecutive sequence numbers and commits
(group commit) at most every ``commit_interval_ms``, or sooner when many samples wait.
Samples become visible to the sinks only once their commit (and, with ``durability = "batch"``,
its fsync) is done. Each consumer (sink) takes batches in sequence order, then acks them strictly
in order or releases them to be taken again; a chunk is deleted once every consumer has acked it.
Overflow (bytes, or a full disk), expiry (age) and a full hand-over queue drop samples; every
sample lost that way is counted and becomes a gap record for each consumer that had not yet
acked it, forwarded with that consumer's next batch.

take/ack/release/wait/stats are called from the asyncio thread and never wait for a commit: they
share an in-memory state with the writer under a lock the writer never holds across SQL work.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import os
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
MAX_GAPS_PER_BATCH = 100
LOSS_LOG_INTERVAL_S = 60.0
# counted per chunk against max_bytes besides the encoded samples: its SQLite row and index entry,
# so a spool of many tiny chunks stays bounded in disk and memory too
CHUNK_OVERHEAD_BYTES = 64
# a commit stores the queued samples as chunks of at most this many samples (drop_oldest frees whole chunks)
CHUNK_MAX_SAMPLES = 2000
# the writer commits before the interval is over (at most 4 times per interval) once this many samples wait
# (or half of queue_samples, if less): a cell producing more than this per interval still never fills its queue
EARLY_COMMIT_SAMPLES = 50_000
# Disk space. The write-ahead log is checkpointed into the database every WAL_CHECKPOINT_PAGES pages (fewer
# when the disk has less than 4 times that free, at least WAL_MIN_CHECKPOINT_PAGES), so it stays small and is
# reused. When the free space of the spool's disk falls below what the log may still grow by plus
# DISK_MARGIN_BYTES, the spool stops growing: it holds at most the bytes it holds then plus half of the free
# space beyond the margin, and the overflow policy decides (drop_oldest: new chunks replace the oldest, whose
# database pages SQLite reuses). It grows again once the disk has DISK_REGROW_BYTES more free. A commit that
# fails for a full disk anyway shrinks the limit by FULL_DISK_HEADROOM, truncates the log and is retried once.
WAL_CHECKPOINT_PAGES = 128
WAL_MIN_CHECKPOINT_PAGES = 8
DISK_MARGIN_BYTES = 256 * 1024
DISK_REGROW_BYTES = 1024 * 1024
FULL_DISK_HEADROOM = 0.1
FULL_DISK_RETRY_S = 60.0  # after a failed commit, grow again no sooner than this (free space may be a quota)
COMMIT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
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
    queue_samples: int = 0
    uncommitted_samples: int = 0
    queue_dropped_total: int = 0
    commits_total: int = 0
    commit_failures_total: int = 0
    commit_seconds_total: float = 0.0
    commit_buckets: list[int] = field(default_factory=list)


@dataclass(slots=True, eq=False)
class _GapRow:
    id: int
    consumer: str
    gap: Gap


class _Consumer:
    """Cursor state of one consumer: acked (durable) and taken (in memory) sequence numbers."""

    __slots__ = ("name", "acked", "taken", "handed", "outstanding", "gaps", "gaps_taken", "event", "loop",
                 "acked_total", "dirty")

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
        self.loop: asyncio.AbstractEventLoop | None = None
        self.acked_total = 0
        self.dirty = False


@dataclass(slots=True, eq=False)
class _Staged:
    """A chunk the writer is committing: not visible to consumers until its commit succeeded."""

    chunk: Chunk
    samples: list[Sample]
    blob: bytes


@dataclass(slots=True)
class _Changes:
    """Row changes besides new chunks, collected in memory and written by the next commit (idempotent, so a
    failed commit merges them back and retries them: their size is bounded by the spool's state, not by time)."""

    delete_upto: int = 0
    deleted_chunks: set[int] = field(default_factory=set)
    gaps_written: set[int] = field(default_factory=set)
    gaps_deleted: set[int] = field(default_factory=set)
    cursors: set[str] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(self.delete_upto or self.deleted_chunks or self.gaps_written or self.gaps_deleted
                    or self.cursors)

    def merge(self, other: "_Changes") -> None:
        """Take back the changes of a failed commit (newer changes to the same rows win)."""
        self.delete_upto = max(self.delete_upto, other.delete_upto)
        self.deleted_chunks |= other.deleted_chunks
        self.gaps_deleted |= other.gaps_deleted
        self.gaps_written |= other.gaps_written - self.gaps_deleted
        self.cursors |= other.cursors


class SpoolError(Exception):
    """The spool cannot be opened or used (corrupt file, unknown consumer, misuse)."""


class Spool:
    """Durable FIFO between acquisition and sinks; see the module docstring."""

    def __init__(self, directory: Path, spec: SpoolSpec, db: sqlite3.Connection) -> None:
        self.directory = directory
        self.spec = spec
        self._db = db  # the writer thread's connection (used by the opening thread before the writer starts)
        self._reader: sqlite3.Connection | None = None  # reads of committed chunks, under the lock
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._chunks = ChunkIndex()
        self._cache: collections.OrderedDict[int, list[Sample]] = collections.OrderedDict()
        self._cache_samples = 0
        self._consumers: dict[str, _Consumer] = {}
        self._gap_rows: dict[int, _GapRow] = {}
        self._next_seq = 1
        self._next_gap_id = 1
        self._bytes = 0  # visible chunks plus the chunks being committed
        self._samples = 0
        self._changes = _Changes()
        self._inbox: list[list[Sample]] = []  # the appended batches, in order
        self._inbox_n = 0  # samples in _inbox
        self._inflight = 0  # samples taken from the inbox by the writer, not yet committed or dropped
        self._appended_gen = 0
        self._done_gen = 0
        self._flush_wanted = 0
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._last_commit = time.monotonic()  # when the last commit started
        self._full_limit: int | None = None  # bytes the disk has room for (None: max_bytes applies)
        self._full_free = 0  # free disk bytes when _full_limit was last lowered
        self._full_failed_at = -FULL_DISK_RETRY_S  # monotonic time of the last commit that failed for a full disk
        self._page_size = 4096
        self._checkpoint_pages = WAL_CHECKPOINT_PAGES
        self._dropped_total = 0
        self._queue_dropped = 0
        self._gaps_total = 0
        self._appended_total = 0
        self._closed = False
        self._storage_failing = False
        self._appends = 0
        self._append_seconds = 0.0
        self._commits = 0
        self._commit_failures = 0
        self._commit_seconds = 0.0
        self._commit_buckets = [0] * (len(COMMIT_BUCKETS) + 1)
        self._loss_logged_at: dict[str, float] = {}
        self._loss_unlogged: dict[str, int] = {}

    # -- opening and recovery -------------------------------------------------------------
    @classmethod
    def open(cls, directory: Path, spec: SpoolSpec, consumers: list[str]) -> "Spool":
        """Create the spool in ``directory`` or recover it (after a crash or kill -9) for these consumers,
        and start its writer thread.

        A file SQLite reports as corrupt is moved aside (``spool.db.corrupt-<time>``, kept for
        inspection) and a new spool is started, so a damaged disk block cannot stop acquisition.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / DB_NAME
        try:
            spool = cls._open(directory, path, spec, consumers)
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
                spool = cls._open(directory, path, spec, consumers)
            except sqlite3.DatabaseError as exc2:
                raise SpoolError(f"{path}: cannot open the spool: {exc2}") from exc2
        spool._thread = threading.Thread(target=spool._writer, name="edged-spool-writer", daemon=True)
        spool._thread.start()
        return spool

    @classmethod
    def _open(cls, directory: Path, path: Path, spec: SpoolSpec, consumers: list[str]) -> "Spool":
        db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        reader: sqlite3.Connection | None = None
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={'FULL' if spec.durability == 'batch' else 'NORMAL'}")
            db.execute("PRAGMA journal_size_limit=4194304")
            db.execute(f"PRAGMA wal_autocheckpoint={WAL_CHECKPOINT_PAGES}")
            db.executescript(_SCHEMA)
            row = db.execute("SELECT value FROM meta WHERE key='format'").fetchone()
            if row is None:
                db.execute("INSERT INTO meta VALUES('format', ?)", (FORMAT_VERSION,))
            elif row[0] != FORMAT_VERSION:
                raise SpoolError(f"{path}: spool format {row[0]} is not supported by this edged (it reads format "
                                 f"{FORMAT_VERSION}); move the file aside to start an empty spool")
            spool = cls(directory, spec, db)
            spool._page_size = db.execute("PRAGMA page_size").fetchone()[0]
            spool._recover(consumers)
            reader = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
            reader.execute("PRAGMA query_only=1")
            spool._reader = reader
        except BaseException:
            if reader is not None:
                reader.close()
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
                row = _GapRow(gid, consumer, Gap(start, end, device, count, gid))
                self._consumers[consumer].gaps.append(row)
                self._gap_rows[gid] = row
            self._next_gap_id = max(self._next_gap_id, gid + 1)
        db.execute("COMMIT")
        self._collect()
        changes, self._changes = self._changes, _Changes()
        self._write(db, [], changes)
        if self._samples:
            log.info("spool: recovered %d sample(s) in %d chunk(s) from %s", self._samples, len(self._chunks),
                     self.directory)

    # -- appending (any thread; never waits for the disk) -------------------------------------
    def append(self, samples: Sequence[Sample]) -> None:
        """Hand samples to the writer thread and return at once; they are committed within commit_interval_ms
        (and only then visible to sinks). If the hand-over queue is full they are dropped and become gaps."""
        if not samples:
            return
        t0 = time.perf_counter()
        with self._lock:
            self._check_open()
            n = len(samples)
            waiting = self._inbox_n
            if waiting + n > self.spec.queue_samples:
                self._queue_dropped += n
                self._drop_new(samples if isinstance(samples, list) else list(samples), "queue")
            else:
                self._inbox.append(samples if isinstance(samples, list) else list(samples))
                self._inbox_n += n
                self._appended_gen += 1
                if waiting == 0 or waiting + n >= self._early_commit_samples() > waiting:
                    self._cond.notify_all()
            self._appends += 1
            self._append_seconds += time.perf_counter() - t0

    def flush(self, timeout: float | None = None) -> bool:
        """Block until everything appended before this call is committed (or dropped and counted); for tests,
        tools and shutdown, never for the asyncio thread of a running daemon. False on timeout."""
        with self._lock:
            self._check_open()
            target = self._appended_gen
            self._flush_wanted = max(self._flush_wanted, target)
            self._cond.notify_all()
            return self._cond.wait_for(lambda: self._done_gen >= target or self._closed, timeout)

    def _early_commit_samples(self) -> int:
        return max(1, min(EARLY_COMMIT_SAMPLES, self.spec.queue_samples // 2))

    # -- the writer thread ------------------------------------------------------------------------
    def _writer(self) -> None:
        """Commit queued samples and changes at most every commit_interval_ms (sooner when the queue fills)."""
        interval = self.spec.commit_interval_ms / 1000.0
        while True:
            with self._lock:
                while True:
                    if self._stopping:
                        break
                    now = time.monotonic()
                    due = self._last_commit + interval
                    if self._flush_wanted > self._done_gen:
                        due = now  # flush() (tests, tools, shutdown): not driven by the scan rate
                    elif self._inbox_n >= self._early_commit_samples():
                        due = self._last_commit + interval / 4  # still bounded: at most 4 per interval
                    work = bool(self._inbox) or bool(self._changes) or any(
                        c.dirty for c in self._consumers.values()) or self._flush_wanted > self._done_gen
                    if work and now >= due:
                        break
                    self._cond.wait(max(0.0, due - now) if work else None)
                stopping = self._stopping
            try:
                self._cycle()
            except Exception:  # a bug: never let the writer die silently (acquisition would queue forever)
                log.exception("spool: writer cycle failed")
                with self._lock:
                    self._inflight = 0
                    self._cond.notify_all()
                time.sleep(interval)
            if stopping:
                with self._lock:
                    if not self._inbox:
                        return

    def _cycle(self) -> None:
        """One group commit: the queued samples as new chunks, plus pending deletions, gaps and cursors."""
        with self._lock:
            self._last_commit = time.monotonic()  # commits start at most every interval (start to start)
            inbox, self._inbox = self._inbox, []
            gen = self._appended_gen
            self._inflight, self._inbox_n = self._inbox_n, 0
        blobs = [(p, encode_chunk(p), parts) for p, parts in _group(inbox)]  # CPU work outside the lock
        now = _now_ns()
        with self._lock:
            staged = self._stage(blobs, now)
            changes = self._take_changes()
        ok, exc = self._commit(staged, changes)
        if not ok and self._is_full(exc) and self.spec.overflow == "drop_oldest" and staged:
            # the disk is full: hold less from now on, free the space of the oldest chunks, retry once
            self._checkpoint_quietly()
            with self._lock:
                self._changes.merge(changes)
                self._unstage(staged)
                held = self._bytes if self._full_limit is None else min(self._bytes, self._full_limit)
                self._full_failed_at = time.monotonic()
                self._lower_limit(int(held * (1 - FULL_DISK_HEADROOM)), None)
                staged = self._stage([(st.samples, st.blob, [st.samples]) for st in staged], now)
                changes = self._take_changes()
            ok, exc = self._commit(staged, changes)
        with self._lock:
            if ok:
                self._publish(staged)
                self._storage_recovered()
            else:
                self._changes.merge(changes)
                self._unstage(staged)
                for st in staged:
                    self._drop_new(st.samples, "storage")
                self._storage_failed(exc)
            self._inflight = 0
            self._done_gen = max(self._done_gen, gen)
            self._cond.notify_all()
        if not ok:
            self._checkpoint_quietly()

    def _stage(self, blobs: list[tuple[list[Sample], bytes, list[list[Sample]]]], now: int) -> list[_Staged]:
        """Expire, make room per the overflow policy and number the new chunks (under the lock).

        A chunk that does not fit is tried again as the appends it was made of, so the policy drops
        what it would have dropped without group commit (whole appends, not whole commits)."""
        self._expire(now)
        self._check_disk()
        staged: list[_Staged] = []
        for samples, blob, parts in blobs:
            if self._make_room(len(blob) + CHUNK_OVERHEAD_BYTES):
                self._stage_one(staged, samples, blob, now)
                continue
            if len(parts) == 1:
                self._drop_new(samples, "full")
                continue
            for part in parts:
                part_blob = encode_chunk(part)
                if self._make_room(len(part_blob) + CHUNK_OVERHEAD_BYTES):
                    self._stage_one(staged, part, part_blob, now)
                else:
                    self._drop_new(part, "full")
        return staged

    def _check_disk(self) -> None:
        """Stop growing when the disk is nearly full; grow again when space came back (see DISK_MARGIN_BYTES)."""
        try:
            st = os.statvfs(self.directory)
            free = st.f_bavail * st.f_frsize
            wal = os.stat(self.directory / f"{DB_NAME}-wal").st_size
        except FileNotFoundError:
            wal = 0
        except OSError:
            return
        pages = max(WAL_MIN_CHECKPOINT_PAGES, min(WAL_CHECKPOINT_PAGES, free // 4 // self._page_size))
        if pages != self._checkpoint_pages:  # a small log on a small disk: it must never take the last space
            try:
                self._db.execute(f"PRAGMA wal_autocheckpoint={pages}").fetchall()
                self._checkpoint_pages = pages
            except sqlite3.Error:
                pass
        reserve = max(0, 2 * self._checkpoint_pages * self._page_size - wal) + DISK_MARGIN_BYTES
        if free < reserve:
            if self._full_limit is None:  # hold what is stored, plus half of what is free beyond the margin
                self._lower_limit(self._bytes + max(0, free - DISK_MARGIN_BYTES) // 2, free)
            elif free < self._full_free - DISK_MARGIN_BYTES // 2:  # still shrinking (the log, other files)
                self._lower_limit(int(min(self._bytes, self._full_limit) * (1 - FULL_DISK_HEADROOM)), free)
        elif (self._full_limit is not None and free >= reserve + DISK_REGROW_BYTES
              and time.monotonic() - self._full_failed_at >= FULL_DISK_RETRY_S):
            log.info("spool: %s has free space again (%d bytes); the spool may grow to max_bytes", self.directory,
                     free)
            self._full_limit = None

    def _lower_limit(self, limit: int, free: int | None) -> None:
        """Hold at most limit bytes (free: the free disk bytes measured, None after a failed commit)."""
        if self._full_limit is None:
            log.warning("spool: the disk of %s is %s: the spool holds at most %d bytes until there is room "
                        "again; %s", self.directory, "full" if free is None else f"nearly full ({free} bytes free)",
                        limit, "new samples replace the oldest" if self.spec.overflow == "drop_oldest"
                        else "new samples are dropped")
        self._full_limit = limit
        if free is not None:
            self._full_free = free

    def _stage_one(self, staged: list[_Staged], samples: list[Sample], blob: bytes, now: int) -> None:
        first = self._next_seq
        staged.append(_Staged(Chunk(first, first + len(samples) - 1, now, len(blob)), samples, blob))
        self._next_seq = first + len(samples)
        self._bytes += len(blob) + CHUNK_OVERHEAD_BYTES

    def _unstage(self, staged: list[_Staged]) -> None:
        """Forget staged chunks whose commit failed (their sequence numbers are given out again)."""
        for st in staged:
            self._bytes -= st.chunk.nbytes + CHUNK_OVERHEAD_BYTES
        if staged:
            self._next_seq = min(self._next_seq, staged[0].chunk.first)

    def _publish(self, staged: list[_Staged]) -> None:
        """Make committed chunks visible to the consumers and wake their waits (under the lock)."""
        for st in staged:
            self._chunks.append(st.chunk)
            self._samples += len(st.samples)
            self._appended_total += len(st.samples)
            self._cache_put(st.chunk.first, st.samples)
        if staged:
            self._wake_all()

    def _wake_all(self) -> None:
        for c in self._consumers.values():
            if c.event is not None and c.loop is not None:
                try:
                    c.loop.call_soon_threadsafe(c.event.set)
                except RuntimeError:  # the loop is closed: nobody waits any more
                    c.event = None

    def _take_changes(self) -> _Changes:
        changes, self._changes = self._changes, _Changes()
        for c in self._consumers.values():
            if c.dirty:
                changes.cursors.add(c.name)
                c.dirty = False
        return changes

    def _commit(self, staged: list[_Staged], changes: _Changes) -> tuple[bool, BaseException | None]:
        """Write staged chunks and changes in one transaction (outside the lock); time it."""
        if not staged and not changes:
            return True, None
        t0 = time.perf_counter()
        try:
            self._write(self._db, staged, changes)
            ok, exc = True, None
        except sqlite3.Error as e:
            ok, exc = False, e
        dt = time.perf_counter() - t0
        with self._lock:
            self._commits += 1
            if not ok:
                self._commit_failures += 1
            self._commit_seconds += dt
            i = 0
            while i < len(COMMIT_BUCKETS) and dt > COMMIT_BUCKETS[i]:
                i += 1
            self._commit_buckets[i] += 1
        return ok, exc

    def _write(self, db: sqlite3.Connection, staged: list[_Staged], changes: _Changes) -> None:
        """The SQL of one commit; the row values of gaps and cursors are read now (the newest state)."""
        with self._lock:
            gap_rows = [(r.id, r.consumer, r.gap.device, r.gap.start_ns, r.gap.end_ns, r.gap.count)
                        for gid in changes.gaps_written if (r := self._gap_rows.get(gid)) is not None]
            cursors = [(self._consumers[n].acked, n) for n in changes.cursors if n in self._consumers]
        try:
            db.execute("BEGIN")
            if changes.delete_upto:
                db.execute("DELETE FROM chunk WHERE last_seq<=?", (changes.delete_upto,))
            if changes.deleted_chunks:
                db.executemany("DELETE FROM chunk WHERE first_seq=?", [(f,) for f in changes.deleted_chunks])
            if changes.gaps_deleted:
                db.executemany("DELETE FROM gap WHERE id=?", [(g,) for g in changes.gaps_deleted])
            if gap_rows:
                db.executemany("INSERT OR REPLACE INTO gap VALUES(?, ?, ?, ?, ?, ?)", gap_rows)
            if cursors:
                db.executemany("UPDATE consumer SET acked_seq=? WHERE name=?", cursors)
            if staged:
                db.executemany("INSERT INTO chunk VALUES(?, ?, ?, ?, ?)",
                               [(st.chunk.first, st.chunk.last, st.chunk.t_ns, st.chunk.nbytes, st.blob)
                                for st in staged])
            db.execute("COMMIT")
        except sqlite3.Error:
            if db.in_transaction:
                try:
                    db.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
            raise

    @staticmethod
    def _is_full(exc: BaseException | None) -> bool:
        return getattr(exc, "sqlite_errorname", "") == "SQLITE_FULL" or "full" in str(exc)

    def _checkpoint_quietly(self) -> None:
        """After a failed commit: copy the write-ahead log into the database and give its space back."""
        try:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        except sqlite3.Error:
            pass

    def _storage_failed(self, exc: BaseException | None) -> None:
        if not self._storage_failing:
            log.error("spool: cannot write %s: %s; new samples are dropped and counted as gaps until "
                      "it works again", self.directory / DB_NAME, exc)
            self._storage_failing = True

    def _storage_recovered(self) -> None:
        if self._storage_failing:
            log.info("spool: writing %s again", self.directory / DB_NAME)
            self._storage_failing = False

    # -- bounds and loss ------------------------------------------------------------------------
    def _limit(self) -> int:
        if self._full_limit is None:
            return self.spec.max_bytes
        return min(self.spec.max_bytes, self._full_limit)

    def _make_room(self, nbytes: int) -> bool:
        """Drop chunks per the overflow policy until nbytes fit; False when the new data must go instead."""
        limit = self._limit()
        if nbytes > limit:
            return False
        while self._bytes + nbytes > limit:
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
        self._changes.deleted_chunks.add(ch.first)
        log.debug("spool: dropped chunk %d..%d (%s)", ch.first, ch.last, why)

    def _drop_new(self, samples: list[Sample], why: str) -> None:
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
            else:
                row = _GapRow(self._next_gap_id, c.name, Gap(start, end, device, count, self._next_gap_id))
                self._next_gap_id += 1
                c.gaps.append(row)
                self._gap_rows[row.id] = row
                self._gaps_total += 1
            self._changes.gaps_written.add(row.id)
        self._report_loss(c, sum(g[2] for g in per_device.values()))
        if c.event is not None and c.loop is not None:
            try:
                c.loop.call_soon_threadsafe(c.event.set)
            except RuntimeError:
                c.event = None

    def _report_loss(self, c: _Consumer, count: int) -> None:
        """Log lost samples at once, then at most every LOSS_LOG_INTERVAL_S per sink (no log floods)."""
        now = time.monotonic()
        pending = self._loss_unlogged.get(c.name, 0) + count
        if now - self._loss_logged_at.get(c.name, -LOSS_LOG_INTERVAL_S) >= LOSS_LOG_INTERVAL_S:
            log.warning("spool: %d sample(s) lost for sink %r (spool full, too old, or the disk too slow); counted "
                        "in edged_spool_dropped_samples_total and reported upstream as gaps", pending, c.name)
            self._loss_logged_at[c.name] = now
            pending = 0
        self._loss_unlogged[c.name] = pending

    # -- consuming (the asyncio thread; only committed chunks) ------------------------------------
    def take(self, consumer: str, max_samples: int) -> SpoolBatch | None:
        """The oldest committed samples this consumer has neither acked nor taken (up to max_samples), with
        pending gaps."""
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
        """Return when data may be available for this consumer (a commit made samples visible, or a gap was
        recorded), or after timeout seconds."""
        c = self._consumer(consumer)
        if self._available(c):
            return
        loop = asyncio.get_running_loop()
        with self._lock:
            if c.event is None or c.loop is not loop:
                c.event = asyncio.Event()
                c.loop = loop
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
        with self._lock:
            return (bool(self._chunks) and self._chunks[-1].last > c.taken) or len(c.gaps_taken) < len(c.gaps)

    def ack(self, batch: SpoolBatch) -> None:
        """Acknowledge a delivered batch: it must be this consumer's oldest outstanding batch (written to disk
        with the next commit)."""
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
                for gid in batch.gap_ids:
                    self._gap_rows.pop(gid, None)
                    self._changes.gaps_written.discard(gid)
                    self._changes.gaps_deleted.add(gid)
            self._collect()

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
            self._changes.delete_upto = max(self._changes.delete_upto, floor)

    # -- storage helpers -------------------------------------------------------------------------
    def _load(self, ch: Chunk) -> list[Sample]:
        """A committed chunk's samples: from the cache, else read through the reader connection (WAL readers
        never wait for the writer's commit)."""
        data = self._cache.get(ch.first)
        if data is not None:
            return data
        db = self._reader if self._reader is not None else self._db
        rows = db.execute("SELECT data FROM chunk WHERE first_seq=?", (ch.first,)).fetchall()
        if not rows:
            raise SpoolError(f"spool chunk {ch.first}..{ch.last} is missing from {self.directory / DB_NAME}")
        data = decode_chunk(rows[0][0])
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
        if self._closed or self._stopping:
            raise SpoolError("the spool is closed")

    # -- status ------------------------------------------------------------------------------------
    def stats(self) -> SpoolStats:
        """Depth, age of the oldest sample, drops and gaps, per-consumer lag and acked totals, writer figures."""
        with self._lock:
            floor = min((c.acked for c in self._consumers.values()), default=0)
            depth = self._samples
            if self._chunks and floor >= self._chunks[0].first:
                depth -= floor - self._chunks[0].first + 1
            age = (_now_ns() - self._chunks[0].t_ns) / 1e9 if self._chunks else 0.0
            top = self._chunks[-1].last if self._chunks else 0
            # samples handed over but not yet committed are in the spool too (not yet acked by any sink)
            waiting = self._inbox_n + self._inflight
            return SpoolStats(
                depth_samples=max(0, depth) + waiting, depth_bytes=self._bytes, oldest_age_s=max(0.0, age),
                dropped_total=self._dropped_total, gaps_total=self._gaps_total,
                appended_total=self._appended_total, chunks=len(self._chunks),
                lag_samples={c.name: self._lag(c, top) + waiting for c in self._consumers.values()},
                acked_total={c.name: c.acked_total for c in self._consumers.values()},
                appends_total=self._appends, append_seconds_total=self._append_seconds,
                queue_samples=self._inbox_n, uncommitted_samples=self._inbox_n + self._inflight,
                queue_dropped_total=self._queue_dropped, commits_total=self._commits,
                commit_failures_total=self._commit_failures, commit_seconds_total=self._commit_seconds,
                commit_buckets=list(self._commit_buckets),
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
        """Commit what is queued and the acked cursors, stop the writer and close the database (outstanding
        batches are simply not acked). Never raises for a storage error (a full disk): it is logged."""
        with self._lock:
            if self._closed or self._stopping:
                return
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join()
        with self._lock:
            try:
                if self._changes or any(c.dirty for c in self._consumers.values()):
                    self._cycle()
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            except sqlite3.Error as exc:
                log.warning("spool: closing %s: %s (what was committed is kept)", self.directory / DB_NAME, exc)
            finally:
                self._closed = True
                self._cond.notify_all()
                if self._reader is not None:
                    self._reader.close()
                self._db.close()


def _group(batches: list[list[Sample]]) -> list[tuple[list[Sample], list[list[Sample]]]]:
    """Pack appended batches into chunks of at most CHUNK_MAX_SAMPLES samples: (samples, the batches in it)."""
    out: list[tuple[list[Sample], list[list[Sample]]]] = []
    cur: list[Sample] = []
    parts: list[list[Sample]] = []
    for batch in batches:
        for i in range(0, len(batch), CHUNK_MAX_SAMPLES):
            piece = batch[i:i + CHUNK_MAX_SAMPLES] if len(batch) > CHUNK_MAX_SAMPLES else batch
            if cur and len(cur) + len(piece) > CHUNK_MAX_SAMPLES:
                out.append((cur, parts))
                cur, parts = [], []
            if cur:
                cur.extend(piece)
            else:
                cur = list(piece)  # a copy: the appended list itself stays as it was (it is one of the parts)
            parts.append(piece)
    if cur:
        out.append((cur, parts))
    return out
