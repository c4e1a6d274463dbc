"""The daemon as a subprocess with the sim driver and a Sparkplug sink, against a real mosquitto."""
from __future__ import annotations

import signal
import time
from pathlib import Path

import paho.mqtt.client as paho
from daemon_support import Proc, free_port, metric, scrape
from mosquitto_support import Broker, Collector, Received, mosquitto  # noqa: F401
from test_sparkplug_wire import INT32, INT64, WPayload, decode_payload, encode_command

TIMEOUT = 60.0

CELL = """
[cell]
name = "cell7"
state_dir = "{state}"
heartbeat_s = 0

[metrics]
listen = "127.0.0.1:{mport}"

[scan.fast]
interval_ms = 100

[device.sim1]
driver = "sim"

[device.sim1.tag.count]
address = "counter"
scan = "fast"

[device.sim1.tag.setpoint]
address = "constant:55"
type = "int32"
access = "write"
min = 0
max = 100

[sink.scada]
type = "sparkplug"
host = "127.0.0.1"
port = {port}
group_id = "plant"
backoff_initial_s = 0.1
backoff_max_s = 1.0
"""


def kind(r: Received) -> str:
    """NBIRTH, DDATA, ... of a Sparkplug topic."""
    return r.topic.split("/")[2]


def of(msgs: list[Received], *kinds: str) -> list[tuple[Received, WPayload]]:
    """Decoded messages of the given kinds, in arrival order."""
    return [(r, decode_payload(r.payload)) for r in msgs if kind(r) in kinds]


def wait(col: Collector, predicate, what: str, d: Proc) -> list[Received]:  # noqa: ANN001
    """Wait until the collected messages satisfy predicate, or fail showing the last ones and the daemon's log."""
    ok = col.wait_for(predicate, TIMEOUT)
    msgs = col.snapshot()
    assert ok, (f"timed out waiting for {what}: {[(r.topic, decode_payload(r.payload)) for r in msgs][-10:]}\n"
                f"edged log:\n{d.stderr[-4000:]}")
    return msgs


def publish(broker: Broker, topic: str, payload: bytes) -> None:
    """Publish one QoS-1 message as a host application."""
    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"host-{time.monotonic_ns()}")
    c.connect(broker.host, broker.port)
    c.loop_start()
    try:
        c.publish(topic, payload, qos=1).wait_for_publish(timeout=TIMEOUT)
    finally:
        c.disconnect()
        c.loop_stop()


def test_daemon_births_commands_will_on_sigkill_and_bdseq_across_restarts(tmp_path: Path,
                                                                          mosquitto: Broker) -> None:
    mport = free_port()
    path = tmp_path / "cell.toml"
    path.write_text(CELL.format(state=tmp_path / "state", port=mosquitto.port, mport=mport))
    with Collector(mosquitto, "spBv1.0/#", client_id="sp-daemon") as col:
        d = Proc(["run", "-c", str(path)], tmp_path)
        try:
            msgs = wait(col, lambda m: len(of(m, "DDATA")) >= 3, "births and DDATA", d)
            assert [kind(r) for r in msgs[:2]] == ["NBIRTH", "DBIRTH"]
            nb = of(msgs, "NBIRTH")[0][1]
            assert nb.seq == 0 and nb.by_name()["bdSeq"].value == 0
            (db_r, db), = of(msgs, "DBIRTH")
            assert db_r.topic == "spBv1.0/plant/DBIRTH/cell7/sim1"
            births = db.by_name()
            assert set(births) == {"count", "setpoint"}
            assert births["count"].datatype == INT64 and births["setpoint"].datatype == INT32
            count_alias, sp_alias = births["count"].alias, births["setpoint"].alias
            # every read of the counter reaches the host, in order, none missing (historical ones included)
            msgs = wait(col, lambda m: len([x for _, p in of(m, "DDATA") for x in p.metrics
                                            if x.alias == count_alias]) >= 20, "20 counter values", d)
            counts = [x.value for _, p in of(msgs, "DDATA") for x in p.metrics if x.alias == count_alias]
            assert counts == list(range(counts[0], counts[0] + len(counts)))
            assert births["count"].value is not None and counts[0] <= births["count"].value + 1

            # DCMD: the writable setpoint is written and read back; the read-only counter is refused
            dcmd = "spBv1.0/plant/DCMD/cell7/sim1"
            publish(mosquitto, dcmd, encode_command([("setpoint", None, INT32, 77)]))
            publish(mosquitto, dcmd, encode_command([("count", None, INT64, 5)]))
            wait(col, lambda m: any(x.alias == sp_alias and x.value == 77 for _, p in of(m, "DDATA")
                                    for x in p.metrics), "setpoint 77 read back in DDATA", d)
            url = f"http://127.0.0.1:{mport}/metrics"
            deadline = time.monotonic() + TIMEOUT
            while metric(scrape(url), "edged_commands_total", sink="scada", result="refused",
                         reason="read_only") != 1.0:
                assert time.monotonic() < deadline, scrape(url)
                time.sleep(0.1)
            assert metric(scrape(url), "edged_commands_total", sink="scada", result="accepted", reason="") == 1.0

            # SIGKILL: no DISCONNECT, so the broker publishes the Will: NDEATH with the NBIRTH's bdSeq
            d.stop(signal.SIGKILL)
            msgs = wait(col, lambda m: len(of(m, "NDEATH")) == 1, "NDEATH (the Will)", d)
            (_, death), = of(msgs, "NDEATH")
            assert death.by_name()["bdSeq"].value == nb.by_name()["bdSeq"].value
            killed_at = len(msgs)

            # restart: the bdSeq persisted in the state dir goes on; samples spooled before are historical
            d = Proc(["run", "-c", str(path)], tmp_path)
            msgs = wait(col, lambda m: len(of(m[killed_at:], "DDATA")) >= 3, "births after the restart", d)
            nb2 = of(msgs[killed_at:], "NBIRTH")[0][1]
            assert nb2.seq == 0 and nb2.by_name()["bdSeq"].value == 1
            db2 = of(msgs[killed_at:], "DBIRTH")[0][1].by_name()
            assert db2["setpoint"].value == 55  # the sim device restarted with its constant

            # SIGTERM: edged publishes NDEATH itself (bdSeq 1) and exits 0
            assert d.stop(signal.SIGTERM) == 0
            msgs = wait(col, lambda m: len(of(m, "NDEATH")) == 2, "NDEATH on a clean stop", d)
            assert of(msgs, "NDEATH")[1][1].by_name()["bdSeq"].value == 1
        finally:
            d.stop(signal.SIGKILL)
