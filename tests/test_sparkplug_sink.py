"""The Sparkplug sink in-process against a real mosquitto, a real Spool and an independent payload decoder."""
from __future__ import annotations

import asyncio
import json
import socket
import time
from pathlib import Path
from typing import Any, Callable

import paho.mqtt.client as paho
import pytest
from mosquitto_support import Broker, Collector, Received, mosquitto, mosquitto_tls  # noqa: F401
from prometheus_client import CollectorRegistry
from test_sparkplug_wire import BOOLEAN, DOUBLE, FLOAT, INT16, INT32, STRING, WPayload, decode_payload, encode_command

from edged.errors import WriteRefused
from edged.schema import Issues, Section
from edged.sinks.base import SinkContext, WriteResult
from edged.sinks.sparkplug import SparkplugSink, parse_spec, parse_state
from edged.sinks.sparkplug_node import TAG_ALIAS_BASE
from edged.spool.config import SpoolSpec
from edged.spool.spool import Spool
from edged.tag import Access, DataType, Sample, Tag
from edged.writes import check_write

SINK = "scada"
TIMEOUT = 60.0
TAGS = [
    Tag("press1", "oil_temp", "hr:0", DataType.INT16, "default", None, scale=0.1, slot=0),
    Tag("press1", "count", "hr:1", DataType.INT32, "default", None, slot=1),
    Tag("press1", "setpoint", "hr:2", DataType.INT16, "default", None, access=Access.WRITE, min=0, max=500,
        slot=2),
    Tag("robot", "state", "s", DataType.STRING, "default", None, slot=3),
    Tag("robot", "enable", "c", DataType.BOOL, "default", None, access=Access.WRITE, slot=4),
    Tag("robot", "speed", "f", DataType.FLOAT32, "default", None, slot=5),
]


class Harness:
    """A cell stand-in: tags, a device value table, current values, a real Spool and a sink context."""

    def __init__(self, tmp_path: Path, broker: Broker, **keys: Any) -> None:
        self.tags = {t.key: t for t in TAGS}
        self.current: dict[str, tuple[Any, int, int]] = {}
        self.device: dict[str, Any] = {}
        self.writes: list[tuple[str, Any, str]] = []
        self.spool = Spool.open(tmp_path / "spool", SpoolSpec(), [SINK])
        self.registry = CollectorRegistry()
        self.ctx = SinkContext(cell_name="cell1", tags=self.tags, write=self.write, registry=self.registry,
                               state_dir=tmp_path / "state", current_values=lambda: dict(self.current))
        table = {"type": "sparkplug", "host": broker.host, "port": broker.port, "group_id": "plant",
                 "birth_wait_s": 0, **keys}
        issues = Issues("cell.toml")
        sec = Section(table, f"sink.{SINK}", issues)
        sec.get_str("type")  # read by edged.sinks.config.parse_sinks
        self.spec = parse_spec(SINK, sec, self.tags)
        sec.finish()
        issues.raise_if_any()
        self.sink = SparkplugSink(self.spec, self.spool, self.ctx)
        self.task: asyncio.Task | None = None

    def scan(self, key: str, value: Any, quality: int = 0, ts_ns: int | None = None) -> int:
        """What a scan does: a new current value and a sample in the spool."""
        ts_ns = time.time_ns() if ts_ns is None else ts_ns
        dev, name = key.split(".")
        self.device[key] = value
        self.current[key] = (value, quality, ts_ns)
        self.spool.append([Sample(ts_ns, dev, name, value, quality)])
        return ts_ns

    async def write(self, key: str, value: Any, source: str) -> WriteResult:
        """The runtime's write: validate, write to the device, and the next scan reads it back."""
        tag = self.tags.get(key)
        if tag is None:
            return WriteResult(False, key, error=f"{key}: no such tag")
        try:
            checked = check_write(tag, value)
        except WriteRefused as exc:
            return WriteResult(False, key, error=str(exc))
        old = self.device.get(key)
        self.writes.append((key, checked, source))
        self.scan(key, checked)
        return WriteResult(True, key, checked, old)

    def start(self) -> None:
        """Run the sink as the runtime does."""
        self.task = asyncio.create_task(self.sink.run())

    async def stop(self) -> None:
        """Cancel run(), close the sink and the spool."""
        if self.task is not None:
            self.task.cancel()
            done, _ = await asyncio.wait({self.task}, timeout=TIMEOUT)
            assert done, "the sink did not stop when cancelled"
        await self.sink.close()
        self.spool.close()

    def metric(self, name: str, **labels: str) -> float:
        """A sample value from the registry (0 when absent)."""
        return self.registry.get_sample_value(name, {"sink": SINK, **labels}) or 0.0


