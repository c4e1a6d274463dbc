"""A full disk (a real 2 MiB tmpfs, the broker unreachable): the spool reports it and counts the drops, CPU and
memory stay flat, scans go on, drop_oldest keeps the newest samples, and SIGTERM exits 0."""
from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from daemon_support import Proc, eventually, free_port, metric, scrape
from edged.spool.codec import decode_chunk

pytestmark = pytest.mark.slow

COUNTERS = 50


@pytest.fixture
def tiny_disk(tmp_path: Path):
    """tmp_path/state on a 2 MiB tmpfs (needs root or CAP_SYS_ADMIN: skipped otherwise)."""
    state = tmp_path / "state"
    state.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(state)], capture_output=True,
                          text=True, timeout=30)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a 2 MiB tmpfs (needs root): {proc.stderr.strip()}")
    try:
        yield state
    finally:
        subprocess.run(["umount", "-l", str(state)], capture_output=True, timeout=30)


def cpu_and_rss(pid: int) -> tuple[float, int]:
    """(user+system CPU seconds, resident bytes) of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    rss = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
    return cpu, rss


@pytest.mark.parametrize("other_files", [0, 1_500_000], ids=["empty-disk", "disk-nearly-full-at-start"])
def test_full_disk_keeps_cpu_and_memory_flat_drops_the_oldest_and_exits_0(tmp_path: Path, tiny_disk: Path,
                                                                          other_files: int) -> None:
    if other_files:  # someone else's file: the spool starts with 580 kB free and must not let its log take them
        (tiny_disk / "other.bin").write_bytes(b"\0" * other_files)
    dead = socket.socket()  # bound, never listening: connections are refused and nobody else gets the port
    dead.bind(("127.0.0.1", 0))
    port = free_port()
    tags = "".join(f'\n[device.sim1.tag.c{i}]\naddress = "counter:0"\nscan_ms = 10\n' for i in range(COUNTERS))
    cell = tmp_path / "cell.toml"
    cell.write_text(f"""
[cell]
name = "line"
state_dir = "state"

[metrics]
listen = "127.0.0.1:{port}"

[spool]
overflow = "drop_oldest"

[device.sim1]
driver = "sim"
{tags}
[sink.up]
type = "mqtt"
port = {dead.getsockname()[1]}
backoff_initial_s = 0.5
backoff_max_s = 2.0
""")
    url = f"http://127.0.0.1:{port}/metrics"
    d = Proc(["run", "-c", str(cell)], cwd=tmp_path)
    try:
        d.wait_for(r"cell line running", 60, stream="err")
        eventually(lambda: (metric(scrape(url), "edged_spool_dropped_samples_total") or 0) > 0, 120,
                   what="the spool filling the 2 MiB disk")
        time.sleep(1.0)
        first, (cpu0, rss0), t0 = scrape(url), cpu_and_rss(d.p.pid), time.monotonic()
        time.sleep(8.0)
        last, (cpu1, rss1), t1 = scrape(url), cpu_and_rss(d.p.pid), time.monotonic()
    finally:
        code = d.stop(signal.SIGTERM, timeout=60)
        dead.close()
    assert code == 0, d.stderr
    assert "Traceback" not in d.stderr, d.stderr
    assert "nearly full" in d.stderr or "disk of" in d.stderr, d.stderr  # reported clearly
    dropped = metric(last, "edged_spool_dropped_samples_total") - metric(first, "edged_spool_dropped_samples_total")
    assert dropped > 0  # still counting what the full disk costs
    # flat: the full disk costs no busy loop and no growing replay (the bug was 100 % of a core, +22 kB/s)
    cpu_share = (cpu1 - cpu0) / (t1 - t0)
    assert cpu_share < 0.5, f"{cpu_share:.0%} of a core on a full disk"
    assert rss1 - rss0 < 2 * 1024 * 1024, f"RSS grew by {(rss1 - rss0) / 1024:.0f} KiB in {t1 - t0:.0f} s"
    assert metric(last, "edged_scans_total", device="sim1") > metric(first, "edged_scans_total", device="sim1")
    # drop_oldest held: the spool kept the newest samples (up to the last scan), the oldest went
    db = sqlite3.connect(tiny_disk / "spool" / "spool.db")
    try:
        values = [s.value for (data,) in db.execute("SELECT data FROM chunk ORDER BY first_seq")
                  for s in decode_chunk(data) if s.tag == "c0"]
    finally:
        db.close()
    scans = metric(last, "edged_scans_total", device="sim1")
    assert values and values[0] > 0, "the oldest samples should have made room"
    assert values == sorted(values)
    assert values[-1] >= scans - 1, f"newest kept {values[-1]}, but {scans:.0f} scans were done before the stop"
