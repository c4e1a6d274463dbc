"""The spool: FIFO per sink, in-order acks, release, recovery, overflow and age drops recorded as gaps."""
from __future__ import annotations

import asyncio
import threading
import tomllib
from pathlib import Path

import pytest

import edged.spool.spool as spool_mod
from edged.schema import Issues, Section
from edged.spool.config import SpoolSpec, parse_spool
from edged.spool.spool import Spool, SpoolError
from edged.tag import Sample


def samples(start: int, n: int, device: str = "press1") -> list[Sample]:
    """n samples with values start..start+n-1 and matching timestamps."""
    return [Sample(1_000_000 + i, device, "counter", i, 0) for i in range(start, start + n)]


def drain(sp: Spool, consumer: str, max_samples: int = 1000) -> list[int]:
    """Take and ack everything available; the values in order."""
    out: list[int] = []
    while (b := sp.take(consumer, max_samples)) is not None:
        out += [s.value for s in b.samples]
        sp.ack(b)
    return out


@pytest.fixture
def spool(tmp_path: Path):
    sp = Spool.open(tmp_path / "spool", SpoolSpec(), ["a"])
    yield sp
    sp.close()


def test_take_returns_oldest_first_across_and_within_chunks(spool: Spool) -> None:
    spool.append(samples(0, 5))
    spool.flush()
    spool.append(samples(5, 5))
    spool.flush()
    b1 = spool.take("a", 3)
    b2 = spool.take("a", 4)
    b3 = spool.take("a", 100)
    assert [s.value for s in b1.samples] == [0, 1, 2]
    assert [s.value for s in b2.samples] == [3, 4, 5, 6]
    assert [s.value for s in b3.samples] == [7, 8, 9]
    assert (b1.first_seq, b1.last_seq, b2.first_seq, b2.last_seq) == (1, 3, 4, 7)
    assert spool.take("a", 10) is None
    for b in (b1, b2, b3):
        spool.ack(b)
    assert spool.stats().depth_samples == 0


def test_acks_must_be_in_order(spool: Spool) -> None:
    spool.append(samples(0, 4))
    spool.flush()
    b1, b2 = spool.take("a", 2), spool.take("a", 2)
    with pytest.raises(SpoolError, match="in order"):
        spool.ack(b2)
    spool.ack(b1)
    spool.ack(b2)
    assert spool.stats().depth_samples == 0


def test_release_gives_back_the_batch_and_later_ones_in_the_same_order(spool: Spool) -> None:
    spool.append(samples(0, 6))
    spool.flush()
    b1, b2, b3 = spool.take("a", 2), spool.take("a", 2), spool.take("a", 2)
    spool.ack(b1)
    spool.release(b2)  # b3 was taken after b2: it comes back too
    spool.ack(b3)  # stale: ignored, must not skip b2's samples
    assert drain(spool, "a") == [2, 3, 4, 5]


def test_each_consumer_has_its_own_cursor_and_data_stays_until_all_acked(tmp_path: Path) -> None:
    sp = Spool.open(tmp_path, SpoolSpec(), ["a", "b"])
    sp.append(samples(0, 10))
    sp.flush()
    assert drain(sp, "a") == list(range(10))
    assert sp.stats().depth_samples == 10
    assert sp.stats().lag_samples == {"a": 0, "b": 10}
    assert drain(sp, "b", 4) == list(range(10))
    st = sp.stats()
    assert (st.depth_samples, st.depth_bytes, st.chunks) == (0, 0, 0)
    sp.close()


def test_reopen_resumes_after_the_last_ack_and_keeps_sequence_numbers(tmp_path: Path) -> None:
    sp = Spool.open(tmp_path, SpoolSpec(), ["a"])
    sp.append(samples(0, 10))
    sp.flush()
    b = sp.take("a", 4)
    sp.ack(b)
    sp.take("a", 3)  # taken, never acked: comes back after restart
    sp.close()
    sp = Spool.open(tmp_path, SpoolSpec(), ["a"])
    assert drain(sp, "a") == list(range(4, 10))
    sp.close()
    sp = Spool.open(tmp_path, SpoolSpec(), ["a"])
    sp.append(samples(10, 2))
    sp.flush()
    b = sp.take("a", 10)
    assert [s.value for s in b.samples] == [10, 11] and b.first_seq == 11
    sp.close()