def kind(r: Received) -> str:
    """NBIRTH, DDATA, ... from a Sparkplug topic."""
    parts = r.topic.split("/")
    return parts[2] if parts[0] == "spBv1.0" and len(parts) > 3 else parts[1] if parts[0] == "spBv1.0" else ""


def of(msgs: list[Received], *kinds: str) -> list[tuple[Received, WPayload]]:
    """Messages of the given kinds, decoded, in arrival order."""
    return [(r, decode_payload(r.payload)) for r in msgs if kind(r) in kinds]


async def until(collector: Collector, predicate: Callable[[list[Received]], bool], what: str) -> list[Received]:
    """Wait (without blocking the event loop) until the collected messages satisfy predicate."""
    ok = await asyncio.to_thread(collector.wait_for, predicate, TIMEOUT)
    msgs = collector.snapshot()
    assert ok, f"timed out waiting for {what}; got {[(r.topic, decode_payload(r.payload)) for r in msgs][-20:]}"
    return msgs


async def until_true(predicate: Callable[[], bool], what: str) -> None:
    """Poll a condition of the sink or spool until it holds."""
    deadline = time.monotonic() + TIMEOUT
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def publish(broker: Broker, topic: str, payload: bytes | str, retain: bool = False) -> None:
    """Publish one QoS-1 message from a separate client (as a host application would)."""
    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"host-{time.monotonic_ns()}")
    c.connect(broker.host, broker.port)
    c.loop_start()
    try:
        c.publish(topic, payload, qos=1, retain=retain).wait_for_publish(timeout=TIMEOUT)
    finally:
        c.disconnect()
        c.loop_stop()


def seqs_since_last_nbirth(msgs: list[tuple[Received, WPayload]]) -> list[int]:
    """The seq of each message from the last NBIRTH on (NDEATH has none)."""
    start = max(i for i, (r, _) in enumerate(msgs) if kind(r) == "NBIRTH")
    return [p.seq for r, p in msgs[start:] if kind(r) != "NDEATH"]


