"""The MQTT sink: batched JSON samples at QoS 1 from the spool, acked strictly in order after PUBACK.

Per connection: a retained ``online`` status (``offline`` as the Last Will and on shutdown), a
persistent session under a fixed client id, many messages in flight, and commands from upstream
(``{cell}/cmd/{device}/{tag}``) carried out through the CommandGate and answered on a response
topic. When the broker goes away, outstanding batches return to the spool and are published
again after reconnecting (at least once: a subscriber may see a message twice, never a hole).
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import string
import time
from dataclasses import dataclass, field
from typing import Any

import aiomqtt

from edged.echo import echo, message
from edged.schema import Section
from edged.sinks.base import Sink, SinkContext
from edged.sinks.mqtt_conn import MqttConnection, backoff_delays, describe_connect_error, \
    make_client, parse_connection
from edged.spool.spool import Spool, SpoolBatch
from edged.tag import Quality, Sample, Tag
from edged.upstream.commands import MAX_COMMAND_BYTES, CommandGate
from edged.upstream.metrics import sink_metrics

log = logging.getLogger("edged.sinks.mqtt")

QUALITY_LABELS = {int(q): q.label for q in Quality}
PLACEHOLDERS = {"cell", "device", "tag"}
PAYLOAD_FORMATS = ("columns", "objects")
PUBLISH_TIMEOUT_S = 120.0
STABLE_CONNECTION_S = 10.0


@dataclass(slots=True)
class MqttSpec:
    """A [sink.<name>] table of type "mqtt"."""

    name: str
    conn: MqttConnection
    topic: str = "{cell}/{device}"
    qos: int = 1
    retain: bool = False
    batch_samples: int = 5000
    max_message_samples: int = 500
    max_inflight: int = 64
    status_topic: str = "{cell}/status"
    gap_topic: str = "{cell}/gap"
    commands: bool = True
    command_topic: str = "{cell}/cmd/{device}/{tag}"
    response_topic: str = "{cell}/cmd_result/{device}/{tag}"
    command_rate_per_s: float = 5.0
    command_burst: int = 5
    max_command_bytes: int = MAX_COMMAND_BYTES
    payload: str = "columns"
    kind: str = "mqtt"

    @property
    def per_tag(self) -> bool:
        """True when the sample topic names the tag (one topic per tag, not per device)."""
        return "{tag}" in self.topic


def _check_template(sec: Section, key: str, value: str | None, allowed: set[str], required: set[str]) -> None:
    if value is None:
        return
    try:
        names = {f for _, f, _, _ in string.Formatter().parse(value) if f is not None}
    except ValueError as exc:
        sec.error(key, f"expected a topic template such as \"{{cell}}/{{device}}\", found {value!r} ({exc})")
        return
    bad = names - allowed
    if bad:
        sec.error(key, f"expected placeholders among {', '.join('{' + a + '}' for a in sorted(allowed))}, "
                       f"found {', '.join('{' + b + '}' for b in sorted(bad))}")
    missing = required - names
    if missing:
        sec.error(key, f"expected the placeholder(s) {', '.join('{' + m + '}' for m in sorted(missing))} "
                       f"in {value!r}")
    if "+" in value or "#" in value or value.startswith("/") or value.endswith("/") or "//" in value:
        sec.error(key, f"expected a topic without wildcards or empty levels, found {value!r}")


def parse_spec(name: str, sec: Section, tags: dict[str, Tag]) -> MqttSpec:
    """Read the connection keys and the MQTT sink keys of a sink table."""
    conn = parse_connection(sec, f"edged-mqtt-{name}")
    spec = MqttSpec(name=name, conn=conn)
    spec.topic = sec.get_str("topic", spec.topic) or spec.topic
    _check_template(sec, "topic", spec.topic, PLACEHOLDERS, {"device"})
    qos = sec.get_int("qos", 1, min=0, max=2)
    spec.qos = 1 if qos is None else qos
    spec.retain = bool(sec.get_bool("retain", False))
    spec.payload = sec.get_str("payload", spec.payload, choices=list(PAYLOAD_FORMATS)) or spec.payload
    spec.batch_samples = sec.get_int("batch_samples", spec.batch_samples, min=1, max=1_000_000) or spec.batch_samples
    spec.max_message_samples = sec.get_int("max_message_samples", spec.max_message_samples, min=1,
                                           max=100_000) or spec.max_message_samples
    spec.max_inflight = sec.get_int("max_inflight", spec.max_inflight, min=1, max=65535) or spec.max_inflight
    spec.status_topic = sec.get_str("status_topic", spec.status_topic) or spec.status_topic
    _check_template(sec, "status_topic", spec.status_topic, {"cell"}, set())
    spec.gap_topic = sec.get_str("gap_topic", spec.gap_topic) or spec.gap_topic
    _check_template(sec, "gap_topic", spec.gap_topic, {"cell"}, set())
    spec.commands = bool(sec.get_bool("commands", True))
    spec.command_topic = sec.get_str("command_topic", spec.command_topic) or spec.command_topic
    _check_template(sec, "command_topic", spec.command_topic, PLACEHOLDERS, {"device", "tag"})
    spec.response_topic = sec.get_str("response_topic", spec.response_topic) or spec.response_topic
    _check_template(sec, "response_topic", spec.response_topic, PLACEHOLDERS, set())
    if spec.response_topic == spec.command_topic:
        sec.error("response_topic", "expected a topic other than command_topic (edged would read its own answers)")
    spec.command_rate_per_s = sec.get_float("command_rate_per_s", 5.0, min=0.01, max=1000.0) or 5.0
    spec.command_burst = sec.get_int("command_burst", 5, min=1, max=1000) or 5
    spec.max_command_bytes = sec.get_int("max_command_bytes", MAX_COMMAND_BYTES, min=64,
                                         max=1_048_576) or MAX_COMMAND_BYTES
    return spec


# -- payloads -------------------------------------------------------------------------------------
_encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=str)


def _value(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


@dataclass(slots=True)
class Message:
    """One MQTT message to publish for a batch."""

    topic: str
    payload: bytes
    samples: int = 0
    retain: bool = False


COLUMNS = ["ts_ns", "device", "tag", "value", "quality"]
_strict = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=str,
                           check_circular=False)


def _rows_objects(part: list[Sample], per_tag: bool) -> list[dict[str, Any]]:
    labels = QUALITY_LABELS
    if per_tag:
        return [{"ts_ns": s.ts_ns, "value": _value(s.value), "quality": labels.get(s.quality, "bad")} for s in part]
    return [{"ts_ns": s.ts_ns, "tag": s.tag, "value": _value(s.value), "quality": labels.get(s.quality, "bad")}
            for s in part]


def _encode_columns(head: dict[str, Any], part: list[Sample]) -> bytes:
    """Samples as arrays in COLUMNS order, encoded straight from the Sample tuples (no per-sample objects)."""
    head["columns"] = COLUMNS
    head["samples"] = part
    try:
        return _strict.encode(head).encode()
    except ValueError:  # NaN or infinity somewhere: JSON has no literal for them, send them as strings
        head["samples"] = [s if not isinstance(s.value, float) or math.isfinite(s.value)
                           else s._replace(value=str(s.value)) for s in part]
        return _strict.encode(head).encode()


def samples_of(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The samples of a decoded sample message as dicts, whichever payload format it uses (for consumers)."""
    rows = body.get("samples", [])
    columns = body.get("columns")
    if columns is None:
        return [dict(r, device=body.get("device"), **({"tag": body["tag"]} if "tag" in body else {})) for r in rows]
    return [dict(zip(columns, r)) for r in rows]