def test_a_new_sink_gets_the_backlog_and_a_removed_sink_releases_its_data(tmp_path: Path) -> None:
    sp = Spool.open(tmp_path, SpoolSpec(), ["a"])
    sp.append(samples(0, 5))
    sp.flush()
    sp.close()
    sp = Spool.open(tmp_path, SpoolSpec(), ["a", "new"])
    assert drain(sp, "new") == list(range(5))
    sp.close()
    sp = Spool.open(tmp_path, SpoolSpec(), ["new"])  # "a" removed from the config: nothing pins the data
    assert sp.stats().depth_samples == 0
    sp.close()


def test_drop_oldest_counts_every_lost_sample_as_gaps(tmp_path: Path) -> None:
    sp = Spool.open(tmp_path, SpoolSpec(max_bytes=4096), ["a"])
    total = 0
    for i in range(40):
        sp.append(samples(i * 10, 5, "press1") + samples(i * 10 + 5, 5, "press2"))
        sp.flush()
        total += 10
    got: list[int] = []
    gap_count = 0
    gap_by_device: dict[str, int] = {}
    while (b := sp.take("a", 1000)) is not None:
        got += [s.value for s in b.samples]
        for g in b.gaps:
            gap_count += g.count
            gap_by_device[g.device] = gap_by_device.get(g.device, 0) + g.count
        sp.ack(b)
    st = sp.stats()
    assert st.dropped_total > 0
    assert gap_count == st.dropped_total == total - len(got)
    assert gap_by_device["press1"] == gap_by_device["press2"]
    assert got == sorted(got) and got[-1] == 399  # the newest survive, in order
    assert st.depth_bytes <= 4096
    sp.close()


def test_drop_oldest_never_drops_what_a_sink_has_in_flight(tmp_path: Path) -> None:
    sp = Spool.open(tmp_path, SpoolSpec(max_bytes=2048), ["a"])
    sp.append(samples(0, 10))
    sp.flush()
    inflight = sp.take("a", 10)
    for i in range(1, 30):
        sp.append(samples(i * 10, 10))
        sp.flush()
    sp.ack(inflight)  # still valid: its chunk was not dropped
    rest = drain(sp, "a")
    gaps = sp.stats().dropped_total
    assert 10 + len(rest) + gaps == 300
    sp.close()


def test_drop_newest_keeps_the_oldest_and_records_gaps(tmp_path: Path) -> None:
    sp = Spool.open(tmp_path, SpoolSpec(max_bytes=2048, overflow="drop_newest"), ["a"])
    for i in range(30):
        sp.append(samples(i * 10, 10))
        sp.flush()
    b = sp.take("a", 10_000)
    values = [s.value for s in b.samples]
    assert values == list(range(len(values)))
    assert sum(g.count for g in b.gaps) == sp.stats().dropped_total == 300 - len(values)
    sp.ack(b)
    assert sp.take("a", 10) is None  # gaps were acked with the batch
    sp.close()


def test_gaps_survive_restart_until_acked(tmp_path: Path) -> None:
    sp = Spool.open(tmp_path, SpoolSpec(max_bytes=2048, overflow="drop_newest"), ["a"])
    for i in range(30):
        sp.append(samples(i * 10, 10))
        sp.flush()
    dropped = sp.stats().dropped_total
    b = sp.take("a", 5)
    sp.release(b)
    sp.close()
    sp = Spool.open(tmp_path, SpoolSpec(max_bytes=2048, overflow="drop_newest"), ["a"])
    b = sp.take("a", 5)
    assert sum(g.count for g in b.gaps) == dropped
    sp.close()