# -- the tests ------------------------------------------------------------------------------------
async def test_births_before_data_every_metric_and_the_will_carries_the_births_bdseq(
        tmp_path: Path, mosquitto: Broker) -> None:
    h = Harness(tmp_path, mosquitto, birth_wait_s=0.5)
    h.scan("press1.oil_temp", 41.5)
    h.scan("press1.count", -7)
    h.scan("robot.state", "idle", quality=1)
    h.scan("robot.enable", True)
    h.scan("robot.speed", 0.25)
    # press1.setpoint has no value yet
    with Collector(mosquitto, "spBv1.0/#", client_id="sp-births") as col:
        h.start()
        try:
            msgs = await until(col, lambda m: len(of(m, "DDATA")) >= 1, "births and the spooled samples")
            kinds = [kind(r) for r in msgs]
            assert kinds[:3] == ["NBIRTH", "DBIRTH", "DBIRTH"], kinds
            nb = of(msgs, "NBIRTH")[0][1]
            assert nb.seq == 0
            assert nb.by_name()["bdSeq"].value == 0  # first connection with this state dir
            assert nb.by_name()["Node Control/Rebirth"].value is False
            births = {r.topic.rsplit("/", 1)[1]: p for r, p in of(msgs, "DBIRTH")}
            assert set(births) == {"press1", "robot"}
            expected = {
                "press1": {"oil_temp": (TAG_ALIAS_BASE, DOUBLE, 41.5), "count": (TAG_ALIAS_BASE + 1, INT32, -7),
                           "setpoint": (TAG_ALIAS_BASE + 2, INT16, None)},
                "robot": {"state": (TAG_ALIAS_BASE + 3, STRING, "idle"), "enable": (TAG_ALIAS_BASE + 4, BOOLEAN, True),
                          "speed": (TAG_ALIAS_BASE + 5, FLOAT, 0.25)},
            }
            for dev, metrics in expected.items():
                got = {m.name: (m.alias, m.datatype, m.value) for m in births[dev].metrics}
                assert got == metrics
            assert births["press1"].by_name()["setpoint"].is_null
            assert births["robot"].by_name()["state"].properties == {"Quality": 64}
            # the samples spooled before the births are in the spool too: historical
            hist = [m for _, p in of(msgs, "DDATA") for m in p.metrics]
            assert hist and all(m.is_historical for m in hist)

            # live data after the births: DDATA, in time order, seq continuing, not historical
            t1 = h.scan("press1.count", 1)
            h.scan("press1.count", 2, ts_ns=t1 + 1_000_000)
            h.scan("press1.count", 3, ts_ns=t1 + 2_000_000)

            def live_counts(m: list[Received]) -> list[Any]:
                return [x.value for _, p in of(m, "DDATA") for x in p.metrics
                        if x.alias == TAG_ALIAS_BASE + 1 and not x.is_historical]
            msgs = await until(col, lambda m: live_counts(m) == [1, 2, 3], "live DDATA")
            seqs = seqs_since_last_nbirth(of(msgs, "NBIRTH", "DBIRTH", "DDATA", "NDATA"))
            assert seqs == list(range(len(seqs)))
            await until_true(lambda: h.spool.stats().lag_samples.get(SINK, 1) == 0, "every sample acked")

            # cut the TCP connection without DISCONNECT: the broker publishes the Will (NDEATH)
            sock = h.sink._client._client.socket()  # the live MQTT socket of the sink
            sock.shutdown(socket.SHUT_RDWR)
            msgs = await until(col, lambda m: len(of(m, "NBIRTH")) >= 2, "NDEATH and a new NBIRTH")
            deaths = of(msgs, "NDEATH")
            assert deaths, "no NDEATH after the connection was cut"
            assert deaths[0][1].by_name()["bdSeq"].value == nb.by_name()["bdSeq"].value
            assert deaths[0][1].seq is None
            second = of(msgs, "NBIRTH")[1][1]
            assert second.by_name()["bdSeq"].value == 1 and second.seq == 0
            assert (tmp_path / "state" / "sparkplug" / f"{SINK}.bdseq").read_text().strip() == "1"
        finally:
            await h.stop()


