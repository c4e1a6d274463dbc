"""Reload with a Sparkplug sink (daemon subprocess, real mosquitto): the births a change needs, and only those.

One daemon goes through four reloads: a device's connection setting changes (no message at all), a device
is added (its DBIRTH only), a tag of a device is retyped (that device's DBIRTH only, the aliases of its
other metrics unchanged), a device is removed (its DDEATH). There is one NBIRTH in all, the seq goes on
without a gap across every message, and every DDATA uses aliases its device's latest DBIRTH declared.
Payloads are decoded with edged's own decoder.
"""
from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

from daemon_support import Proc, eventually, free_port, scrape
from mosquitto_support import Broker, Collector, Received, mosquitto  # noqa: F401
from test_sparkplug_daemon import CELL, kind, wait

from edged.sinks.sparkplug_payload import SpType, decode

SIM2 = """
[device.sim2]
driver = "sim"

[device.sim2.tag.level]
address = "ramp:0:100:30"
scan = "fast"
"""


def _device(r: Received) -> str:
    return r.topic.split("/")[4]


def _names(p: Any) -> dict[str, Any]:
    return {m.name: m for m in p.metrics}


def _check_session(msgs: list[Received]) -> None:
    """One NBIRTH, seq 0..255 continuous after it, and DDATA only with aliases of its device's latest DBIRTH."""
    seqs = [decode(r.payload).seq for r in msgs if kind(r) not in ("NDEATH", "STATE")]
    assert seqs and seqs[0] == 0, seqs[:5]
    gaps = [(i, a, b) for i, (a, b) in enumerate(zip(seqs, seqs[1:])) if b != (a + 1) % 256]
    assert not gaps, gaps[:5]
    declared: dict[str, set[int]] = {}
    for r in msgs:
        k = kind(r)
        if k == "DBIRTH":
            declared[_device(r)] = {m.alias for m in decode(r.payload).metrics}
        elif k == "DDEATH":
            declared.pop(_device(r))
        elif k == "DDATA":
            aliases = {m.alias for m in decode(r.payload).metrics}
            assert aliases <= declared.get(_device(r), set()), (r.topic, aliases, declared)


def _reload(d: Proc, path: Path, text: str, status: Any, count: int) -> dict[str, Any]:
    path.write_text(text)
    d.p.send_signal(signal.SIGHUP)
    s = eventually(lambda: (s := status())["reload"]["count"] == count and s, 30, what=f"reload {count}")
    assert s["reload"]["last_result"] == "ok", s["reload"]
    return s["reload"]["changes"]


def test_reload_sends_only_the_births_and_deaths_the_change_needs(tmp_path: Path, mosquitto: Broker) -> None:
    mport = free_port()
    path = tmp_path / "cell.toml"
    text = CELL.format(state=tmp_path / "state", port=mosquitto.port, mport=mport)
    path.write_text(text)
    status = lambda: json.loads(scrape(f"http://127.0.0.1:{mport}/status"))  # noqa: E731
    ddata = lambda m, dev: [r for r in m if kind(r) == "DDATA" and _device(r) == dev]  # noqa: E731
    with Collector(mosquitto, "spBv1.0/#", client_id="sp-reload") as col:
        d = Proc(["run", "-c", str(path)], tmp_path)
        try:
            msgs = wait(col, lambda m: len(ddata(m, "sim1")) >= 3, "births and DDATA", d)
            (db1,) = [decode(r.payload) for r in msgs if kind(r) == "DBIRTH"]
            aliases = {m.name: m.alias for m in db1.metrics}
            assert _names(db1)["setpoint"].datatype == SpType.Int32

            # 1. only a connection setting of sim1 changes: sim1 restarts, nothing is sent about it
            conn = text.replace('[device.sim1]\ndriver = "sim"\n', '[device.sim1]\ndriver = "sim"\ntimeout_s = 2.0\n')
            changes = _reload(d, path, conn, status, 1)
            assert changes["restarted"] == ["sim1"] and "sparkplug" not in changes
            mark = len(col.snapshot())
            wait(col, lambda m: len(ddata(m[mark:], "sim1")) >= 5, "DDATA after the first reload", d)

            # 2. a device is added: its DBIRTH, nothing else
            changes = _reload(d, path, conn + SIM2, status, 2)
            assert changes["added"] == ["sim2"] and changes["sparkplug"] == ["DBIRTH sim2"]
            assert changes["unchanged"] == ["sim1"]
            msgs = wait(col, lambda m: len(ddata(m, "sim2")) >= 3, "DDATA of sim2", d)
            (db2,) = [decode(r.payload) for r in msgs if kind(r) == "DBIRTH" and _device(r) == "sim2"]
            assert set(_names(db2)) == {"level"} and _names(db2)["level"].alias not in aliases.values()

            # 3. a tag of sim1 is retyped: sim1's DBIRTH, its other metric keeps its alias
            retyped = conn.replace('type = "int32"', 'type = "int64"') + SIM2
            mark = len(col.snapshot())
            changes = _reload(d, path, retyped, status, 3)
            assert changes["restarted"] == ["sim1"] and changes["sparkplug"] == ["DBIRTH sim1"]
            msgs = wait(col, lambda m: [r for r in m[mark:] if kind(r) == "DBIRTH"] and
                        len(ddata(m[mark:], "sim1")) >= 3, "sim1's new DBIRTH and DDATA", d)
            (db3,) = [decode(r.payload) for r in msgs[mark:] if kind(r) == "DBIRTH"]
            m3 = _names(db3)
            assert m3["count"].alias == aliases["count"]  # the host's alias stays valid
            assert m3["setpoint"].datatype == SpType.Int64 and m3["setpoint"].long_value == 55
            assert m3["setpoint"].alias not in set(aliases.values()) | {_names(db2)["level"].alias}

            # 4. the added device is removed again: its DDEATH
            mark = len(col.snapshot())
            changes = _reload(d, path, retyped.replace(SIM2, ""), status, 4)
            assert changes["removed"] == ["sim2"] and changes["sparkplug"] == ["DDEATH sim2"]
            msgs = wait(col, lambda m: any(kind(r) == "DDEATH" for r in m) and
                        len(ddata(m[mark:], "sim1")) >= 3, "the DDEATH of sim2, then DDATA", d)

            assert [kind(r) for r in msgs].count("NBIRTH") == 1 and "NDEATH" not in [kind(r) for r in msgs]
            assert [_device(r) for r in msgs if kind(r) == "DBIRTH"] == ["sim1", "sim2", "sim1"]
            assert [_device(r) for r in msgs if kind(r) == "DDEATH"] == ["sim2"]
            _check_session(msgs)
            assert "Traceback" not in d.stderr
        finally:
            assert d.stop() == 0, d.stderr