def build_messages(spec: MqttSpec, cell: str, batch: SpoolBatch) -> list[Message]:
    """Group a batch by topic (order kept per topic), split to max_message_samples, gaps first."""
    out: list[Message] = []
    if batch.gaps:
        topic = spec.gap_topic.format(cell=cell)
        out.append(Message(topic, _encoder.encode({"cell": cell, "gaps": [g.as_dict() for g in batch.gaps]}).encode()))
    groups: dict[Any, list[Sample]] = {}
    per_tag = spec.per_tag
    if per_tag:
        for s in batch.samples:
            key = (s[1], s[2])
            g = groups.get(key)
            if g is None:
                groups[key] = [s]
            else:
                g.append(s)
    else:
        for s in batch.samples:
            g = groups.get(s[1])
            if g is None:
                groups[s[1]] = [s]
            else:
                g.append(s)
    step = spec.max_message_samples
    columns = spec.payload == "columns"
    for key, items in groups.items():
        device, tag = key if per_tag else (key, "")
        topic = spec.topic.format(cell=cell, device=device, tag=tag)
        for i in range(0, len(items), step):
            part = items[i:i + step] if len(items) > step else items
            head: dict[str, Any] = {"cell": cell, "device": device}
            if per_tag:
                head["tag"] = tag
            if columns:
                payload = _encode_columns(head, part)
            else:
                head["samples"] = _rows_objects(part, per_tag)
                payload = _encoder.encode(head).encode()
            out.append(Message(topic, payload, len(part), spec.retain))
    return out