async def test_seq_wraps_and_rebirth_resends_births_with_current_values(tmp_path: Path, mosquitto: Broker) -> None:
    h = Harness(tmp_path, mosquitto, max_metrics_per_message=1)
    h.scan("press1.count", 0)
    with Collector(mosquitto, "spBv1.0/#", client_id="sp-seq") as col:
        h.start()
        try:
            await until(col, lambda m: len(of(m, "DBIRTH")) == 2, "births")
            t0 = time.time_ns()
            h.spool.append([Sample(t0 + i * 1000, "press1", "count", i, 0) for i in range(1, 301)])
            h.current["press1.count"] = (300, 0, t0 + 300_000)
            msgs = await until(col, lambda m: sum(1 for r in m if kind(r) == "DDATA") >= 301, "301 DDATA")
            decoded = of(msgs, "NBIRTH", "DBIRTH", "DDATA", "NDATA")
            seqs = [p.seq for _, p in decoded]
            assert seqs == [i % 256 for i in range(len(seqs))]
            assert 255 in seqs and seqs[seqs.index(255) + 1] == 0
            values = [p.metrics[0].value for r, p in decoded if kind(r) == "DDATA"]
            assert values[-300:] == list(range(1, 301))  # time order kept
            # node info: the backlog shrinks to 0 and is reported by NDATA (alias 3)
            h.sink.health_interval_s = 0.05
            h.scan("press1.count", 301)
            msgs = await until(col, lambda m: any(x.alias == 3 and x.value == 0 for _, p in of(m, "NDATA")
                                                  for x in p.metrics), "NDATA with an empty backlog")
            nb = of(msgs, "NBIRTH")[0][1].by_name()
            assert nb["Node Info/Version"].datatype == STRING and nb["Node Info/Version"].value
            assert nb["Node Info/Spool Backlog"].alias == 3 and nb["Node Info/Samples Lost"].value == 0
            seqs = [p.seq for _, p in of(msgs, "NBIRTH", "DBIRTH", "DDATA", "NDATA")]
            assert seqs == [i % 256 for i in range(len(seqs))]
            h.sink.health_interval_s = 3600.0
            h.scan("press1.count", 300)

            # rebirth: new NBIRTH (seq 0, same bdSeq) and DBIRTHs with the values of now
            h.scan("robot.state", "running")
            h.scan("press1.oil_temp", 55.5)
            publish(mosquitto, "spBv1.0/plant/NCMD/cell1", encode_command([("Node Control/Rebirth", None, BOOLEAN,
                                                                            True)]))
            msgs = await until(col, lambda m: len(of(m, "DBIRTH")) == 4, "rebirth")
            nbirths = of(msgs, "NBIRTH")
            assert len(nbirths) == 2
            assert nbirths[1][1].seq == 0
            assert nbirths[1][1].by_name()["bdSeq"].value == nbirths[0][1].by_name()["bdSeq"].value
            reborn = {r.topic.rsplit("/", 1)[1]: p for r, p in of(msgs, "DBIRTH")[2:]}
            assert reborn["robot"].by_name()["state"].value == "running"
            assert reborn["press1"].by_name()["oil_temp"].value == 55.5
            assert reborn["press1"].by_name()["count"].value == 300
            assert [p.seq for _, p in of(msgs, "DBIRTH")[2:]] == [1, 2]
            assert h.metric("edged_sparkplug_rebirths_total") == 1
            assert not of(msgs, "NDEATH")
        finally:
            await h.stop()


