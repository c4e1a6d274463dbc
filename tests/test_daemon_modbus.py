"""The daemon and the CLI as real subprocesses against Modbus devices served by `edged simulate` (pymodbus servers)."""
from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from daemon_support import Proc, eventually, free_port, metric, scrape

CELL = """
[cell]
name = "t"
state_dir = "{state}"
heartbeat_s = 0

[metrics]
listen = "127.0.0.1:{mport}"

[scan.fast]
interval_ms = 100

[device.a]
driver = "modbus"
host = "127.0.0.1"
port = {pa}
timeout_s = 0.3
backoff_initial_s = 0.2
backoff_max_s = 1.0

[device.a.tag.speed]
address = "hr:0"
type = "float32"
scan = "fast"

[device.a.tag.count]
address = "40011"
type = "uint32"
order = "CDAB"
scan = "fast"

[device.a.tag.name]
address = "hr:20"
type = "string"
length = 6

[device.a.tag.run]
address = "co:3"
type = "bool"
access = "write"

[device.a.tag.flag]
address = "hr:30.15"
type = "bool"

[device.b]
driver = "modbus"
host = "127.0.0.1"
port = {pb}
timeout_s = 0.3

[device.b.tag.temp]
address = "ir:5"
type = "int16"
scale = 0.1
unit = "degC"
scan = "fast"
"""


def wait_port(port: int, timeout: float = 20.0) -> None:
    """Wait until something listens on a loopback port."""
    def check() -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0
    eventually(check, timeout, what=f"port {port}")


@pytest.fixture
def cell(tmp_path: Path) -> tuple[Path, dict[str, int]]:
    ports = {"pa": free_port(), "pb": free_port(), "mport": free_port()}
    path = tmp_path / "cell.toml"
    path.write_text(CELL.format(state=tmp_path / "state", **ports))
    return path, ports


def simulate(path: Path, device: str, cwd: Path, *sets: str) -> Proc:
    args = ["simulate", "-c", str(path), "--device", device]
    for s in sets:
        args += ["--set", s]
    p = Proc(args, cwd)
    p.wait_for("serving")
    return p


def test_read_json_prints_every_tag_with_value_quality_timestamp(cell, tmp_path: Path) -> None:
    path, ports = cell
    sa = simulate(path, "a", tmp_path, "a.speed=1234.5", "a.count=4000000000", 'a.name="PRESS1"', "a.run=true",
                  "a.flag=true")
    sb = simulate(path, "b", tmp_path, "b.temp=-12.3")
    try:
        r = Proc(["read", "-c", str(path), "--json"], tmp_path)
        assert r.wait() == 0, r.stderr
        rows = {row["tag"]: row for row in json.loads(r.stdout)}
        assert set(rows) == {"a.speed", "a.count", "a.name", "a.run", "a.flag", "b.temp"}
        assert rows["a.speed"]["value"] == pytest.approx(1234.5)
        assert rows["a.count"]["value"] == 4000000000
        assert rows["a.name"]["value"] == "PRESS1"
        assert rows["a.run"]["value"] is True and rows["a.flag"]["value"] is True
        assert rows["b.temp"]["value"] == pytest.approx(-12.3)
        assert rows["b.temp"]["unit"] == "degC"
        for row in rows.values():
            assert row["quality"] == "good"
            assert row["ts"].endswith("Z") and row["ts"][:4].isdigit()
        # a selection of tags, and the write command round trip
        w = Proc(["write", "-c", str(path), "a.run", "false"], tmp_path)
        assert w.wait() == 0, w.stderr
        r2 = Proc(["read", "-c", str(path), "--json", "a.run"], tmp_path)
        r2.wait()
        assert [(x["tag"], x["value"]) for x in json.loads(r2.stdout)] == [("a.run", False)]
        # read-only tags are refused with exit 2 and nothing is written
        w2 = Proc(["write", "-c", str(path), "a.speed", "1"], tmp_path)
        assert w2.wait() == 2 and "read-only" in w2.stderr
    finally:
        sa.stop()
        sb.stop()