# -- the sink ---------------------------------------------------------------------------------------
class _Lost(Exception):
    """The connection was lost while publishing (the cause is chained)."""


@dataclass(slots=True, eq=False)
class _Flight:
    """A batch whose messages are being published."""

    batch: SpoolBatch
    tasks: list[asyncio.Task] = field(default_factory=list)
    samples: int = 0
    handed: asyncio.Event = field(default_factory=asyncio.Event)  # set once every message has a task


class MqttSink(Sink):
    """Forwards the spool to an MQTT broker; see the module docstring."""

    def __init__(self, spec: MqttSpec, spool: Spool, ctx: SinkContext) -> None:
        super().__init__(spec, spool, ctx)
        self.cell = ctx.cell_name
        self.metrics = sink_metrics(ctx.registry)
        self.gate = CommandGate(ctx, spec.name, spec.command_rate_per_s, spec.command_burst)
        self.status_topic = spec.status_topic.format(cell=self.cell)
        self.client: aiomqtt.Client | None = None
        self.connected = asyncio.Event()
        self.last_error = ""
        self._window = asyncio.Semaphore(spec.max_inflight)
        self._command_defect_logged = False
        self.metrics.connected.labels(spec.name).set(0)

    # -- connection loop ------------------------------------------------------------------
    async def run(self) -> None:
        """Connect, forward and serve commands; on failures release what is in flight and reconnect."""
        delays = backoff_delays(self.spec.conn.backoff_initial_s, self.spec.conn.backoff_max_s)
        m = self.metrics
        while True:
            started = time.monotonic()
            try:
                await self._session()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any upstream failure: report once per change, retry
                message = describe_connect_error(exc) if not self.connected.is_set() \
                    else f"connection lost ({_short_error(exc)})"
                if message != self.last_error:
                    log.warning("sink %s: %s: %s; samples stay in the spool, retrying", self.name,
                                self.spec.conn.describe(), message)
                    self.last_error = message
            finally:
                self.connected.clear()
                m.connected.labels(self.name).set(0)
                self.client = None
                self.spool.release_all(self.name)
            if time.monotonic() - started > STABLE_CONNECTION_S:
                delays = backoff_delays(self.spec.conn.backoff_initial_s, self.spec.conn.backoff_max_s)
            await asyncio.sleep(next(delays))

    async def _session(self) -> None:
        spec = self.spec
        will = aiomqtt.Will(self.status_topic, b"offline", qos=1, retain=True)
        client = make_client(spec.conn, will=will, clean_start=False)
        async with client:
            self.client = client
            await client.publish(self.status_topic, b"online", qos=1, retain=True, timeout=PUBLISH_TIMEOUT_S)
            if self.last_error:
                log.info("sink %s: connected to %s again", self.name, spec.conn.describe())
            else:
                log.info("sink %s: connected to %s as %s", self.name, spec.conn.describe(), spec.conn.client_id)
            self.last_error = ""
            self.metrics.connects.labels(self.name).inc()
            self.metrics.connected.labels(self.name).set(1)
            self.connected.set()
            if spec.commands:
                filt = spec.command_topic.format(cell=self.cell, device="+", tag="+")
                await client.subscribe(filt, qos=0)  # commands are never queued for later while offline
            try:
                await self._forward_until_lost(client)
            except asyncio.CancelledError:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(client.publish(self.status_topic, b"offline", qos=1, retain=True), 2.0)
                raise

    async def _forward_until_lost(self, client: aiomqtt.Client) -> None:
        """Run the publisher, the acker and the command listener until one of them fails."""
        flights: asyncio.Queue[_Flight | None] = asyncio.Queue()
        tasks = [asyncio.create_task(self._publisher(client, flights), name=f"{self.name}:publish"),
                 asyncio.create_task(self._acker(flights), name=f"{self.name}:ack"),
                 asyncio.create_task(self._listener(client), name=f"{self.name}:commands")]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for t in done:
                t.result()
        finally:
            await _cancel_all(tasks)
            while not flights.empty():
                f = flights.get_nowait()
                if f is not None:
                    for t in f.tasks:
                        t.cancel()
                    if f.tasks:
                        self._count_retry(f)
            self._window = asyncio.Semaphore(self.spec.max_inflight)

    def _count_retry(self, flight: _Flight) -> None:
        """Count samples that were sent but not acknowledged: they will be sent again (possible duplicates)."""
        self.metrics.retried.labels(self.name).inc(flight.samples)

    async def _publisher(self, client: aiomqtt.Client, flights: "asyncio.Queue[_Flight | None]") -> None:
        spec = self.spec
        while True:
            batch = self.spool.take(self.name, spec.batch_samples)
            if batch is None:
                await self.spool.wait(self.name, timeout=5.0)
                continue
            flight = _Flight(batch, samples=len(batch.samples))
            flights.put_nowait(flight)
            for msg in build_messages(spec, self.cell, batch):
                window = self._window
                await window.acquire()
                task = asyncio.create_task(self._publish(client, msg, window))
                task.add_done_callback(_retrieve)
                flight.tasks.append(task)
            flight.handed.set()

    async def _publish(self, client: aiomqtt.Client, msg: Message, window: asyncio.Semaphore) -> None:
        t0 = time.perf_counter()
        try:
            await client.publish(msg.topic, msg.payload, qos=self.spec.qos, retain=msg.retain,
                                 timeout=PUBLISH_TIMEOUT_S)
        finally:
            window.release()
        self.metrics.latency.labels(self.name).observe(time.perf_counter() - t0)

    async def _acker(self, flights: "asyncio.Queue[_Flight | None]") -> None:
        m = self.metrics
        while True:
            flight = await flights.get()
            if flight is None:
                return
            await flight.handed.wait()  # the publisher may still be creating this batch's messages
            try:
                await asyncio.gather(*flight.tasks)
            except Exception as exc:
                for t in flight.tasks:
                    t.cancel()  # the others of this batch wait for PUBACKs that can no longer come
                self._count_retry(flight)
                raise _Lost(_short_error(exc)) from exc
            self.spool.ack(flight.batch)
            n_samples = len(flight.batch.samples)
            m.published.labels(self.name).inc(n_samples)
            m.acked.labels(self.name).inc(n_samples)
            m.messages.labels(self.name).inc(len(flight.tasks))
            if flight.batch.gaps:
                m.gaps.labels(self.name).inc(len(flight.batch.gaps))

    async def _listener(self, client: aiomqtt.Client) -> None:
        """Serve write commands; also notices a lost connection at once (the iterator raises)."""
        async for message in client.messages:
            if not self.spec.commands:
                continue
            await self._command(client, message)

    async def _command(self, client: aiomqtt.Client, message: aiomqtt.Message) -> None:
        """Carry out one command; nothing a publisher sends may end the listener (and so the connection)."""
        try:
            await self._serve_command(client, message)
        except aiomqtt.MqttError:
            raise  # the connection itself failed: reconnect
        except Exception:  # a defect, not a bad request: log the first one with its traceback, count them all
            self.metrics.commands.labels(self.name, "refused", "internal_error").inc()
            if not self._command_defect_logged:
                self._command_defect_logged = True
                log.exception("sink %s: a command on %s could not be handled (further ones are only counted)",
                              self.name, echo(str(message.topic)))

    async def _serve_command(self, client: aiomqtt.Client, message: aiomqtt.Message) -> None:
        topic = str(message.topic)
        parsed = match_topic(self.spec.command_topic, self.cell, topic)
        if parsed is None:
            return
        device, tag = parsed
        key = f"{device}.{tag}"
        source = f"mqtt:{self.name}"
        request = parse_command(message.payload, self.spec.max_command_bytes)
        if isinstance(request, Refusal):
            result = self.gate.refuse(key, request.value, source, request.request_id, request.reason, request.error)
        else:
            result = await self.gate.execute(key, request.value, source=source, request_id=request.request_id)
        if result.quiet:
            return  # beyond the refusal rate limit: counted, not answered
        answer: dict[str, Any] = {"id": request.request_id, "ok": result.ok, "tag": key[:MAX_ECHO_KEY]}
        if result.ok:
            answer.update(value=_value(result.value), old_value=_value(result.old_value))
        else:
            answer["error"] = result.error
        await self._respond(client, device, tag, answer)

    async def _respond(self, client: aiomqtt.Client, device: str, tag: str, answer: dict[str, Any]) -> None:
        topic = self.spec.response_topic.format(cell=self.cell, device=device, tag=tag)
        try:
            payload = _encoder.encode(answer).encode("utf-8", "replace")  # never fails on a stray surrogate
            await client.publish(topic, payload, qos=1, timeout=PUBLISH_TIMEOUT_S)
        except aiomqtt.MqttError as exc:
            log.warning("sink %s: could not send the command response on %s: %s", self.name, echo(topic), exc)

    async def close(self) -> None:
        """The run task was cancelled (it published ``offline`` and disconnected); nothing else is held."""
        self.metrics.connected.labels(self.name).set(0)