async def test_spooled_data_is_historical_after_a_broker_outage_and_births_wait_for_the_primary_host(
        tmp_path: Path, mosquitto: Broker) -> None:
    state = "spBv1.0/STATE/scada-host"
    publish(mosquitto, state, json.dumps({"online": True, "timestamp": 1000}), retain=True)
    h = Harness(tmp_path, mosquitto, primary_host="scada-host")
    h.scan("press1.count", 10)
    with Collector(mosquitto, "spBv1.0/#", client_id="sp-hist") as col:
        h.start()
        try:
            await until(col, lambda m: len(of(m, "DBIRTH")) == 2, "births")
            h.scan("press1.count", 11)
            await until(col, lambda m: any(x.value == 11 for _, p in of(m, "DDATA") for x in p.metrics),
                        "live DDATA")
            # the host goes offline: NDEATH, the sink reconnects and waits
            publish(mosquitto, state, json.dumps({"online": False, "timestamp": 2000}), retain=True)
            msgs = await until(col, lambda m: len(of(m, "NDEATH")) == 1, "NDEATH after the host went offline")
            assert of(msgs, "NDEATH")[0][1].by_name()["bdSeq"].value == 0
            await until_true(lambda: h.metric("edged_sink_connects_total") >= 2, "reconnect")
            h.scan("press1.count", 12)  # spooled: the host is offline
            # a STATE older than the one seen is ignored
            publish(mosquitto, state, json.dumps({"online": True, "timestamp": 1500}))

            mosquitto.stop()
            h.scan("press1.count", 13)  # spooled: no broker
            h.scan("press1.count", 14)
            await until_true(lambda: not col.connected.is_set(), "the collector noticing the outage")
            mosquitto.start()
            assert await asyncio.to_thread(col.connected.wait, TIMEOUT), "the collector did not reconnect"
            await until_true(lambda: h.metric("edged_sink_connects_total") >= 3, "reconnect after outage")
            assert len(of(col.snapshot(), "NBIRTH")) == 1  # still waiting for the host
            publish(mosquitto, state, json.dumps({"online": True, "timestamp": 3000}), retain=True)
            msgs = await until(col, lambda m: len(of(m, "NBIRTH")) == 2, "births after the host is back")
            nb2 = of(msgs, "NBIRTH")[1][1]
            assert nb2.by_name()["bdSeq"].value >= 2
            h.scan("press1.count", 15)  # live again

            def counts(m: list[Received]) -> list[tuple[Any, bool]]:
                start = max(i for i, r in enumerate(m) if kind(r) == "NBIRTH")
                return [(x.value, x.is_historical) for _, p in of(m[start:], "DDATA") for x in p.metrics
                        if x.alias == TAG_ALIAS_BASE + 1]
            msgs = await until(col, lambda m: (15, False) in counts(m), "replay and live data")
            assert counts(msgs) == [(12, True), (13, True), (14, True), (15, False)]
            reborn = {r.topic.rsplit("/", 1)[1]: p for r, p in of(msgs, "DBIRTH")[2:]}
            assert reborn["press1"].by_name()["count"].value == 14  # the live value at birth
            assert h.metric("edged_sparkplug_metrics_total", kind="historical") >= 3
        finally:
            await h.stop()


async def test_dcmd_writes_a_writable_tag_and_refuses_a_read_only_one(tmp_path: Path, mosquitto: Broker) -> None:
    h = Harness(tmp_path, mosquitto, primary_host="legacy-host")
    h.scan("press1.setpoint", 100)
    h.scan("press1.count", 5)
    with Collector(mosquitto, "spBv1.0/#", client_id="sp-cmd") as col:
        h.start()
        try:
            await until_true(lambda: h.metric("edged_sink_connects_total") >= 1, "connect")
            assert not of(col.snapshot(), "NBIRTH")  # waiting for the primary host
            publish(mosquitto, "spBv1.0/STATE/legacy-host", "ONLINE", retain=True)  # legacy payload, retained
            await until(col, lambda m: len(of(m, "DBIRTH")) == 2, "births")

            dcmd = "spBv1.0/plant/DCMD/cell1/press1"
            publish(mosquitto, dcmd, encode_command([("setpoint", None, INT16, 250)]))
            publish(mosquitto, dcmd, encode_command([("count", None, INT32, 999)]))  # read-only
            publish(mosquitto, dcmd, encode_command([(None, TAG_ALIAS_BASE + 2, INT16, 600)]))  # above max
            publish(mosquitto, "spBv1.0/plant/DCMD/cell1/robot", encode_command([(None, TAG_ALIAS_BASE + 4,
                                                                                  BOOLEAN, True)]))
            publish(mosquitto, dcmd, encode_command([("no_such_tag", None, INT16, 1)]))
            publish(mosquitto, dcmd, b"\x0a\xff\xff")  # not a Sparkplug payload
            publish(mosquitto, "spBv1.0/plant/NCMD/cell1", encode_command([("Node Control/Reboot", None, BOOLEAN,
                                                                            True)]))
            await until_true(lambda: h.metric("edged_commands_total", result="refused", reason="read_only") == 1
                             and h.metric("edged_commands_total", result="refused", reason="invalid_value") == 1
                             and h.metric("edged_commands_total", result="accepted", reason="") == 2
                             and h.metric("edged_commands_total", result="refused", reason="unknown_metric") == 1
                             and h.metric("edged_commands_total", result="refused", reason="malformed") == 1
                             and h.metric("edged_commands_total", result="refused", reason="unsupported") == 1,
                             "every command handled")
            assert [(k, v) for k, v, _ in h.writes] == [("press1.setpoint", 250), ("robot.enable", True)]
            assert all(src.startswith(f"sparkplug:{SINK}:DCMD/") for _, _, src in h.writes)
            assert h.device["press1.count"] == 5  # never written

            def written(m: list[Received]) -> set[tuple[int, Any]]:
                return {(x.alias, x.value) for _, p in of(m, "DDATA") for x in p.metrics if not x.is_historical}
            await until(col, lambda m: {(TAG_ALIAS_BASE + 2, 250), (TAG_ALIAS_BASE + 4, True)} <= written(m),
                        "the written values read back in DDATA")
        finally:
            await h.stop()


