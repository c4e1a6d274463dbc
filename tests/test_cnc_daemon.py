"""edged as a subprocess against the CNC emulators: `edged read --json` prints every configured field, the
daemon recovers an unplugged adapter, and the machine time-in-state counters add up to wall time."""
from __future__ import annotations

import json
import re
import time
from pathlib import Path

from cnc_support import GRBL_FIELDS, HAAS_FIELDS, EmulatorThread, cell_text, load, tag_name
from daemon_support import Proc, eventually, free_port, metric, scrape

STATE_TABLE = """
[device.press]
driver = "sim"

[device.press.tag.run]
address = "square:3"

[device.press.tag.count]
address = "counter:0"
type = "uint32"

[device.press.state]
running = "run"
alarm = ["count > 1000000"]
parts = "count"
"""


def test_edged_read_json_prints_every_field_of_both_dialects(tmp_path: Path) -> None:
    """`edged simulate` serves a GRBL machine on a pty and a Haas machine on TCP; `edged read --json`
    prints every configured field with good quality."""
    cfg = tmp_path / "cell.toml"
    cfg.write_text(cell_text(tmp_path, timeout=2.0))
    sim = Proc(["simulate", "-c", str(cfg)], cwd=tmp_path)
    try:
        sim.wait_for("serving")
        rd = Proc(["read", "-c", str(cfg), "--json"], cwd=tmp_path)
        assert rd.wait() == 0, rd.stderr
        rows = {r["tag"]: r for r in json.loads(rd.stdout)}
        for dev, fields in (("g", GRBL_FIELDS), ("h", HAAS_FIELDS)):
            for f in fields:
                row = rows[f"{dev}.{tag_name(f)}"]
                assert row["quality"] in ("good", "uncertain") and row["value"] is not None, row
        assert rows["g.build_version"]["value"] == "1.1h"
        assert rows["h.q100_serial"]["value"] == "1234567"
        assert rows["g.status_state"]["value"] in ("Idle", "Run")
        assert "Traceback" not in rd.stderr
    finally:
        sim.stop()


def test_bad_cnc_config_exits_2_without_a_traceback(tmp_path: Path) -> None:
    """An unknown field fails at load with the file, the dotted path and the known fields."""
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[cell]\nname = "x"\n[device.m]\ndriver = "cnc"\ndialect = "haas"\nport = "tcp://127.0.0.1:5051"\n'
                   '[device.m.tag.t]\naddress = "q999.thing"\n')
    p = Proc(["check", "-c", str(cfg)], cwd=tmp_path)
    assert p.wait() == 2
    assert f"{cfg}: device.m.tag.t.address: expected a field of the dialect" in p.stderr
    assert "q500.parts" in p.stderr and "Traceback" not in p.stderr


def _state_seconds(text: str, device: str) -> dict[str, float]:
    out = {}
    for m in re.finditer(r'^edged_machine_state_seconds_total\{device="%s",state="(\w+)"\} (\S+)$' % device, text,
                         re.M):
        out[m.group(1)] = float(m.group(2))
    return out


def test_daemon_time_in_state_unplug_and_recovery(tmp_path: Path) -> None:
    """The daemon reports time in state for both CNC machines and a PLC-style device with a state table;
    the counters add up to wall time within 1%; an unplugged GRBL adapter shows offline and recovers."""
    mport = free_port()
    head = (f'[cell]\nname = "cnc"\nstate_dir = "{tmp_path / "state"}"\nheartbeat_s = 0\n\n'
            f'[metrics]\nlisten = "127.0.0.1:{mport}"\n')
    text = cell_text(tmp_path, head=head, extra=STATE_TABLE)
    cfg = tmp_path / "cell.toml"
    cfg.write_text(text)
    url = f"http://127.0.0.1:{mport}/metrics"
    with EmulatorThread(load(text), auto=True) as emu:
        for dev in ("g", "h"):
            emu.call(lambda d=dev: setattr(emu.emu.machine(d), "cycle_s", 0.6))
            emu.call(lambda d=dev: setattr(emu.emu.machine(d), "idle_s", 0.3))
        d = Proc(["run", "-c", str(cfg)], cwd=tmp_path)
        try:
            eventually(lambda: all(metric(scrape(url), "edged_device_up", device=n) == 1.0 for n in ("g", "h", "press")),
                       what="all devices up")
            eventually(lambda: all((_state_seconds(scrape(url), n).get("running") or 0) > 0 for n in ("g", "h", "press")),
                       what="every machine seen running")
            eventually(lambda: (metric(scrape(url), "edged_machine_parts_total", device="h") or 0) >= 1,
                       what="a Haas part counted")

            # the counters add up to wall time: compare two scrapes with bounds on when each was taken
            t0a = time.monotonic()
            s0 = scrape(url)
            t0b = time.monotonic()
            time.sleep(3.0)
            t1a = time.monotonic()
            s1 = scrape(url)
            t1b = time.monotonic()
            for dev in ("g", "h", "press"):
                a, b = _state_seconds(s0, dev), _state_seconds(s1, dev)
                assert set(a) == {"running", "idle", "hold", "alarm", "offline"}
                grown = sum(b.values()) - sum(a.values())
                lo, hi = (t1a - t0b) * 0.99, (t1b - t0a) * 1.01
                assert lo <= grown <= hi, (dev, grown, lo, hi)

            emu.call(emu.emu.unplug, "g")
            eventually(lambda: metric(scrape(url), "edged_device_up", device="g") == 0.0, what="g down")
            eventually(lambda: metric(scrape(url), "edged_machine_state", device="g", state="offline") == 1.0,
                       what="g offline")
            emu.call(emu.emu.replug, "g")
            eventually(lambda: metric(scrape(url), "edged_device_up", device="g") == 1.0, what="g up again")
            final = scrape(url)
            assert (metric(final, "edged_device_reconnects_total", device="g") or 0) >= 1
            assert _state_seconds(final, "g")["offline"] > 0
            assert "Traceback" not in d.stderr
        finally:
            assert d.stop() == 0, d.stderr