def test_read_reports_unreachable_device_as_bad_and_exit_1(cell, tmp_path: Path) -> None:
    path, ports = cell
    sb = simulate(path, "b", tmp_path)
    try:
        r = Proc(["read", "-c", str(path), "--json"], tmp_path)
        assert r.wait() == 1
        rows = {row["tag"]: row for row in json.loads(r.stdout)}
        assert rows["a.speed"]["quality"] == "bad" and rows["a.speed"]["value"] is None
        assert rows["b.temp"]["quality"] == "good"
        assert "device a" in r.stderr
        assert "Traceback" not in r.stderr
    finally:
        sb.stop()


def test_device_down_and_back_while_other_keeps_scanning(cell, tmp_path: Path) -> None:
    path, ports = cell
    sa = simulate(path, "a", tmp_path)
    sb = simulate(path, "b", tmp_path)
    d = Proc(["run", "-c", str(path)], tmp_path)
    url = f"http://127.0.0.1:{ports['mport']}/metrics"
    try:
        eventually(lambda: metric(scrape(url), "edged_device_up", device="a") == 1.0, 30, what="a up")
        eventually(lambda: metric(scrape(url), "edged_device_up", device="b") == 1.0, 30, what="b up")
        eventually(lambda: (metric(scrape(url), "edged_scans_total", device="a", scan="fast") or 0) >= 2, 30,
                   what="a scanned")
        sa.stop()
        eventually(lambda: metric(scrape(url), "edged_device_up", device="a") == 0.0, 30, what="a down")
        text = scrape(url)
        b_scans_before = metric(text, "edged_scans_total", device="b", scan="fast")
        b_overruns_before = metric(text, "edged_scan_overruns_total", device="b", scan="fast")
        # while a is down (and being retried) b keeps scanning; progress, not a rate: no timing assertion
        eventually(lambda: metric(scrape(url), "edged_scans_total", device="b", scan="fast") >= b_scans_before + 20,
                   60, what="b scanning while a is down")
        text = scrape(url)
        # ... and keeps its scan rate by the engine's own deadline accounting: a's timeouts and reconnects
        # never make b miss its 100 ms deadlines (a generous bound, for a busy machine)
        b_scans = metric(text, "edged_scans_total", device="b", scan="fast") - b_scans_before
        b_overruns = metric(text, "edged_scan_overruns_total", device="b", scan="fast") - b_overruns_before
        assert b_overruns <= max(2, b_scans // 10), (b_overruns, b_scans)
        assert metric(text, "edged_device_up", device="b") == 1.0
        assert metric(text, "edged_device_up", device="a") == 0.0
        sa = simulate(path, "a", tmp_path, "a.speed=7.5")
        eventually(lambda: metric(scrape(url), "edged_device_up", device="a") == 1.0, 30, what="a back up")
        scans_up = metric(scrape(url), "edged_scans_total", device="a", scan="fast")
        eventually(lambda: metric(scrape(url), "edged_scans_total", device="a", scan="fast") >= scans_up + 2, 30,
                   what="a scanned again")
        text = scrape(url)
        assert metric(text, "edged_device_reconnects_total", device="a") >= 1
        assert metric(text, "edged_device_errors_total", device="a", kind="connection") or \
            metric(text, "edged_device_errors_total", device="a", kind="timeout")
    finally:
        code = d.stop()
        sa.stop()
        sb.stop()
    assert code == 0, d.stderr
    log = d.stderr
    # state changes are logged once per change, not per failed poll
    assert log.count("device a: up -> down") + log.count("device a: degraded -> down") == 1, log
    assert log.count("device a: down -> up") == 1, log
    assert "device b: up -> down" not in log
    assert "Traceback" not in log
    # data reached the local sink, including the bad-quality samples of the outage
    lines = [json.loads(x) for x in (tmp_path / "state" / "samples.jsonl").read_text().splitlines() if x.strip()]
    a_speed = [x for x in lines if x.get("device") == "a" and x.get("tag") == "speed"]
    qualities = [x["quality"] for x in a_speed]
    first_good = qualities.index("good")
    assert "bad" in qualities[first_good:], qualities  # the outage is in the data
    assert a_speed[-1]["quality"] == "good" and a_speed[-1]["value"] == pytest.approx(7.5)


RTU_CELL = """
[cell]
name = "rtu"
state_dir = "{state}"

[device.drive1]
driver = "modbus"
transport = "rtu"
port = "{tty}"
baudrate = 38400
parity = "N"
unit_id = 1
timeout_s = 0.5

[device.drive1.tag.speed]
address = "40001"
type = "int32"
order = "DCBA"

[device.drive1.tag.enable]
address = "00001"
type = "bool"
access = "write"

[device.drive2]
driver = "modbus"
transport = "rtu"
port = "{tty}"
baudrate = 38400
parity = "N"
unit_id = 7
timeout_s = 0.5

[device.drive2.tag.current]
address = "300001"
type = "float32"
order = "BADC"
unit = "A"
"""


def test_rtu_line_with_two_units_read_and_write_through_the_cli(tmp_path: Path) -> None:
    """An RTU line (a socat pty pair made by `edged simulate`; ptys only take 8N1) shared by two unit ids."""
    path = tmp_path / "rtu.toml"
    path.write_text(RTU_CELL.format(state=tmp_path / "state", tty=tmp_path / "ttyV0"))
    sim = simulate(path, "drive1", tmp_path, "drive1.speed=-2147483648", "drive1.enable=false")
    sim2 = None
    try:
        r = Proc(["read", "-c", str(path), "--json", "drive1"], tmp_path)
        assert r.wait() == 0, r.stderr
        rows = {x["tag"]: x for x in json.loads(r.stdout)}
        assert rows["drive1.speed"]["value"] == -2147483648 and rows["drive1.enable"]["value"] is False
        w = Proc(["write", "-c", str(path), "drive1.enable", "true"], tmp_path)
        assert w.wait() == 0, w.stderr
        r = Proc(["read", "-c", str(path), "--json", "drive1.enable"], tmp_path)
        assert r.wait() == 0 and json.loads(r.stdout)[0]["value"] is True, r.stderr
    finally:
        sim.stop()
    # both units on one line, served by one emulator
    sim2 = simulate(path, "drive1", tmp_path, "drive1.speed=123456")
    sim2.stop()
    both = Proc(["simulate", "-c", str(path), "--set", "drive2.current=12.5", "--set", "drive1.speed=7"], tmp_path)
    both.wait_for("serving")
    try:
        r = Proc(["read", "-c", str(path), "--json"], tmp_path)
        assert r.wait() == 0, r.stderr
        rows = {x["tag"]: x for x in json.loads(r.stdout)}
        assert rows["drive1.speed"]["value"] == 7
        assert rows["drive2.current"]["value"] == pytest.approx(12.5) and rows["drive2.current"]["unit"] == "A"
        assert all(x["quality"] == "good" for x in rows.values())
    finally:
        both.stop()


def test_pty_refusing_parity_still_opens_and_says_so_once(tmp_path: Path) -> None:
    """Linux ptys may refuse parity (EINVAL): the port opens anyway (one info line), nobody answers here."""
    import shutil
    import subprocess

    tty = tmp_path / "ttyE"
    socat = subprocess.Popen([shutil.which("socat") or "socat", f"pty,raw,echo=0,link={tty}",
                              f"pty,raw,echo=0,link={tmp_path / 'ttyE.peer'}"], stderr=subprocess.DEVNULL)
    try:
        eventually(tty.exists, 10, what="pty")
        cell = tmp_path / "e.toml"
        cell.write_text(f'[cell]\nname = "e"\n[device.d]\ndriver = "modbus"\ntransport = "rtu"\nport = "{tty}"\n'
                        'parity = "E"\ntimeout_s = 0.3\n[device.d.tag.x]\naddress = "hr:0"\ntype = "uint16"\n')
        r = Proc(["read", "-c", str(cell), "--json"], tmp_path)
        assert r.wait() == 1
        assert json.loads(r.stdout)[0]["quality"] == "bad"
        assert "cannot open serial" not in r.stderr and "Traceback" not in r.stderr
        assert "no response within 0.3 s" in r.stderr      # the port opened; no device on the far end
    finally:
        socat.terminate()
        socat.wait(5)