async def test_mqtt5_over_tls_with_a_client_certificate_births_and_the_will(tmp_path: Path,
                                                                           mosquitto_tls: Broker) -> None:
    pki = mosquitto_tls.pki
    assert pki is not None
    h = Harness(tmp_path, mosquitto_tls, port=mosquitto_tls.tls_port, protocol="5", tls_ca=str(pki.ca_cert),
                tls_cert=str(pki.client_cert), tls_key=str(pki.client_key))
    h.scan("press1.count", 9)
    with Collector(mosquitto_tls, "spBv1.0/#", client_id="sp-tls") as col:
        h.start()
        try:
            msgs = await until(col, lambda m: len(of(m, "DBIRTH")) == 2, "births over TLS")
            bd = of(msgs, "NBIRTH")[0][1].by_name()["bdSeq"].value
            births = {r.topic.rsplit("/", 1)[1]: p for r, p in of(msgs, "DBIRTH")}
            assert births["press1"].by_name()["count"].value == 9
            h.sink._client._client.socket().shutdown(socket.SHUT_RDWR)  # cut the TLS connection
            msgs = await until(col, lambda m: len(of(m, "NBIRTH")) == 2, "the Will and a new NBIRTH")
            assert [p.by_name()["bdSeq"].value for _, p in of(msgs, "NDEATH")] == [bd]
            assert of(msgs, "NBIRTH")[1][1].by_name()["bdSeq"].value == bd + 1
        finally:
            await h.stop()


async def test_control_outputs_and_unknown_keys_are_declared_by_a_dbirth_then_sent(tmp_path: Path,
                                                                                   mosquitto: Broker) -> None:
    h = Harness(tmp_path, mosquitto)
    h.scan("press1.count", 1)
    with Collector(mosquitto, "spBv1.0/#", client_id="sp-learn") as col:
        h.start()
        try:
            await until(col, lambda m: len(of(m, "DBIRTH")) == 2, "births")
            t = time.time_ns()
            # what the control plane spools: device = task name, tag = block.pin
            h.spool.append([Sample(t, "fast", "pid1.out", 41.25, 0), Sample(t + 1000, "fast", "pid1.out", 42.5, 0)])
            msgs = await until(col, lambda m: len(of(m, "DBIRTH")) == 3, "a DBIRTH declaring the new device and metric")
            # the new device's DBIRTH only: no NBIRTH, the other devices' births stand, the seq goes on
            assert len(of(msgs, "NBIRTH")) == 1 and of(msgs, "DBIRTH")[2][0].topic.endswith("/fast")
            fast = [p for r, p in of(msgs, "DBIRTH") if r.topic.endswith("/fast")]
            assert len(fast) == 1
            seqs = [p.seq for _, p in of(msgs, "NBIRTH", "DBIRTH", "DDATA", "NDATA")]
            assert seqs == list(range(len(seqs)))
            out = fast[0].by_name()["pid1.out"]
            assert (out.datatype, out.value) == (DOUBLE, 42.5)
            h.spool.append([Sample(time.time_ns(), "fast", "pid1.out", 43.0, 0)])
            msgs = await until(col, lambda m: any(x.alias == out.alias and x.value == 43.0 and not x.is_historical
                                                  for _, p in of(m, "DDATA") for x in p.metrics), "live DDATA")
            replay = [(x.value, x.is_historical) for r, p in of(msgs, "DDATA") if r.topic.endswith("/fast")
                      for x in p.metrics]
            assert replay == [(41.25, True), (42.5, True), (43.0, False)]
            assert h.metric("edged_sparkplug_samples_dropped_total", reason="unknown_tag") == 0
        finally:
            await h.stop()