def test_samples_older_than_max_age_are_dropped_and_reported(tmp_path: Path, monkeypatch) -> None:
    now = [10**18]
    monkeypatch.setattr(spool_mod, "_now_ns", lambda: now[0])
    sp = Spool.open(tmp_path, SpoolSpec(max_age_s=60.0), ["a"])
    sp.append(samples(0, 5))
    sp.flush()
    now[0] += 30 * 10**9
    sp.append(samples(5, 5))
    sp.flush()
    assert sp.stats().oldest_age_s == pytest.approx(30.0)
    now[0] += 31 * 10**9  # the first chunk is 61 s old now
    b = sp.take("a", 100)
    assert [s.value for s in b.samples] == list(range(5, 10))
    assert [(g.device, g.count) for g in b.gaps] == [("press1", 5)]
    sp.close()


def test_unknown_consumer_is_a_clear_error(spool: Spool) -> None:
    with pytest.raises(SpoolError, match="unknown spool consumer 'zz'"):
        spool.take("zz", 1)


def test_values_of_every_json_type_round_trip_through_disk(tmp_path: Path) -> None:
    vals = [True, False, 0, -5, 2**64 - 1, 1.5, "text ü", None]
    sp = Spool.open(tmp_path, SpoolSpec(cache_samples=0), ["a"])
    sp.append([Sample(i, "d", "t", v, i % 3) for i, v in enumerate(vals)])
    sp.flush()
    b = sp.take("a", 100)
    assert [s.value for s in b.samples] == vals
    assert [s.quality for s in b.samples] == [i % 3 for i in range(len(vals))]
    sp.close()


async def test_wait_returns_when_data_arrives(spool: Spool) -> None:
    waiter = asyncio.ensure_future(spool.wait("a", timeout=60))
    await asyncio.sleep(0)
    assert not waiter.done()
    spool.append(samples(0, 1))
    assert spool.take("a", 10) is None  # handed over, not yet committed: sinks see only committed samples
    await asyncio.wait_for(waiter, 30)  # the writer thread's commit wakes the waiting sink
    await asyncio.wait_for(spool.wait("a", timeout=60), 30)  # data available: returns at once
    spool.ack(spool.take("a", 10))
    await spool.wait("a", timeout=0.01)  # nothing to take: returns after the timeout
    assert spool.take("a", 10) is None


def _parse(text: str) -> tuple[SpoolSpec, list[str]]:
    issues = Issues("cell.toml")
    data = tomllib.loads(text)
    spec = parse_spool(Section(data["spool"], "spool", issues))
    return spec, [f"{i.path}: {i.message}" for i in issues.items]


@pytest.mark.parametrize("text, error", [
    ("max_bytes = 10", "spool.max_bytes: expected a value at least 1024, found 10"),
    ("overflow = 'drop_all'", "spool.overflow: expected one of 'drop_oldest', 'drop_newest', found 'drop_all'"),
    ("durability = 'fsync'", "spool.durability: expected one of 'batch', 'os', found 'fsync'"),
    ("max_age_s = '1d'", "spool.max_age_s: expected a number, found string '1d'"),
    ("size = 5", "spool.size: unknown key"),
])
def test_spool_config_errors(text: str, error: str) -> None:
    _, errors = _parse("[spool]\n" + text)
    assert any(e.startswith(error) for e in errors), errors


def test_spool_config_values() -> None:
    spec, errors = _parse("[spool]\nmax_bytes = 2048\nmax_age_s = 3600\noverflow = 'drop_newest'\n"
                          "durability = 'os'\n")
    assert not errors
    assert (spec.max_bytes, spec.max_age_s, spec.overflow, spec.durability) == (2048, 3600.0, "drop_newest", "os")
    assert parse_spool(None) == SpoolSpec()