async def _cancel_all(tasks: list[asyncio.Task]) -> None:
    """Cancel tasks and wait for them, cancelling again any that swallowed the cancellation."""
    pending = {t for t in tasks if not t.done()}
    while pending:
        for t in pending:
            t.cancel()
        _, pending = await asyncio.wait(pending, timeout=1.0)
    for t in tasks:
        if not t.cancelled():
            t.exception()  # retrieved: the caller reports the first failure


def _short_error(exc: BaseException) -> str:
    """The innermost message of an exception chain, without secrets (MQTT errors carry none)."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return str(exc) or type(exc).__name__


def _retrieve(task: asyncio.Task) -> None:
    """Mark a publish task's failure as seen (the acker reports the first failure of a batch)."""
    if not task.cancelled():
        task.exception()


# -- commands ---------------------------------------------------------------------------------------
REQUEST_SHAPE = 'expected a JSON object {"value": ..., "id": "..."}'
MAX_REQUEST_ID = 128  # characters of a command's "id" kept (and answered)
MAX_ECHO_KEY = 256  # characters of the topic's device.tag repeated in an answer


@dataclass(frozen=True, slots=True)
class Request:
    """A well-formed command: the value to write and the caller's request id (may be empty)."""

    value: Any
    request_id: str = ""


@dataclass(frozen=True, slots=True)
class Refusal:
    """A command payload that is not a request: why (a metric ``reason`` and a message for people)."""

    reason: str
    error: str
    request_id: str = ""
    value: Any = None