async def test_commands_false_refuses_every_write_but_rebirth_still_works(tmp_path: Path, mosquitto: Broker) -> None:
    h = Harness(tmp_path, mosquitto, commands=False)
    h.scan("press1.setpoint", 100)
    with Collector(mosquitto, "spBv1.0/#", client_id="sp-nocmd") as col:
        h.start()
        try:
            await until(col, lambda m: len(of(m, "DBIRTH")) == 2, "births")
            publish(mosquitto, "spBv1.0/plant/DCMD/cell1/press1", encode_command([("setpoint", None, INT16, 200)]))
            publish(mosquitto, "spBv1.0/plant/NCMD/cell1", encode_command([(None, 1, BOOLEAN, True)]))  # by alias
            await until(col, lambda m: len(of(m, "NBIRTH")) == 2, "rebirth")
            await until_true(lambda: h.metric("edged_commands_total", result="refused", reason="disabled") == 1,
                             "the write refused")
            assert h.writes == [] and h.device["press1.setpoint"] == 100
        finally:
            await h.stop()


async def test_a_stop_request_that_wait_for_swallowed_is_still_honoured() -> None:
    from edged.sinks.sparkplug import _check_cancelled

    fut = asyncio.get_running_loop().create_future()

    async def loop_like_the_sink() -> None:
        await asyncio.wait_for(fut, TIMEOUT)  # Python 3.11 returns the result although cancelled
        _check_cancelled()
        await asyncio.sleep(3600)

    task = asyncio.create_task(loop_like_the_sink())
    await asyncio.sleep(0)  # the task now waits inside wait_for
    fut.set_result(1)  # the awaited future completes ...
    task.cancel()  # ... in the same instant as the stop request
    done, _ = await asyncio.wait({task}, timeout=TIMEOUT)
    assert done and task.cancelled()


def test_state_payloads() -> None:
    assert parse_state(b"ONLINE") == (True, None)
    assert parse_state(b"OFFLINE") == (False, None)
    assert parse_state(b'{"online": true, "timestamp": 1700000000000}') == (True, 1700000000000)
    assert parse_state(b'{"online": false}') == (False, None)
    assert parse_state(b'{"online": "yes"}') is None
    assert parse_state(b"online") is None
    assert parse_state(b"\xff\xfe") is None


@pytest.mark.parametrize("table,message", [
    ({}, "sink.s.group_id: missing required key"),
    ({"group_id": "a/b"}, "sink.s.group_id: expected a Sparkplug id without '/', '+' or '#', found 'a/b'"),
    ({"group_id": "g", "edge_node_id": "n+1"}, "sink.s.edge_node_id: expected a Sparkplug id"),
    ({"group_id": "g", "primary_host": 3}, "sink.s.primary_host: expected a string, found integer 3"),
    ({"group_id": "g", "max_metrics_per_message": 0}, "sink.s.max_metrics_per_message: expected a value between"),
    ({"group_id": "g", "bogus": 1}, "sink.s.bogus: unknown key"),
])
def test_config_errors_name_the_key(table: dict[str, Any], message: str) -> None:
    issues = Issues("cell.toml")
    sec = Section({"type": "sparkplug", "host": "127.0.0.1", **table}, "sink.s", issues)
    sec.get_str("type")
    spec = parse_spec("s", sec, {t.key: t for t in TAGS})
    sec.finish()
    assert spec is None or issues.items
    assert any(message in str(i) for i in issues.items), [str(i) for i in issues.items]