def test_a_full_disk_drops_and_counts_new_samples_without_raising(tmp_path: Path) -> None:
    sp = Spool.open(tmp_path, SpoolSpec(overflow="drop_newest"), ["a"])
    sp.append(samples(0, 10))
    sp.flush()
    pages = sp._db.execute("PRAGMA page_count").fetchone()[0]
    sp._db.execute(f"PRAGMA max_page_count = {pages + 2}")  # SQLite reports "database or disk is full"
    big = 0
    for i in range(20):
        sp.append(samples(10 + i * 500, 500))  # most of these cannot be written
        sp.flush()
        big += 500
    st = sp.stats()
    assert st.dropped_total > 0
    sp._db.execute("PRAGMA max_page_count = 1073741823")
    sp.append(samples(100_000, 5))
    sp.flush()
    got, gaps = [], 0
    while (b := sp.take("a", 100_000)) is not None:
        got += [s.value for s in b.samples]
        gaps += sum(g.count for g in b.gaps)
        sp.ack(b)
    assert gaps == st.dropped_total == 10 + big + 5 - len(got)
    assert got[:10] == list(range(10)) and got[-5:] == list(range(100_000, 100_005))
    sp.close()


def test_overflow_with_two_sinks_reports_gaps_only_to_the_one_that_lost_data(tmp_path: Path) -> None:
    sp = Spool.open(tmp_path, SpoolSpec(max_bytes=4096), ["fast", "slow"])
    total = 0
    fast: list[int] = []
    for i in range(40):
        sp.append(samples(i * 10, 10))
        sp.flush()
        total += 10
        fast += drain(sp, "fast")  # this sink keeps up
    slow: list[int] = []
    slow_gaps = 0
    while (b := sp.take("slow", 1000)) is not None:
        slow += [s.value for s in b.samples]
        slow_gaps += sum(g.count for g in b.gaps)
        sp.ack(b)
    assert fast == list(range(total))
    assert sp.stats().dropped_total == slow_gaps == total - len(slow) > 0
    assert slow == list(range(total - len(slow), total))  # the newest survive for the slow sink
    sp.close()


def test_release_all_after_a_lost_connection(spool: Spool) -> None:
    spool.append(samples(0, 9))
    spool.flush()
    taken = [spool.take("a", 3) for _ in range(3)]
    spool.ack(taken[0])
    spool.release_all("a")
    assert drain(spool, "a") == list(range(3, 9))


