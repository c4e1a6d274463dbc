"""The Sparkplug B sink (``type = "sparkplug"``): births, DDATA from the spool, NDEATH as the Will, STATE, commands.

Delivery: NDATA/DDATA are QoS 0 (the Sparkplug rule), so "acknowledged" here means every message
of a batch was handed to the socket of a live MQTT connection (paho reports a QoS-0 publish as
done once it has been written). Only then is the batch acked in the spool; a batch that could not
be written is released and sent again after the next births, flagged ``is_historical``. Data
published while disconnected is never acked because nothing is published while disconnected.
"""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import aiomqtt
from prometheus_client import CollectorRegistry, Counter, Gauge

import edged
from edged.echo import echo
from edged.errors import ConfigError, ConfigIssue
from edged.schema import Section
from edged.sinks.base import Sink, SinkContext
from edged.sinks.mqtt_conn import (MqttConnection, backoff_delays, describe_connect_error, make_client,
                                   parse_connection)
from edged.sinks.sparkplug_node import (BdSeqStore, CellChange, Command, EdgeNode, Outgoing, state_topics,
                                        valid_id)
from edged.tag import Tag
from edged.upstream.commands import CommandGate
from edged.upstream.metrics import sink_metrics

log = logging.getLogger(__name__)

IDLE_WAIT_S = 1.0
HEALTH_INTERVAL_S = 10.0
COMMAND_QUEUE_MAX = 1000
# The largest primary host STATE payload read (a real one is {"online": true, "timestamp": ...}).
MAX_STATE_BYTES = 4096
# The default bound of an NCMD/DCMD payload, in bytes, checked before it is decoded (``max_command_bytes``).
MAX_COMMAND_BYTES = 65536


@dataclass(slots=True)
class SparkplugSpec:
    """A ``[sink.<name>]`` table of type sparkplug."""

    name: str
    conn: MqttConnection
    group_id: str
    edge_node_id: str | None = None  # None: the cell name
    client_id_set: bool = False  # False: the client id is edged-<group>-<edge node>-<sink>, unique per broker
    primary_host: str | None = None
    batch_max: int = 1000
    max_metrics_per_message: int = 500
    birth_wait_s: float = 5.0
    commands: bool = True
    command_rate_per_s: float = 5.0
    command_burst: int = 5
    max_command_bytes: int = MAX_COMMAND_BYTES
    kind: str = "sparkplug"


def parse_spec(name: str, sec: Section, tags: dict[str, Tag]) -> SparkplugSpec | None:
    """Read a sparkplug sink table (records issues on ``sec``; returns None when it is invalid)."""
    before = len(sec.issues.items)
    client_id_set = sec.has("client_id")
    conn = parse_connection(sec, default_client_id=f"edged-sparkplug-{name}")
    group_id = sec.get_str("group_id")
    edge_node_id = sec.get_str("edge_node_id", None)
    primary_host = sec.get_str("primary_host", None)
    for key, value in (("group_id", group_id), ("edge_node_id", edge_node_id), ("primary_host", primary_host)):
        if value is not None and not valid_id(value):
            sec.error(key, f"expected a Sparkplug id without '/', '+' or '#', found {value!r}")
    batch_max = sec.get_int("batch_max", 1000, min=1, max=100_000)
    max_metrics = sec.get_int("max_metrics_per_message", 500, min=1, max=100_000)
    birth_wait_s = sec.get_float("birth_wait_s", 5.0, min=0.0, max=600.0)
    commands = sec.get_bool("commands", True)
    rate = sec.get_float("command_rate_per_s", 5.0, min=0.01, max=1000.0)
    burst = sec.get_int("command_burst", 5, min=1, max=1000)
    max_command_bytes = sec.get_int("max_command_bytes", MAX_COMMAND_BYTES, min=64, max=16_777_216)
    if len(sec.issues.items) != before or conn is None or group_id is None:
        return None
    return SparkplugSpec(name=name, conn=conn, group_id=group_id, edge_node_id=edge_node_id,
                         client_id_set=client_id_set,
                         primary_host=primary_host, batch_max=batch_max, max_metrics_per_message=max_metrics,
                         birth_wait_s=birth_wait_s,
                         commands=bool(commands), command_rate_per_s=rate, command_burst=burst,
                         max_command_bytes=max_command_bytes)


