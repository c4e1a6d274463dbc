"""The MQTT sink in-process against a real mosquitto: batching, order, acks after PUBACK, outage, TLS, config."""
from __future__ import annotations

import asyncio
import json
import time
import tomllib
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from edged.schema import Issues, Section
from edged.sinks.base import SinkContext, WriteResult
from edged.sinks.mqtt import MqttSink, MqttSpec, match_topic, parse_spec, samples_of
from edged.sinks.mqtt_conn import MqttConnection
from edged.spool.config import SpoolSpec
from edged.spool.spool import Spool
from edged.tag import Sample
from mosquitto_support import Broker, Collector, make_password_file, mosquitto, mosquitto_tls  # noqa: F401


async def _no_write(key: str, value: object, source: str) -> WriteResult:
    return WriteResult(False, key, error="no writes here")


def make_sink(tmp_path: Path, broker: Broker, spool: Spool, **kw) -> MqttSink:
    conn_kw = {k: kw.pop(k) for k in list(kw) if k.startswith("tls") or k == "port"}
    conn = MqttConnection(host="127.0.0.1", port=conn_kw.pop("port", broker.port), client_id="edged-test",
                          backoff_initial_s=0.05, backoff_max_s=0.5, **conn_kw)
    spec = MqttSpec(name="up", conn=conn, **kw)
    ctx = SinkContext(cell_name="line3", tags={}, write=_no_write, registry=CollectorRegistry(), state_dir=tmp_path)
    return MqttSink(spec, spool, ctx)


