"""Store and forward through the real daemon (`python -m edged run`) to a real mosquitto.

(a) the broker is away for 30 s while samples flow: every sample arrives, in order per tag;
(b) the daemon is killed with SIGKILL 20 times while samples flow: every sample committed to the
    spool arrives at least once (duplicates are counted and reported);
(c) a tiny spool overflows: the samples reported dropped (gap messages, metric) are exactly the
    samples missing at the subscriber;
(f) TLS with `require_certificate true`: refused with a clear error without a client certificate
    (samples stay spooled), connected with one (the spooled samples arrive first).
The sample source is the sim driver's counter: a gap-free sequence per tag.
"""
from __future__ import annotations

import json
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import time
from collections import defaultdict
from pathlib import Path

import pytest

from daemon_support import Proc, eventually, metric, scrape
from edged.sinks.mqtt import samples_of
from edged.spool.codec import decode_chunk
from mosquitto_support import Broker, Collector, free_port, mosquitto, mosquitto_tls  # noqa: F401

pytestmark = pytest.mark.slow

TAGS = [("sim1", "a"), ("sim1", "b"), ("sim2", "a"), ("sim2", "b")]


def write_cell(tmp_path: Path, broker: Broker, *, counter: str = "counter:0", spool: str = "",
               metrics_port: int | None = None) -> tuple[Path, str]:
    """A cell with two sim devices of two counters each, scanned every 10 ms, and one MQTT sink."""
    port = metrics_port or free_port()
    devices = ""
    for dev in ("sim1", "sim2"):
        devices += f'\n[device.{dev}]\ndriver = "sim"\n'
        for tag in ("a", "b"):
            devices += f'\n[device.{dev}.tag.{tag}]\naddress = "{counter}"\nscan = "fast"\n'
    text = f"""
[cell]
name = "line"
state_dir = "state"

[metrics]
listen = "127.0.0.1:{port}"

[scan.fast]
interval_ms = 10

[spool]
{spool}
{devices}
[sink.up]
type = "mqtt"
port = {broker.port}
client_id = "edged-line-up"
backoff_initial_s = 0.1
backoff_max_s = 1.0
"""
    path = tmp_path / "cell.toml"
    path.write_text(text)
    return path, f"http://127.0.0.1:{port}/metrics"


def received(col: Collector) -> dict[tuple[str, str], list[int]]:
    """Counter values per (device, tag) in arrival order (duplicates included)."""
    out: dict[tuple[str, str], list[int]] = defaultdict(list)
    for m in col.snapshot():
        parts = m.topic.split("/")
        if len(parts) != 2 or parts[0] != "line" or not parts[1].startswith("sim"):
            continue
        body = json.loads(m.payload)
        for s in samples_of(body):
            out[(s["device"], s["tag"])].append(s["value"])
    return out


def gap_total(col: Collector) -> int:
    """Samples reported lost in the gap messages received (a gap sent again counts once, with its last count)."""
    by_id = {}
    for m in col.snapshot():
        if m.topic == "line/gap":
            for g in json.loads(m.payload)["gaps"]:
                by_id[g["id"]] = g["count"]
    return sum(by_id.values())


def spool_contents(state: Path) -> tuple[dict[tuple[str, str], list[int]], dict[tuple[str, str], list[int]], int]:
    """From a stopped daemon's spool: (all stored values, values not yet acked by sink 'up', pending gap count)."""
    db = sqlite3.connect(state / "spool" / "spool.db")
    try:
        row = db.execute("SELECT acked_seq FROM consumer WHERE name='up'").fetchone()
        acked = row[0] if row else 0
        stored: dict[tuple[str, str], list[int]] = defaultdict(list)
        pending: dict[tuple[str, str], list[int]] = defaultdict(list)
        for first, data in db.execute("SELECT first_seq, data FROM chunk ORDER BY first_seq"):
            for i, s in enumerate(decode_chunk(data)):
                stored[(s.device, s.tag)].append(s.value)
                if first + i > acked:
                    pending[(s.device, s.tag)].append(s.value)
        gaps = db.execute("SELECT COALESCE(SUM(count), 0) FROM gap WHERE consumer='up'").fetchone()[0]
    finally:
        db.close()
    return stored, pending, gaps