class _Metrics:
    """Sparkplug-only Prometheus metrics of every sparkplug sink in one registry (labelled by sink).

    The metrics every sink has (samples published and acked, connected, connects, commands) are the
    shared ones of ``edged.upstream.metrics``.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.messages = Counter("edged_sparkplug_messages", "Sparkplug messages published, by message type.",
                                ["sink", "type"], registry=registry)
        self.metrics = Counter("edged_sparkplug_metrics", "Metric values published in DDATA, live or historical.",
                               ["sink", "kind"], registry=registry)
        self.dropped = Counter("edged_sparkplug_samples_dropped",
                               "Spooled samples not published: unknown tag, or a value that does not fit its type.",
                               ["sink", "reason"], registry=registry)
        self.rebirths = Counter("edged_sparkplug_rebirths", "Rebirths requested by NCMD Node Control/Rebirth.",
                                ["sink"], registry=registry)
        self.born = Gauge("edged_sparkplug_born", "1 while the edge node is born (connected, births sent).",
                          ["sink"], registry=registry)


_METRICS: "weakref.WeakKeyDictionary[CollectorRegistry, _Metrics]" = weakref.WeakKeyDictionary()


def _metrics_for(registry: CollectorRegistry) -> _Metrics:
    if registry not in _METRICS:
        _METRICS[registry] = _Metrics(registry)
    return _METRICS[registry]


def _check_cancelled() -> None:
    """Raise CancelledError if this task was asked to stop but the request got lost on the way.

    In Python 3.11 ``asyncio.wait_for`` (used by aiomqtt's publish and connect and by the spool's
    wait) returns normally when the awaited future completes in the same instant as the task is
    cancelled. The task's ``cancelling()`` count still shows the request, so every loop checks it.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


class _Reconnect(Exception):
    """End the session on purpose (the primary host went offline) and connect again at once."""