def parse_command(payload: Any, max_bytes: int = MAX_COMMAND_BYTES) -> Request | Refusal:
    """Decode a command payload ``{"value": ..., "id": "..."}``; never raises.

    The size is checked before parsing (a payload nested 500,000 deep is refused unread), and a
    payload within the size but nested deeper than the parser recurses is refused, not raised.
    """
    if payload is None:
        payload = b""
    data = payload.encode("utf-8", "replace") if isinstance(payload, str) else bytes(payload) \
        if isinstance(payload, (bytes, bytearray, memoryview)) else None
    if data is None:
        return Refusal("bad_request", f"{REQUEST_SHAPE}, found a {type(payload).__name__} payload")
    if len(data) > max_bytes:
        return Refusal("too_large", f"command of {len(data)} bytes is larger than max_command_bytes = {max_bytes}")
    try:
        body = json.loads(data)
    except RecursionError:
        return Refusal("bad_request", f"{REQUEST_SHAPE}: JSON nested too deeply")
    except UnicodeDecodeError as exc:
        return Refusal("bad_request", f"{REQUEST_SHAPE}: not UTF-8 text ({exc.reason} at byte {exc.start})")
    except ValueError as exc:  # JSONDecodeError, or an integer of more than 4300 digits
        return Refusal("bad_request", f"{REQUEST_SHAPE}: {message(str(exc), 120)}")
    if not isinstance(body, dict) or "value" not in body:
        return Refusal("bad_request", REQUEST_SHAPE)
    raw_id = body.get("id", "")
    if isinstance(raw_id, bool) or not isinstance(raw_id, (str, int)):
        return Refusal("bad_request", f'{REQUEST_SHAPE}: expected "id" to be a string, found {echo(raw_id, 40)}')
    request_id = _utf8(raw_id[:MAX_REQUEST_ID]) if isinstance(raw_id, str) else \
        str(raw_id) if -10**MAX_REQUEST_ID < raw_id < 10**MAX_REQUEST_ID else "(integer too long)"
    return Request(body["value"], request_id)


def _utf8(text: str) -> str:
    """Text that encodes as UTF-8: a lone surrogate (JSON allows ``"\\udddd"``) becomes ``?``."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")


def match_topic(template: str, cell: str, topic: str) -> tuple[str, str] | None:
    """(device, tag) from a topic built by a command template, or None when it does not match."""
    t_parts = template.split("/")
    parts = topic.split("/")
    if len(t_parts) != len(parts):
        return None
    device = tag = None
    for t, p in zip(t_parts, parts):
        if t == "{device}":
            device = p
        elif t == "{tag}":
            tag = p
        elif t.format(cell=cell, device="", tag="") != p:
            return None
    if not device or not tag:
        return None
    return device, tag


SINK_CLASS = MqttSink