async def until(cond, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        await asyncio.sleep(0.02)
    return cond()


def counters(col: Collector, topic_prefix: str = "line3/") -> list[int]:
    out = []
    for m in col.snapshot():
        if m.topic.startswith(topic_prefix + "press") or m.topic.startswith(topic_prefix + "oven"):
            out += [s["value"] for s in samples_of(json.loads(m.payload))]
    return out


def batch(start: int, n: int, device: str = "press1", tag: str = "count") -> list[Sample]:
    return [Sample(10**18 + v, device, tag, v, 0) for v in range(start, start + n)]


@pytest.fixture
async def spool(tmp_path: Path):
    sp = Spool.open(tmp_path / "spool", SpoolSpec(), ["up"])
    yield sp
    sp.close()


async def stop(sink: MqttSink, task: asyncio.Task) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await sink.close()


async def test_samples_arrive_batched_in_order_and_leave_the_spool_after_puback(
        tmp_path: Path, mosquitto: Broker, spool: Spool) -> None:
    col = Collector(mosquitto, ["line3/#"], client_id="col-basic").start()
    sink = make_sink(tmp_path, mosquitto, spool, max_message_samples=100)
    task = asyncio.create_task(sink.run())
    for i in range(20):
        spool.append(batch(i * 250, 250))
    assert await until(lambda: len(counters(col)) >= 5000), len(counters(col))
    assert counters(col) == list(range(5000))
    data = [m for m in col.snapshot() if m.topic == "line3/press1"]
    assert len(data) == 50 and all(m.qos == 1 for m in data)
    first = json.loads(data[0].payload)
    assert first["cell"] == "line3" and first["device"] == "press1"
    assert first["columns"] == ["ts_ns", "device", "tag", "value", "quality"]
    assert first["samples"][0] == [10**18, "press1", "count", 0, 0]
    assert await until(lambda: spool.stats().depth_samples == 0)
    status = [m for m in col.snapshot() if m.topic == "line3/status"]
    assert status and status[-1].payload == b"online"
    await stop(sink, task)
    col.stop()
    # the retained status says offline after a clean shutdown
    late = Collector(mosquitto, ["line3/status"], client_id="col-late").start()
    assert late.wait_for(lambda ms: any(m.payload == b"offline" and m.retain for m in ms), timeout=20)
    late.stop()


async def test_objects_payload_format(tmp_path: Path, mosquitto: Broker, spool: Spool) -> None:
    col = Collector(mosquitto, ["line3/#"], client_id="col-objects").start()
    sink = make_sink(tmp_path, mosquitto, spool, payload="objects", topic="{cell}/{device}/{tag}")
    task = asyncio.create_task(sink.run())
    spool.append([Sample(10**18, "oven", "t", float("nan"), 2), Sample(10**18 + 1, "oven", "t", 1.5, 1)])
    assert await asyncio.to_thread(col.wait_for, lambda ms: any(m.topic == "line3/oven/t" for m in ms), 30)
    await stop(sink, task)
    col.stop()
    body = json.loads(next(m.payload for m in col.snapshot() if m.topic == "line3/oven/t"))
    assert body == {"cell": "line3", "device": "oven", "tag": "t", "samples": [
        {"ts_ns": 10**18, "value": "nan", "quality": "bad"}, {"ts_ns": 10**18 + 1, "value": 1.5, "quality": "uncertain"}]}
    assert samples_of(body)[1] == {"ts_ns": 10**18 + 1, "value": 1.5, "quality": "uncertain", "device": "oven",
                                   "tag": "t"}


async def test_non_finite_values_in_columns_format_become_strings(tmp_path: Path, mosquitto: Broker,
                                                                   spool: Spool) -> None:
    col = Collector(mosquitto, ["line3/#"], client_id="col-nan").start()
    sink = make_sink(tmp_path, mosquitto, spool)
    task = asyncio.create_task(sink.run())
    spool.append([Sample(1, "oven", "t", float("inf"), 2), Sample(2, "oven", "t", 2.5, 0)])
    assert await asyncio.to_thread(col.wait_for, lambda ms: any(m.topic == "line3/oven" for m in ms), 30)
    await stop(sink, task)
    col.stop()
    body = json.loads(next(m.payload for m in col.snapshot() if m.topic == "line3/oven"))
    assert body["samples"] == [[1, "oven", "t", "inf", 2], [2, "oven", "t", 2.5, 0]]


async def test_per_tag_topics_and_gap_messages(tmp_path: Path, mosquitto: Broker) -> None:
    sp = Spool.open(tmp_path / "spool", SpoolSpec(max_bytes=4096, overflow="drop_newest"), ["up"])
    for i in range(20):
        sp.append(batch(i * 10, 5, "press1", "a") + batch(i * 10 + 5, 5, "press1", "b"))
    sp.flush()  # committed (and the overflow counted) by the spool's writer thread
    dropped = sp.stats().dropped_total
    assert dropped > 0
    col = Collector(mosquitto, ["line3/#"], client_id="col-tag").start()
    sink = make_sink(tmp_path, mosquitto, sp, topic="{cell}/{device}/{tag}")
    task = asyncio.create_task(sink.run())
    assert await until(lambda: sp.stats().depth_samples == 0 and sp.take("up", 1) is None)
    assert col.wait_for(lambda ms: sum(1 for m in ms if m.topic == "line3/gap") >= 1, timeout=30)
    await stop(sink, task)
    col.stop()
    msgs = col.snapshot()
    topics = {m.topic for m in msgs}
    assert {"line3/press1/a", "line3/press1/b", "line3/gap"} <= topics
    got = sum(len(samples_of(json.loads(m.payload))) for m in msgs if m.topic.startswith("line3/press1/"))
    gaps = [g for m in msgs if m.topic == "line3/gap" for g in json.loads(m.payload)["gaps"]]
    assert sum(g["count"] for g in gaps) == dropped == 200 - got
    body = json.loads(next(m.payload for m in msgs if m.topic == "line3/press1/a"))
    assert body["tag"] == "a" and {s["tag"] for s in samples_of(body)} == {"a"}
    sp.close()


async def test_broker_outage_loses_nothing_and_keeps_order(tmp_path: Path, mosquitto: Broker, spool: Spool) -> None:
    col = Collector(mosquitto, ["line3/#"], client_id="col-outage").start()
    sink = make_sink(tmp_path, mosquitto, spool, max_message_samples=50)
    task = asyncio.create_task(sink.run())
    n = 0
    for _ in range(10):
        spool.append(batch(n, 100))
        n += 100
    assert await until(lambda: sink.connected.is_set())
    await asyncio.to_thread(mosquitto.stop)
    assert await until(lambda: not sink.connected.is_set())
    for _ in range(30):  # acquisition continues into the spool while the broker is away
        spool.append(batch(n, 100))
        n += 100
        await asyncio.sleep(0.01)
    assert spool.stats().depth_samples > 0
    await asyncio.to_thread(mosquitto.start)
    assert await until(lambda: spool.stats().depth_samples == 0, timeout=90)
    assert col.wait_for(lambda ms: set(range(n)) <= set(counters(col)), timeout=60)
    await stop(sink, task)
    col.stop()
    seen = counters(col)
    firsts = list(dict.fromkeys(seen))  # first occurrences, duplicates removed
    assert firsts == list(range(n)), "out of order or missing"


async def test_tls_with_client_certificate_connects_and_without_is_refused_clearly(
        tmp_path: Path, mosquitto_tls: Broker, spool: Spool) -> None:
    pki = mosquitto_tls.pki
    assert pki is not None
    spool.append(batch(0, 10))
    bad = make_sink(tmp_path, mosquitto_tls, spool, port=mosquitto_tls.tls_port, tls=True, tls_ca=str(pki.ca_cert))
    task = asyncio.create_task(bad.run())
    assert await until(lambda: bool(bad.last_error), timeout=30)
    await stop(bad, task)
    assert "client certificate" in bad.last_error, bad.last_error
    assert spool.stats().depth_samples == 10
    col = Collector(mosquitto_tls, ["line3/#"], client_id="col-tls").start()
    good = make_sink(tmp_path, mosquitto_tls, spool, port=mosquitto_tls.tls_port, tls=True,
                     tls_ca=str(pki.ca_cert), tls_cert=str(pki.client_cert), tls_key=str(pki.client_key))
    task = asyncio.create_task(good.run())
    assert await until(lambda: spool.stats().depth_samples == 0, timeout=30), good.last_error
    await stop(good, task)
    assert col.wait_for(lambda ms: counters(col) == list(range(10)), timeout=20)
    col.stop()


async def test_username_and_password_from_a_file_or_the_environment(tmp_path: Path, spool: Spool,
                                                                   monkeypatch: pytest.MonkeyPatch,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    pw = make_password_file(tmp_path / "broker" / "passwd", {"edge": "correct horse"})
    broker = Broker(directory=tmp_path / "broker", anonymous=False, password_file=pw).start()
    try:
        secret = tmp_path / "mqtt.pass"
        secret.write_text("wrong password\n")
        spool.append(batch(0, 5))
        bad = make_sink(tmp_path, broker, spool)
        bad.spec.conn.username, bad.spec.conn.password_file = "edge", str(secret)
        task = asyncio.create_task(bad.run())
        assert await until(lambda: bool(bad.last_error), timeout=30)
        await stop(bad, task)
        assert "username or password" in bad.last_error or "not authorised" in bad.last_error, bad.last_error
        assert spool.stats().depth_samples == 5
        monkeypatch.setenv("EDGED_TEST_MQTT_PW", "correct horse")
        good = make_sink(tmp_path, broker, spool)
        good.spec.conn.username, good.spec.conn.password_env = "edge", "EDGED_TEST_MQTT_PW"
        task = asyncio.create_task(good.run())
        assert await until(lambda: spool.stats().depth_samples == 0, timeout=30), good.last_error
        await stop(good, task)
        assert all("correct horse" not in r.getMessage() and "wrong password" not in r.getMessage()
                   for r in caplog.records)
    finally:
        broker.stop()


async def test_mqtt_5_with_a_persistent_session(tmp_path: Path, mosquitto: Broker, spool: Spool) -> None:
    col = Collector(mosquitto, ["line3/#"], client_id="col-v5").start()
    sink = make_sink(tmp_path, mosquitto, spool)
    sink.spec.conn.protocol = "5"
    task = asyncio.create_task(sink.run())
    spool.append(batch(0, 100))
    assert await until(lambda: spool.stats().depth_samples == 0, timeout=30), sink.last_error
    await stop(sink, task)
    assert col.wait_for(lambda ms: counters(col) == list(range(100)), timeout=20)
    col.stop()


def test_match_topic() -> None:
    assert match_topic("{cell}/cmd/{device}/{tag}", "line3", "line3/cmd/press1/sp") == ("press1", "sp")
    assert match_topic("{cell}/cmd/{device}/{tag}", "line3", "other/cmd/press1/sp") is None
    assert match_topic("{cell}/cmd/{device}/{tag}", "line3", "line3/cmd/press1") is None
    assert match_topic("plant/{cell}/w/{device}/{tag}", "c", "plant/c/w/d/t") == ("d", "t")


def _parse(text: str) -> tuple[MqttSpec, list[str]]:
    issues = Issues("cell.toml")
    sec = Section(tomllib.loads(text), "sink.up", issues)
    spec = parse_spec("up", sec, {})
    sec.finish()
    return spec, [f"{i.path}: {i.message}" for i in issues.items]


@pytest.mark.parametrize("text, error", [
    ("password = 'hunter2'", "sink.up.password: a password must not be written in the cell file"),
    ("username = 'u'\npassword_file = 'rel/path'", "sink.up.password_file: expected an absolute file path"),
    ("password_env = 'X'", "sink.up.username: missing required key (a password needs a username)"),
    ("username = 'u'\npassword_env = 'X'\npassword_file = '/x'", "sink.up.password_env: expected either"),
    ("tls_cert = '/c.pem'", "sink.up.tls_key: expected tls_cert and tls_key together"),
    ("tls_ca = 'ca.pem'", "sink.up.tls_ca: expected an absolute file path, found 'ca.pem'"),
    ("topic = '{cell}/{machine}'", "sink.up.topic: expected placeholders among {cell}, {device}, {tag}, found {machine}"),
    ("topic = '{cell}/all'", "sink.up.topic: expected the placeholder(s) {device}"),
    ("topic = '{cell}/+/{device}'", "sink.up.topic: expected a topic without wildcards"),
    ("command_topic = '{cell}/cmd/{device}'", "sink.up.command_topic: expected the placeholder(s) {tag}"),
    ("qos = 3", "sink.up.qos: expected a value between 0 and 2, found 3"),
    ("client_id = 'a/b'", "sink.up.client_id: expected a client id without"),
    ("max_inflight = 0", "sink.up.max_inflight: expected a value between 1 and 65535, found 0"),
    ("hostname = 'x'", "sink.up.hostname: unknown key"),
    ("payload = 'csv'", "sink.up.payload: expected one of 'columns', 'objects', found 'csv'"),
])
def test_mqtt_config_errors(text: str, error: str) -> None:
    _, errors = _parse(text)
    assert any(e.startswith(error) for e in errors), errors


def test_mqtt_config_values_and_no_secret_in_the_spec(monkeypatch, tmp_path: Path) -> None:
    secret = tmp_path / "pass"
    secret.write_text("s3cret\n")
    spec, errors = _parse(f"host = 'broker.lan'\nusername = 'edge'\npassword_file = '{secret}'\n"
                          "tls_ca = '/etc/ca.pem'\ntopic = '{cell}/{device}/{tag}'\nqos = 0\nmax_inflight = 8\n")
    assert not errors
    c = spec.conn
    assert (c.host, c.port, c.tls, c.client_id, spec.qos, spec.max_inflight, spec.per_tag) == \
        ("broker.lan", 8883, True, "edged-mqtt-up", 0, 8, True)
    assert "s3cret" not in repr(spec)
    assert c.password() == "s3cret"
    monkeypatch.setenv("EDGED_TEST_PW", "from-env")
    spec, _ = _parse("username = 'edge'\npassword_env = 'EDGED_TEST_PW'\n")
    assert spec.conn.password() == "from-env" and spec.conn.port == 1883