def spool_depth(state: Path) -> int:
    """Samples stored in the spool file of a running daemon (read-only look at the WAL database)."""
    try:
        db = sqlite3.connect(f"file:{state / 'spool' / 'spool.db'}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error:
        return 0
    try:
        row = db.execute("SELECT COALESCE(SUM(last_seq - first_seq + 1), 0) FROM chunk").fetchone()
        return int(row[0])
    except sqlite3.Error:
        return 0
    finally:
        db.close()


def quiet(col: Collector, still_s: float = 1.0, timeout: float = 30.0) -> None:
    """Wait until the subscriber has received nothing new for still_s (broker deliveries settled)."""
    deadline = time.monotonic() + timeout
    n, since = len(col.snapshot()), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.1)
        m = len(col.snapshot())
        if m != n:
            n, since = m, time.monotonic()
        elif time.monotonic() - since >= still_s:
            return


class explained:
    """Context manager: an AssertionError inside gets the daemon's last log lines appended."""

    def __init__(self, d: Proc) -> None:
        self.d = d

    def __enter__(self) -> None:
        return None

    def __exit__(self, typ, exc, tb) -> None:  # noqa: ANN001
        if isinstance(exc, AssertionError):
            lines = [x for x in self.d.err if "edged.spool:" not in x] + self.d.err[-5:]
            raise AssertionError(f"{exc}\n--- edged log (tail) ---\n" + "\n".join(lines[-60:])) from None