def test_a_cell_name_that_is_no_sparkplug_id_needs_edge_node_id(tmp_path: Path) -> None:
    from edged.errors import ConfigError

    issues = Issues("cell.toml")
    sec = Section({"type": "sparkplug", "group_id": "g"}, "sink.s", issues)
    sec.get_str("type")
    spec = parse_spec("s", sec, {})
    assert spec is not None and not issues.items

    async def write(key: str, value: Any, source: str) -> WriteResult:
        return WriteResult(False, key)

    spool = Spool.open(tmp_path / "spool", SpoolSpec(), ["s"])
    try:
        ctx = SinkContext(cell_name="line/3", tags={}, write=write, registry=CollectorRegistry(), state_dir=tmp_path)
        with pytest.raises(ConfigError, match="sink.s.edge_node_id: expected edge_node_id to be set: the cell name 'line/3'"):
            SparkplugSink(spec, spool, ctx)
    finally:
        spool.close()


async def test_cell_changes_before_the_births_and_in_quick_succession(tmp_path: Path, mosquitto: Broker) -> None:
    h = Harness(tmp_path, mosquitto)
    h.scan("press1.count", 1)
    h.scan("robot.state", "idle")
    oven = Tag("oven", "temp", "t", DataType.FLOAT64, "default", None, slot=10)
    h.tags[oven.key] = oven
    # not born yet: nothing is queued, the first births declare the changed cell
    assert h.sink.apply_cell_change(h.tags.values()).births == {"oven"}
    with Collector(mosquitto, "spBv1.0/#", client_id="sp-change") as col:
        h.start()
        try:
            msgs = await until(col, lambda m: len(of(m, "DBIRTH")) == 3, "births with the oven")
            first = {r.topic.rsplit("/", 1)[1]: p for r, p in of(msgs, "DBIRTH")}
            assert set(first) == {"press1", "robot", "oven"}
            known = {m.alias for p in first.values() for m in p.metrics}
            # the robot goes and comes back before the sink had a turn: DDEATH, then a DBIRTH with fresh aliases
            robot = {k: h.tags.pop(k) for k in [k for k in h.tags if k.startswith("robot.")]}
            assert h.sink.apply_cell_change(h.tags.values()).deaths == {"robot"}
            h.tags.update(robot)
            assert h.sink.apply_cell_change(h.tags.values()).births == {"robot"}
            msgs = await until(col, lambda m: len(of(m, "DBIRTH")) == 4, "the robot's new DBIRTH")
            assert [r.topic.rsplit("/", 1)[1] for r, _ in of(msgs, "DDEATH")] == ["robot"]
            reborn = of(msgs, "DBIRTH")[3][1].by_name()
            assert set(reborn) == {"state", "enable", "speed"} and reborn["state"].value == "idle"
            assert not {m.alias for m in reborn.values()} & known  # a removed metric's alias is never reused
            h.scan("robot.state", "run")
            msgs = await until(col, lambda m: any(x.alias == reborn["state"].alias and x.value == "run"
                                                  for _, p in of(m, "DDATA") for x in p.metrics), "robot DDATA")
            assert len(of(msgs, "NBIRTH")) == 1
            seqs = [p.seq for _, p in of(msgs, "NBIRTH", "DBIRTH", "DDATA", "NDATA", "DDEATH")]
            assert seqs == list(range(len(seqs)))
            kinds = [kind(r) for r in msgs if kind(r) in ("DDEATH", "DBIRTH")]
            assert kinds[-2:] == ["DDEATH", "DBIRTH"]
        finally:
            await h.stop()