class SparkplugSink(Sink):
    """A Sparkplug B edge node for the cell: devices are edged devices, metrics are tags."""

    def __init__(self, spec: SparkplugSpec, spool: Any, ctx: SinkContext) -> None:
        super().__init__(spec, spool, ctx)
        self.spec: SparkplugSpec = spec
        node_id = spec.edge_node_id or ctx.cell_name
        if not valid_id(node_id):  # device names cannot contain these characters (schema.valid_name)
            raise ConfigError([ConfigIssue("cell", f"sink.{spec.name}.edge_node_id",
                                           "expected edge_node_id to be set: the cell name "
                                           f"{node_id!r} contains '/', '+' or '#', so it cannot be the "
                                           "Sparkplug edge node id")])
        self.conn: MqttConnection = spec.conn if spec.client_id_set else dataclasses.replace(
            spec.conn, client_id=f"edged-{spec.group_id}-{node_id}-{spec.name}"[:128])
        self.node = EdgeNode(spec.group_id, node_id, ctx.tags.values(), spec.max_metrics_per_message)
        state_dir = Path(ctx.state_dir) if ctx.state_dir is not None else Path("var")
        self.bdseq = BdSeqStore(state_dir / "sparkplug" / f"{spec.name}.bdseq")
        self.m = _metrics_for(ctx.registry)
        self.shared = sink_metrics(ctx.registry)
        self.m.born.labels(spec.name).set(0)
        self.shared.connected.labels(spec.name).set(0)
        # with commands = false the gate only counts and rate-limits the log lines of the refusals
        self.gate = CommandGate(ctx, spec.name, rate_per_s=spec.command_rate_per_s, burst=spec.command_burst)
        self._command_defect_logged = False
        self._wake = asyncio.Event()
        self._rebirth = False
        # devices a cell change (reload) left to be reborn or declared dead in the current session
        self._pending_births: set[str] = set()
        self._pending_deaths: set[str] = set()
        self._host_online = spec.primary_host is None
        self._host_ts = -1
        self._bad_state_logged = False  # one warning per run of bad STATE messages
        self._host_changed = asyncio.Event()
        self._client: aiomqtt.Client | None = None
        self._born = False
        self._birth_started = False
        self._session_born = False
        self._unknown_logged: set[str] = set()
        self._commands: asyncio.Queue[Command] = asyncio.Queue(maxsize=COMMAND_QUEUE_MAX)
        self.health_interval_s = HEALTH_INTERVAL_S
        self._health_last = 0.0

    # -- the outer loop ------------------------------------------------------------------------
    async def run(self) -> None:
        """Connect, be born, forward; on any upstream failure reconnect with backoff and jitter."""
        delays = backoff_delays(self.conn.backoff_initial_s, self.conn.backoff_max_s)
        failing = False
        while True:
            _check_cancelled()
            self._session_born = False
            try:
                await self._session()
            except _Reconnect as exc:
                log.info("sink %s: %s; reconnecting", self.name, exc)
                delays = backoff_delays(self.conn.backoff_initial_s, self.conn.backoff_max_s)
                continue
            except (aiomqtt.MqttError, OSError) as exc:
                if not failing or self._session_born:
                    log.warning("sink %s: %s unavailable: %s", self.name, self.conn.describe(),
                                describe_connect_error(exc))
                failing = True
            except Exception:  # a bug must not stop the sink for good: log it, back off, start over
                log.exception("sink %s: unexpected error; reconnecting", self.name)
                failing = True
            finally:
                self._client = None
                self._set_born(False)
                self._birth_started = False
                self.shared.connected.labels(self.name).set(0)
            _check_cancelled()
            if self._session_born:  # a working session ended: start the backoff from the beginning
                delays = backoff_delays(self.conn.backoff_initial_s, self.conn.backoff_max_s)
            await asyncio.sleep(next(delays))

    async def _session(self) -> None:
        """One MQTT connection: Will = NDEATH with a fresh bdSeq, subscriptions, then births and data."""
        bd_seq = self.bdseq.next()
        will = aiomqtt.Will(self.node.topics.node("NDEATH"), self.node.death_payload(bd_seq), qos=1, retain=False)
        client = make_client(self.conn, will=will, clean_start=True)
        async with client:
            self._client = client
            self.shared.connects.labels(self.name).inc()
            self.shared.connected.labels(self.name).set(1)
            log.info("sink %s: connected to %s as edge node %s/%s (bdSeq %d)", self.name, self.conn.describe(),
                     self.node.topics.group_id, self.node.topics.edge_node_id, bd_seq)
            topics = list(self.node.topics.command_filters())
            if self.spec.primary_host:
                # wait for the host's (retained) STATE on this connection, whatever it said before
                self._host_online = False
                topics += state_topics(self.spec.primary_host)
            await client.subscribe([(t, 1) for t in topics])
            # commands of an earlier connection are dropped: a write must not arrive late and unexpected
            self._commands = asyncio.Queue(maxsize=COMMAND_QUEUE_MAX)
            _check_cancelled()
            # Three tasks supervised by hand (not a TaskGroup: in Python 3.11 a TaskGroup whose child
            # fails leaves its parent marked as cancelling, which hides real stop requests).
            tasks = [asyncio.create_task(self._receive(client), name=f"sink:{self.name}:receive"),
                     asyncio.create_task(self._execute(), name=f"sink:{self.name}:commands"),
                     asyncio.create_task(self._forward(client, bd_seq), name=f"sink:{self.name}:forward")]
            try:
                await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)  # none ends while all is well
            finally:
                for t in tasks:
                    t.cancel()
                await asyncio.wait(tasks)
            first = next((t.exception() for t in tasks if not t.cancelled() and t.exception() is not None), None)
            if isinstance(first, _Reconnect):
                await self._publish_death(client, bd_seq)
            raise first or aiomqtt.MqttError("the MQTT session ended without an error")

    def _set_born(self, born: bool) -> None:
        self._born = born
        self.m.born.labels(self.name).set(1 if born else 0)

    # -- births and forwarding -----------------------------------------------------------------
    async def _forward(self, client: aiomqtt.Client, bd_seq: int) -> None:
        """Births (after the primary host is online), then DDATA batches from the spool, acked once written."""
        try:
            while True:
                _check_cancelled()
                if not self._host_online:
                    if self._born:
                        raise _Reconnect(f"primary host {self.spec.primary_host} went offline")
                    log.info("sink %s: waiting for primary host %s to be online", self.name, self.spec.primary_host)
                    while not self._host_online:
                        self._host_changed.clear()
                        await self._host_changed.wait()
                if not self._born or self._rebirth:
                    self._rebirth = False
                    await self._births(client, bd_seq)
                if self._pending_births or self._pending_deaths:
                    await self._device_changes(client)
                await self._health(client)
                batch = self.spool.take(self.name, self.spec.batch_max)
                if batch is None:
                    await self._idle()
                    continue
                try:
                    await self._publish_batch(client, batch)
                except BaseException:
                    self.spool.release(batch)
                    raise
                self.spool.ack(batch)
                self.shared.acked.labels(self.name).inc(len(batch.samples))
        except asyncio.CancelledError:
            if self._birth_started:  # an NBIRTH may be out: say goodbye before the clean DISCONNECT
                await self._publish_death(client, bd_seq)
            raise

    async def _births(self, client: aiomqtt.Client, bd_seq: int) -> None:
        values = await self._current_values()
        out = self.node.births(bd_seq, values, node_values=self._node_values())
        self._pending_births.clear()  # these births declare every device as the node knows it now
        self._pending_deaths.clear()
        self._birth_started = True
        self._health_last = asyncio.get_running_loop().time()
        for msg in out:
            await self._publish(client, msg)
        self._set_born(True)
        self._session_born = True
        log.info("sink %s: born (NBIRTH + %d DBIRTH, %d of %d tag values known)", self.name, len(out) - 1,
                 len(values.keys() & self.ctx.tags.keys()), len(self.ctx.tags))

    async def _current_values(self, keys: Iterable[str] | None = None) -> dict[str, tuple[Any, int, int]]:
        """Current values for births; wait (up to birth_wait_s) until ``keys`` (default: every tag) have one,
        for the first scans right after start or after a device was added."""
        deadline = asyncio.get_running_loop().time() + self.spec.birth_wait_s
        while True:
            values = self.ctx.current_values()
            wanted = self.ctx.tags.keys() if keys is None else set(keys) & self.ctx.tags.keys()
            if wanted <= values.keys() or asyncio.get_running_loop().time() >= deadline:
                return values
            await asyncio.sleep(0.05)

    # -- a changed cell (reload) ----------------------------------------------------------------
    def apply_cell_change(self, tags: Iterable[Tag]) -> CellChange:
        """Take the reloaded cell's tags; send the DBIRTHs and DDEATHs the change needs, and only those.

        Called on the event loop by the reload once the new tags are in place. The edge node compares
        them with the metrics it declared (see ``EdgeNode.change_cell``): unchanged metrics keep their
        aliases; a device with an added, removed or retyped tag, or a new device, gets a DBIRTH of its
        own; a removed device gets a DDEATH; a change of connection settings only sends nothing; the
        NBIRTH is never repeated (bdSeq and seq go on). The messages are published by the session
        before its next DDATA (DDEATHs first); when the node is not born they are not needed, as the
        next births declare everything. Returns what the change needs.
        """
        change = self.node.change_cell(tags)
        if not change.empty:
            self._pending_deaths |= change.deaths
            self._pending_births -= change.deaths
            self._pending_births |= change.births
            log.info("sink %s: the cell changed: %s", self.name, ", ".join(change.describe()))
            self._wake.set()
        return change

    async def _device_changes(self, client: aiomqtt.Client) -> None:
        """Publish the DDEATHs, then the DBIRTHs, that cell changes left pending (seq goes on from the last
        message: Sparkplug 3.0, 4.2.2.1 / 4.2.2.3, tck-id-payloads-sequence-num-incrementing)."""
        deaths, self._pending_deaths = self._pending_deaths, set()
        for device in sorted(deaths):
            msg = self.node.device_death(device)
            if msg is not None:
                await self._publish(client, msg)
        if not self._pending_births:
            return
        keys = [t.key for d in self._pending_births for t in self.node.devices.get(d, ())]
        values = await self._current_values(keys)  # an added device's first scan
        births, self._pending_births = self._pending_births, set()  # a change may have come meanwhile
        for device in sorted(births):
            if device in self.node.devices:
                await self._publish(client, self.node.device_birth(device, values))

    def _node_values(self) -> dict[str, Any]:
        stats = self.spool.stats()
        return {"Node Info/Version": edged.__version__,
                "Node Info/Spool Backlog": stats.lag_samples.get(self.name, 0),
                "Node Info/Samples Lost": stats.dropped_total}

    async def _health(self, client: aiomqtt.Client) -> None:
        """Every health_interval_s, NDATA with the node info metrics that changed."""
        now = asyncio.get_running_loop().time()
        if now < self._health_last + self.health_interval_s:
            return
        self._health_last = now
        msg = self.node.node_data(self._node_values())
        if msg is not None:
            await self._publish(client, msg)

    async def _publish_batch(self, client: aiomqtt.Client, batch: Any) -> None:
        for gap in batch.gaps:
            log.warning("sink %s: the spool lost %d sample(s) of device %s before they could be sent", self.name,
                        gap.count, gap.device)
        new = self.node.learn(batch.samples)
        if new:  # Sparkplug declares every metric in a birth: a DBIRTH of its device before its first value
            devices = {self.node.tags[k].device for k in new}
            log.info("sink %s: %d new metric(s) not among the cell's tags (control outputs or an older cell "
                     "file): %s; DBIRTH %s", self.name, len(new),
                     ", ".join(new[:10]) + (" ..." if len(new) > 10 else ""), ", ".join(sorted(devices)))
            self._pending_births |= devices
            await self._device_changes(client)
        out, stats = self.node.data(batch.samples)
        for msg in out:
            await self._publish(client, msg)
        self.shared.published.labels(self.name).inc(stats.live + stats.historical)
        self.m.metrics.labels(self.name, "live").inc(stats.live)
        self.m.metrics.labels(self.name, "historical").inc(stats.historical)
        if stats.unknown:
            self.m.dropped.labels(self.name, "unknown_tag").inc(stats.unknown)
            new = stats.unknown_keys - self._unknown_logged
            if new:
                self._unknown_logged |= new
                log.warning("sink %s: dropping spooled samples of tags not in this cell: %s", self.name,
                            ", ".join(sorted(new)))
        if stats.unencodable:
            self.m.dropped.labels(self.name, "unencodable").inc(stats.unencodable)

    async def _publish(self, client: aiomqtt.Client, msg: Outgoing) -> None:
        await client.publish(msg.topic, msg.payload, qos=0, retain=False)
        self.m.messages.labels(self.name, msg.kind).inc()
        self.shared.messages.labels(self.name).inc()

    async def _publish_death(self, client: aiomqtt.Client, bd_seq: int) -> None:
        """Publish NDEATH ourselves before a deliberate disconnect (the broker sends the Will only on loss)."""
        with contextlib.suppress(aiomqtt.MqttError, OSError, asyncio.TimeoutError):
            await asyncio.wait_for(client.publish(self.node.topics.node("NDEATH"), self.node.death_payload(bd_seq),
                                                  qos=1, retain=False), timeout=5.0)
            self.m.messages.labels(self.name, "NDEATH").inc()
        self._set_born(False)
        self._birth_started = False

    async def _idle(self) -> None:
        """Wait for new spool data, a rebirth request or a primary host change, whichever comes first."""
        self._wake.clear()
        due = self._health_last + self.health_interval_s - asyncio.get_running_loop().time()
        timeout = max(0.0, min(IDLE_WAIT_S, due))
        waiter = asyncio.ensure_future(self.spool.wait(self.name, timeout=timeout))
        woken = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait({waiter, woken}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (waiter, woken):
                t.cancel()
            await asyncio.gather(waiter, woken, return_exceptions=True)

    # -- incoming: STATE and commands -----------------------------------------------------------
    async def _receive(self, client: aiomqtt.Client) -> None:
        state = state_topics(self.spec.primary_host) if self.spec.primary_host else []
        async for message in client.messages:
            _check_cancelled()
            topic = message.topic.value
            payload = message.payload if isinstance(message.payload, bytes) else \
                bytes(message.payload) if isinstance(message.payload, bytearray) else str(message.payload).encode()
            if topic in state:
                self._on_state(topic, payload)
                continue
            for cmd in self._decode_command(topic, payload):
                try:
                    self._commands.put_nowait(cmd)
                except asyncio.QueueFull:
                    self._refuse(dataclasses.replace(cmd, code="overload", reason="too many commands queued"))

    def _decode_command(self, topic: str, payload: bytes) -> list[Command]:
        """The commands of one NCMD/DCMD; a payload over ``max_command_bytes`` is refused before it is decoded."""
        limit = self.spec.max_command_bytes
        if len(payload) > limit:
            return [Command("refused", topic.rsplit("/", 1)[-1] if "/DCMD/" in topic else "NCMD", "",
                            reason=f"command of {len(payload)} bytes is larger than max_command_bytes = {limit}",
                            code="too_large")]
        try:
            return self.node.parse_command(topic, payload)
        except Exception:  # a defect, not a bad command: nothing a publisher sends may end the session
            if not self._command_defect_logged:
                self._command_defect_logged = True
                log.exception("sink %s: a command on %s could not be decoded (further ones are only counted)",
                              self.name, echo(topic))
            return [Command("refused", "?", "", reason="could not be decoded", code="internal_error")]

    def _refuse(self, cmd: Command) -> None:
        """Count and audit a refused command (log lines bounded by the gate's refusal rate limit)."""
        reason = cmd.reason or "commands are disabled for this sink (commands = false)"
        key = cmd.tag.key if cmd.tag is not None else cmd.metric
        self.gate.refuse(key, cmd.value, f"sparkplug:{self.name}:{cmd.source}", "", cmd.code or "disabled",
                         f"{echo(cmd.metric)}: {reason}")

    def _on_state(self, topic: str, payload: bytes) -> None:
        parsed = parse_state(payload)
        if parsed is None:
            if not self._bad_state_logged:
                self._bad_state_logged = True
                log.warning("sink %s: ignoring a STATE message on %s that is neither JSON {\"online\": ...} nor "
                            "ONLINE/OFFLINE: %s (further ones are ignored silently until a good one)", self.name,
                            echo(topic), echo(payload[:100]))
            return
        self._bad_state_logged = False
        online, ts = parsed
        if ts is not None:
            if ts < self._host_ts:
                log.info("sink %s: ignoring a STATE message of %s older than the last one", self.name,
                         self.spec.primary_host)
                return
            self._host_ts = ts
        if online != self._host_online:
            log.info("sink %s: primary host %s is %s", self.name, self.spec.primary_host,
                     "online" if online else "offline")
        self._host_online = online
        self._host_changed.set()
        self._wake.set()

    async def _execute(self) -> None:
        """Run commands one at a time, in arrival order (writes go through the CommandGate)."""
        while True:
            _check_cancelled()
            cmd = await self._commands.get()
            if cmd.kind == "rebirth":
                log.info("sink %s: rebirth requested by %s", self.name, cmd.source)
                self.m.rebirths.labels(self.name).inc()
                self._rebirth = True
                self._wake.set()
            elif cmd.kind == "refused" or not self.spec.commands:
                self._refuse(cmd)
            else:
                assert cmd.tag is not None  # the gate audits the write, or its refusal
                await self.gate.execute(cmd.tag.key, cmd.value, source=f"sparkplug:{self.name}:{cmd.source}")

    async def close(self) -> None:
        """Nothing left to release: run() publishes NDEATH and disconnects when it is cancelled."""
        self._set_born(False)
        self.shared.connected.labels(self.name).set(0)


def parse_state(payload: bytes) -> tuple[bool, int | None] | None:
    """A primary host STATE payload: Sparkplug 3.0 JSON or legacy ONLINE/OFFLINE -> (online, timestamp)."""
    if len(payload) > MAX_STATE_BYTES:  # a STATE is a few dozen bytes; anyone may publish on its topic
        return None
    text = payload.decode("utf-8", errors="replace").strip()
    if text in ("ONLINE", "OFFLINE"):
        return text == "ONLINE", None
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: JSON nested deeper than the parser recurses
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("online"), bool):
        return None
    ts = doc.get("timestamp")
    return doc["online"], ts if isinstance(ts, int) and not isinstance(ts, bool) else None


SINK_CLASS = SparkplugSink
