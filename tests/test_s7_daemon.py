"""The daemon and the CLI as subprocesses against an S7 PLC served by `edged simulate` (the S7 emulator)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from daemon_support import Proc, eventually, free_port, metric, scrape

pytestmark = pytest.mark.timeout(180)

CELL = """
[cell]
name = "s7"
state_dir = "{state}"
heartbeat_s = 0

[metrics]
listen = "127.0.0.1:{mport}"

[scan.fast]
interval_ms = 100

[device.plc]
driver = "s7"
host = "127.0.0.1"
port = {port}
timeout_s = 0.3
backoff_initial_s = 0.2
backoff_max_s = 1.0

[device.plc.tag.speed]
address = "%DB1.DBD0"
type = "float32"
unit = "m/min"
scan = "fast"

[device.plc.tag.running]
address = "%DB1.DBX4.0"
access = "write"
scan = "fast"

[device.plc.tag.parts]
address = "DB1,DINT6"

[device.plc.tag.recipe]
address = "DB1:10:STRING[12]"

[device.plc.tag.temps]
address = "DB2:0:REAL[3]"

[device.plc.tag.alarm_word]
address = "%MW20"

[device.plc.tag.estop]
address = "%I0.1"

[device.plc.tag.lamp]
address = "%Q4.0"
access = "write"

[device.plc.tag.stamp]
address = "DB3.DBB0:DTL"

[sink.local]
type = "jsonl"
path = "samples.jsonl"
"""


@pytest.fixture
def cell(tmp_path: Path) -> tuple[Path, dict[str, int]]:
    ports = {"port": free_port(), "mport": free_port()}
    path = tmp_path / "cell.toml"
    path.write_text(CELL.format(state=tmp_path / "state", **ports))
    return path, ports


def device_gauge(text: str, fact: str) -> float | None:
    """edged_device_fact{device="plc", name=fact} (metric() cannot take a label called name)."""
    for line in text.splitlines():
        if line.startswith("edged_device_fact{") and 'device="plc"' in line and f'name="{fact}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return None


def simulate(path: Path, cwd: Path, *sets: str) -> Proc:
    args = ["simulate", "-c", str(path)]
    for s in sets:
        args += ["--set", s]
    p = Proc(args, cwd)
    p.wait_for("serving")
    return p


SETS = ("plc.speed=12.5", "plc.running=true", "plc.parts=-7", 'plc.recipe="PASTA"', "plc.temps=[1.5,2.5,3.5]",
        "plc.alarm_word=65535", "plc.estop=true", 'plc.stamp="2024-05-01T06:30:00.250"')


def test_read_json_prints_every_s7_tag_and_write_round_trips(cell, tmp_path: Path) -> None:
    path, _ = cell
    sim = simulate(path, tmp_path, *SETS)
    try:
        r = Proc(["read", "-c", str(path), "--json"], tmp_path)
        assert r.wait() == 0, r.stderr
        rows = {row["tag"]: row for row in json.loads(r.stdout)}
        assert set(rows) == {f"plc.{n}" for n in ("speed", "running", "parts", "recipe", "temps", "alarm_word",
                                                  "estop", "lamp", "stamp")}
        values = {k: v["value"] for k, v in rows.items()}
        assert values == {"plc.speed": 12.5, "plc.running": True, "plc.parts": -7, "plc.recipe": "PASTA",
                          "plc.temps": [1.5, 2.5, 3.5], "plc.alarm_word": 65535, "plc.estop": True,
                          "plc.lamp": False, "plc.stamp": "2024-05-01T06:30:00.250000"}
        for row in rows.values():
            assert row["quality"] == "good" and row["ts"].endswith("Z")
        assert rows["plc.speed"]["unit"] == "m/min"
        w = Proc(["write", "-c", str(path), "plc.lamp", "true"], tmp_path)
        assert w.wait() == 0, w.stderr
        r2 = Proc(["read", "-c", str(path), "--json", "plc.lamp", "plc.estop"], tmp_path)
        assert r2.wait() == 0
        assert {x["tag"]: x["value"] for x in json.loads(r2.stdout)} == {"plc.lamp": True, "plc.estop": True}
    finally:
        sim.stop()


def test_run_with_spool_and_sink_recovers_a_restarted_plc_without_stale_values(cell, tmp_path: Path) -> None:
    path, ports = cell
    sim = simulate(path, tmp_path, *SETS)
    d = Proc(["run", "-c", str(path)], tmp_path)
    url = f"http://127.0.0.1:{ports['mport']}/metrics"
    try:
        eventually(lambda: metric(scrape(url), "edged_device_up", device="plc") == 1.0, 30, what="plc up")
        eventually(lambda: (metric(scrape(url), "edged_scans_total", device="plc", scan="fast") or 0) >= 3, 30,
                   what="scanned")
        text = scrape(url)   # the negotiated PDU and the CPU identity, from the driver's status
        assert device_gauge(text, "pdu_negotiated") == 480.0
        assert device_gauge(text, "cpu_run") == 1.0
        assert metric(text, "edged_device_info", device="plc", order_code="6ES7 516-3AN02-0AB0",
                      module_name="CPU 1516-3 PN/DP") == 1.0
        sim.stop()   # the PLC goes away mid-run
        eventually(lambda: metric(scrape(url), "edged_device_up", device="plc") == 0.0, 30, what="plc down")
        sim = simulate(path, tmp_path, "plc.speed=99.0", "plc.parts=1000")   # ... and comes back changed
        eventually(lambda: metric(scrape(url), "edged_device_up", device="plc") == 1.0, 30, what="plc back up")
        scans = metric(scrape(url), "edged_scans_total", device="plc", scan="fast")
        eventually(lambda: metric(scrape(url), "edged_scans_total", device="plc", scan="fast") >= scans + 3, 30,
                   what="scanned again")
        eventually(lambda: any(json.loads(x).get("value") == 1000 for x in
                               (tmp_path / "state" / "samples.jsonl").read_text().splitlines() if x.strip()),
                   30, what="new parts value in the sink")
        text = scrape(url)
        assert (metric(text, "edged_device_reconnects_total", device="plc") or 0) >= 1
    finally:
        code = d.stop()
        sim.stop()
    assert code == 0, d.stderr
    assert "Traceback" not in d.stderr
    lines = [json.loads(x) for x in (tmp_path / "state" / "samples.jsonl").read_text().splitlines() if x.strip()]
    speed = [x for x in lines if x.get("tag") == "speed"]
    qualities = [x["quality"] for x in speed]
    first_good = qualities.index("good")
    outage = qualities.index("bad", first_good)
    # no stale value passed on as good: after the outage began, 12.5 never comes back as good
    assert all(x["value"] == pytest.approx(99.0) for x in speed[outage:] if x["quality"] == "good")
    assert speed[-1]["quality"] == "good" and speed[-1]["value"] == pytest.approx(99.0)
