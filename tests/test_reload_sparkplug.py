"""Reload with a Sparkplug sink (daemon subprocess, real mosquitto): births only when the change needs them.

A device whose connection settings changed (its tags did not) restarts without any birth; an added device
makes the node rebirth (NBIRTH + every DBIRTH, bdSeq and the existing aliases unchanged) so the host learns it.
"""
from __future__ import annotations

import json
import signal
from pathlib import Path

from daemon_support import Proc, eventually, free_port, scrape
from mosquitto_support import Broker, Collector, mosquitto  # noqa: F401
from test_sparkplug_daemon import CELL, kind, of, wait

SIM2 = """
[device.sim2]
driver = "sim"

[device.sim2.tag.level]
address = "ramp:0:100:30"
scan = "fast"
"""


def test_births_only_when_the_tags_change(tmp_path: Path, mosquitto: Broker) -> None:
    mport = free_port()
    path = tmp_path / "cell.toml"
    text = CELL.format(state=tmp_path / "state", port=mosquitto.port, mport=mport)
    path.write_text(text)
    status = lambda: json.loads(scrape(f"http://127.0.0.1:{mport}/status"))  # noqa: E731
    with Collector(mosquitto, "spBv1.0/#", client_id="sp-reload") as col:
        d = Proc(["run", "-c", str(path)], tmp_path)
        try:
            msgs = wait(col, lambda m: len(of(m, "DDATA")) >= 3, "births and DDATA", d)
            nb = of(msgs, "NBIRTH")[0][1]
            alias = of(msgs, "DBIRTH")[0][1].by_name()["count"].alias

            # only a connection setting of sim1 changes: sim1 restarts, nothing is reborn
            path.write_text(text.replace('[device.sim1]\ndriver = "sim"\n', '[device.sim1]\ndriver = "sim"\n'
                                                                             'timeout_s = 2.0\n'))
            d.p.send_signal(signal.SIGHUP)
            s = eventually(lambda: (s := status())["reload"]["count"] == 1 and s, 30, what="reload 1")
            assert s["reload"]["last_result"] == "ok" and s["reload"]["changes"]["restarted"] == ["sim1"]
            assert "sparkplug" not in s["reload"]["changes"]
            mark = len(col.snapshot())
            wait(col, lambda m: len(of(m[mark:], "DDATA")) >= 5, "DDATA after the first reload", d)
            assert not of(col.snapshot(), "NBIRTH")[1:] and len(of(col.snapshot(), "DBIRTH")) == 1

            # a device is added: the node is reborn with it
            path.write_text(text + SIM2)
            d.p.send_signal(signal.SIGHUP)
            s = eventually(lambda: (s := status())["reload"]["count"] == 2 and s, 30, what="reload 2")
            assert s["reload"]["changes"]["added"] == ["sim2"] and s["reload"]["changes"]["sparkplug"] == ["rebirth"]
            msgs = wait(col, lambda m: any(r.topic.endswith("/DBIRTH/cell7/sim2") for r in m), "DBIRTH of sim2", d)
            nbs = of(msgs, "NBIRTH")
            assert len(nbs) == 2 and nbs[1][1].by_name()["bdSeq"].value == nb.by_name()["bdSeq"].value
            dbs = {r.topic.rsplit("/", 1)[1]: p for r, p in of(msgs, "DBIRTH")[1:]}
            assert set(dbs) == {"sim1", "sim2"}
            assert dbs["sim1"].by_name()["count"].alias == alias  # the host's aliases stay valid
            assert [kind(r) for r in msgs].count("NDEATH") == 0
        finally:
            assert d.stop() == 0, d.stderr