def promtool_check(exposition: str) -> None:
    """`promtool check metrics` accepts the daemon's exposition (skipped without promtool)."""
    promtool = shutil.which("promtool")
    if promtool is None:
        return
    proc = subprocess.run([promtool, "check", "metrics"], input=exposition.encode(), capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stdout.decode() + proc.stderr.decode()
    for name in ("edged_spool_depth_samples", "edged_spool_bytes", "edged_spool_oldest_sample_age_seconds",
                 "edged_spool_dropped_samples_total", "edged_sink_published_samples_total",
                 "edged_sink_connected", "edged_sink_publish_latency_seconds_count"):
        assert name in exposition, name


def start_daemon(cell: Path, tmp_path: Path) -> Proc:
    return Proc(["run", "-c", str(cell)], cwd=tmp_path)


def test_broker_away_30s_every_sample_arrives_in_order(tmp_path: Path, mosquitto: Broker) -> None:
    cell, url = write_cell(tmp_path, mosquitto)
    col = Collector(mosquitto, ["line/#"], client_id="sub-outage").start()
    d = start_daemon(cell, tmp_path)
    with explained(d):
        try:
            eventually(lambda: sum(map(len, received(col).values())) >= 200, 60, what="first samples upstream")
            mosquitto.stop()
            outage_end = time.monotonic() + 30.0
            eventually(lambda: metric(scrape(url), "edged_sink_connected", sink="up") == 0.0, 30,
                       what="the sink noticing the broker is gone")
            while time.monotonic() < outage_end:
                time.sleep(0.5)
            depth = metric(scrape(url), "edged_spool_depth_samples")
            assert depth is not None and depth > 1000, f"acquisition should continue into the spool (depth {depth})"
            mosquitto.start()
            eventually(lambda: (metric(scrape(url), "edged_spool_depth_samples") or 0) < 200, 120,
                       what="the spool draining after the broker came back")
        finally:
            assert d.stop(signal.SIGTERM, timeout=60) == 0, d.stderr
    stored, pending, _ = spool_contents(tmp_path / "state")
    quiet(col)
    got = received(col)
    assert set(got) == set(TAGS)
    duplicates = 0
    for key in TAGS:
        firsts = list(dict.fromkeys(got[key]))
        duplicates += len(got[key]) - len(firsts)
        assert firsts == sorted(firsts), f"{key}: out of order"
        everything = sorted(set(firsts) | set(pending.get(key, [])))
        assert everything == list(range(len(everything))), f"{key}: lost samples"
        assert len(everything) > 1000  # samples kept flowing through the 30 s outage (100/s when not loaded)
    print(f"outage: {sum(len(set(v)) for v in got.values())} samples, {duplicates} duplicate(s)")
    col.stop()


def test_sigkill_20_times_every_committed_sample_arrives(tmp_path: Path, mosquitto: Broker) -> None:
    cell, url = write_cell(tmp_path, mosquitto, counter="counter")
    col = Collector(mosquitto, ["line/#"], client_id="sub-kill").start()
    rng = random.Random(2024)
    origins: list[dict[tuple[str, str], int]] = []  # per run: counter origin per tag
    committed: dict[tuple[int, tuple[str, str]], int] = {}  # (run, tag) -> highest value seen stored or received
    origin_rx = re.compile(r"sim: (sim\d)\.(\w+) counts from (\d+)")

    def note_origins(d: Proc) -> None:
        found = {}
        for line in d.err:
            m = origin_rx.search(line)
            if m:
                found[(m.group(1), m.group(2))] = int(m.group(3))
        origins.append(found)

    def run_of(key: tuple[str, str], value: int) -> int | None:
        best = None
        for r, o in enumerate(origins):
            if key in o and value >= o[key]:
                best = r
        return best

    def note(values: dict[tuple[str, str], list[int]]) -> None:
        for key, vs in values.items():
            for v in vs:
                r = run_of(key, v)
                assert r is not None, f"{key}: value {v} from no known run"
                committed[(r, key)] = max(committed.get((r, key), v), v)

    for _ in range(20):
        d = start_daemon(cell, tmp_path)
        time.sleep(rng.uniform(0.3, 1.5))
        d.stop(signal.SIGKILL, timeout=30)
        note_origins(d)
        if (tmp_path / "state" / "spool" / "spool.db").exists():
            stored, _, _ = spool_contents(tmp_path / "state")
            note(stored)
    d = start_daemon(cell, tmp_path)
    with explained(d):
        try:
            d.wait_for(r"sink up: connected", 60, stream="err")
            note_origins(d)

            def settled() -> bool:
                note(received(col))
                got = {k: set(v) for k, v in received(col).items()}
                for (r, key), top in committed.items():
                    if r == len(origins) - 1:
                        continue  # the final run is still producing
                    if not set(range(origins[r][key], top + 1)) <= got.get(key, set()):
                        return False
                return True

            eventually(settled, 120, interval=0.5, what="every committed sample of the killed runs upstream")
        finally:
            d.stop(signal.SIGTERM, timeout=60)
    got = received(col)
    runs_with_data = {r for (r, _key) in committed if r < len(origins) - 1}
    assert len(runs_with_data) >= 10, f"samples should flow in most runs: {sorted(runs_with_data)}"
    total = sum(len(v) for v in got.values())
    unique = sum(len(set(v)) for v in got.values())
    for key in TAGS:
        firsts = list(dict.fromkeys(got[key]))
        assert firsts == sorted(firsts), f"{key}: out of order across restarts"
    print(f"20 kills: {unique} samples delivered, {total - unique} duplicate(s) counted")
    col.stop()


def test_tiny_spool_overflow_dropped_equals_missing(tmp_path: Path, mosquitto: Broker) -> None:
    cell, url = write_cell(tmp_path, mosquitto, spool="max_bytes = 16384\noverflow = \"drop_oldest\"")
    col = Collector(mosquitto, ["line/#"], client_id="sub-overflow").start()
    d = start_daemon(cell, tmp_path)
    with explained(d):
        try:
            eventually(lambda: sum(map(len, received(col).values())) >= 100, 60, what="first samples upstream")
            mosquitto.stop()
            eventually(lambda: (metric(scrape(url), "edged_spool_dropped_samples_total") or 0) > 500, 60,
                       what="the tiny spool overflowing")
            mosquitto.start()
            eventually(lambda: (metric(scrape(url), "edged_spool_depth_samples") or 0) < 100
                       and metric(scrape(url), "edged_sink_connected", sink="up") == 1.0, 120,
                       what="the spool draining")
            eventually(lambda: gap_total(col) > 0, 60, what="gap messages upstream")
            exposition = scrape(url)
            dropped = metric(exposition, "edged_spool_dropped_samples_total")
            promtool_check(exposition)
        finally:
            assert d.stop(signal.SIGTERM, timeout=60) == 0, d.stderr
    _, pending, pending_gaps = spool_contents(tmp_path / "state")
    quiet(col)
    got = received(col)
    missing = 0
    for key in TAGS:
        seen = set(got[key]) | set(pending.get(key, []))
        missing += len(set(range(max(seen) + 1)) - seen)
        firsts = list(dict.fromkeys(got[key]))
        assert firsts == sorted(firsts), f"{key}: out of order"
    reported = gap_total(col) + pending_gaps
    assert missing > 0
    assert reported == missing, f"gap messages report {reported} lost, the subscriber misses {missing}"
    assert dropped == missing, f"edged_spool_dropped_samples_total {dropped}, missing {missing}"
    col.stop()


def test_tls_through_the_daemon_client_certificate_required(tmp_path: Path, mosquitto_tls: Broker) -> None:
    pki = mosquitto_tls.pki
    assert pki is not None and mosquitto_tls.tls_port
    col = Collector(mosquitto_tls, ["line/#"], client_id="sub-tls").start()

    def cell_text(with_cert: bool) -> str:
        cert = f'tls_cert = "{pki.client_cert}"\ntls_key = "{pki.client_key}"\n' if with_cert else ""
        return f"""
[cell]
name = "line"
state_dir = "state"

[metrics]
enabled = false

[device.sim1]
driver = "sim"

[device.sim1.tag.a]
address = "counter:0"
scan_ms = 50

[sink.up]
type = "mqtt"
port = {mosquitto_tls.tls_port}
tls_ca = "{pki.ca_cert}"
{cert}backoff_initial_s = 0.1
backoff_max_s = 0.5
"""

    cell = tmp_path / "cell.toml"
    cell.write_text(cell_text(False))
    d = start_daemon(cell, tmp_path)
    with explained(d):
        try:
            d.wait_for(r"sink up: .*TLS handshake failed: the broker requires a client certificate", 60, stream="err")
            eventually(lambda: spool_depth(tmp_path / "state") >= 5, 60, what="samples spooled while refused")
        finally:
            assert d.stop(signal.SIGTERM, timeout=60) == 0
    assert not any(m.topic.startswith("line/sim1") for m in col.snapshot())
    spooled = spool_contents(tmp_path / "state")[1][("sim1", "a")]
    assert spooled == list(range(len(spooled))) and len(spooled) >= 5
    cell.write_text(cell_text(True))
    d = start_daemon(cell, tmp_path)
    with explained(d):
        try:
            eventually(lambda: len(received(col).get(("sim1", "a"), [])) >= len(spooled) + 20, 60,
                       what="samples over TLS")
        finally:
            assert d.stop(signal.SIGTERM, timeout=60) == 0
    got = received(col)[("sim1", "a")]
    # the first run's spooled samples arrive first, then the second run's, each counting from 0
    assert got[:len(spooled)] == spooled, got[:50]
    rest = list(dict.fromkeys(got[len(spooled):]))
    assert rest == list(range(len(rest))) and len(rest) >= 20
    col.stop()