def test_sustained_loss_is_logged_once_not_per_append(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    sp = Spool.open(tmp_path, SpoolSpec(max_bytes=2048, overflow="drop_newest"), ["a"])
    with caplog.at_level("WARNING", logger="edged.spool"):
        for i in range(200):
            sp.append(samples(i * 10, 10))
            sp.flush()
            b = sp.take("a", 1)  # a sink that keeps taking (and so un-merging) gap records
            if b is not None:
                sp.ack(b)
    lost = [r for r in caplog.records if "lost for sink" in r.getMessage()]
    assert len(lost) == 1, [r.getMessage() for r in lost]
    assert sp.stats().dropped_total > 1000
    sp.close()


def test_a_corrupt_spool_file_is_moved_aside_and_acquisition_goes_on(tmp_path: Path,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "spool.db").write_bytes(b"this is not an SQLite database, a disk block went bad" * 100)
    with caplog.at_level("ERROR", logger="edged.spool"):
        sp = Spool.open(tmp_path, SpoolSpec(), ["a"])
    sp.append(samples(0, 3))
    sp.flush()
    assert drain(sp, "a") == [0, 1, 2]
    sp.close()
    aside = [p.name for p in tmp_path.iterdir() if p.name.startswith("spool.db.corrupt-")]
    assert len(aside) == 1
    assert any("is corrupt" in r.getMessage() for r in caplog.records)


def test_a_spool_from_a_newer_format_is_refused_not_overwritten(tmp_path: Path) -> None:
    sp = Spool.open(tmp_path, SpoolSpec(), ["a"])
    sp.append(samples(0, 3))
    sp.flush()
    sp._db.execute("UPDATE meta SET value=99 WHERE key='format'")
    sp.close()
    with pytest.raises(SpoolError, match="spool format 99 is not supported"):
        Spool.open(tmp_path, SpoolSpec(), ["a"])
    assert not [p for p in tmp_path.iterdir() if "corrupt" in p.name]


def test_a_full_disk_with_drop_oldest_frees_the_oldest_chunks_for_new_samples(tmp_path: Path) -> None:
    sp = Spool.open(tmp_path, SpoolSpec(overflow="drop_oldest"), ["a"])
    for i in range(20):
        sp.append(samples(i * 100, 100))
        sp.flush()
    sp._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    pages = sp._db.execute("PRAGMA page_count").fetchone()[0]
    sp._db.execute(f"PRAGMA max_page_count = {pages}")  # the disk is full now
    for i in range(20, 60):
        sp.append(samples(i * 100, 100))
        sp.flush()
    st = sp.stats()
    got, gaps = [], 0
    while (b := sp.take("a", 100_000)) is not None:
        got += [s.value for s in b.samples]
        gaps += sum(g.count for g in b.gaps)
        sp.ack(b)
    assert st.dropped_total > 0 and st.commit_failures_total >= 1
    assert gaps == st.dropped_total == 6000 - len(got)
    assert got[-100:] == list(range(5900, 6000))  # the newest were kept: the oldest made room for them
    assert got == sorted(got) and got[0] >= 100  # the oldest went first
    sp.close()


def test_append_take_ack_and_stats_never_wait_for_a_commit(tmp_path: Path, monkeypatch) -> None:
    sp = Spool.open(tmp_path, SpoolSpec(commit_interval_ms=10), ["a"])
    sp.append(samples(0, 5))
    sp.flush()
    in_commit, release = threading.Event(), threading.Event()
    real = Spool._write

    def stuck(self, db, staged, changes):  # noqa: ANN001, ANN202  (a commit whose fsync takes forever)
        if staged:
            in_commit.set()
            release.wait(60)
        return real(self, db, staged, changes)

    monkeypatch.setattr(Spool, "_write", stuck)
    sp.append(samples(5, 5))
    assert in_commit.wait(30)  # the writer thread is inside that commit now
    sp.append(samples(10, 5))  # acquisition goes on
    b = sp.take("a", 100)
    assert [s.value for s in b.samples] == [0, 1, 2, 3, 4]  # committed samples only
    sp.ack(b)
    st = sp.stats()
    assert (st.uncommitted_samples, st.queue_samples) == (10, 5)  # still stuck: nothing above waited for it
    assert not release.is_set()
    release.set()
    sp.flush()
    assert drain(sp, "a") == list(range(5, 15))
    sp.close()


def test_queue_overflow_drops_become_gaps(tmp_path: Path) -> None:
    sp = Spool.open(tmp_path, SpoolSpec(queue_samples=100, commit_interval_ms=60_000), ["a"])
    for i in range(15):
        sp.append(samples(i * 10, 10))  # no commit is due: the queue holds 100, the rest is dropped
    sp.flush()
    b = sp.take("a", 1000)
    assert [s.value for s in b.samples] == list(range(100))
    assert [(g.device, g.count, g.start_ns, g.end_ns) for g in b.gaps] == [("press1", 50, 1_000_100, 1_000_149)]
    st = sp.stats()
    assert st.queue_dropped_total == st.dropped_total == 50
    sp.close()


def test_commits_are_grouped_not_one_per_append(tmp_path: Path) -> None:
    sp = Spool.open(tmp_path, SpoolSpec(commit_interval_ms=60_000), ["a"])
    before = sp.stats().commits_total
    for i in range(50):
        sp.append(samples(i * 4, 4))
    sp.flush()
    assert sp.stats().commits_total == before + 1  # one transaction (one fsync) for 50 appends
    assert drain(sp, "a") == list(range(200))
    sp.close()
