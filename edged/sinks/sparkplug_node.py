"""The Sparkplug B edge-node session without I/O: topics, bdSeq store, seq counter, aliases, births, data, commands."""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from google.protobuf.message import DecodeError

from edged.sinks import sparkplug_payload as sp
from edged.sinks.sparkplug_payload import SpType
from edged.tag import DataType, Sample, Tag

log = logging.getLogger(__name__)

NAMESPACE = "spBv1.0"
REBIRTH = "Node Control/Rebirth"
BDSEQ = "bdSeq"
# Node-level metrics use aliases below TAG_ALIAS_BASE; a tag's alias is TAG_ALIAS_BASE + its slot,
# so aliases are unique across the edge node and stable for as long as the cell file's tag order is.
REBIRTH_ALIAS = 1
TAG_ALIAS_BASE = 16
# Node metrics about edged itself: name -> (alias, datatype). Born in NBIRTH, updated by NDATA.
NODE_INFO: dict[str, tuple[int, SpType]] = {
    "Node Info/Version": (2, SpType.String),
    "Node Info/Spool Backlog": (3, SpType.UInt64),  # samples this sink has not delivered yet
    "Node Info/Samples Lost": (4, SpType.UInt64),  # samples the spool dropped (full or too old)
}


def valid_id(text: str) -> bool:
    """True for a Sparkplug group, edge node or device id (UTF-8, no '/', '+' or '#')."""
    return bool(text) and not any(c in text for c in "/+#")


@dataclass(frozen=True, slots=True)
class Topics:
    """The Sparkplug topic names of one edge node."""

    group_id: str
    edge_node_id: str

    def node(self, kind: str) -> str:
        """``spBv1.0/<group>/<NBIRTH|NDEATH|NDATA|NCMD>/<node>``."""
        return f"{NAMESPACE}/{self.group_id}/{kind}/{self.edge_node_id}"

    def device(self, kind: str, device: str) -> str:
        """``spBv1.0/<group>/<DBIRTH|DDEATH|DDATA|DCMD>/<node>/<device>``."""
        return f"{NAMESPACE}/{self.group_id}/{kind}/{self.edge_node_id}/{device}"

    def command_filters(self) -> list[str]:
        """Subscriptions for this node's NCMD and all its devices' DCMD."""
        return [self.node("NCMD"), self.device("DCMD", "+")]


def state_topics(host_id: str) -> list[str]:
    """The primary host's STATE topics: Sparkplug 3.0 ``spBv1.0/STATE/<id>`` and legacy ``STATE/<id>``."""
    return [f"{NAMESPACE}/STATE/{host_id}", f"STATE/{host_id}"]


class BdSeqStore:
    """The birth/death sequence number, persisted so that it increments across restarts (0..255)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._memory: int | None = None  # the last value handed out (used when the file cannot be written)
        self._failing = False

    def last(self) -> int | None:
        """The bdSeq of the most recent connection, or None if none was recorded (or the file is unreadable)."""
        try:
            text = self.path.read_text().strip()
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("cannot read %s (%s); starting bdSeq at 0", self.path, exc)
            return None
        if not text.isdigit() or int(text) > 255:
            log.warning("ignoring invalid bdSeq %r in %s; starting at 0", text, self.path)
            return None
        return int(text)

    def next(self) -> int:
        """Advance to the bdSeq of a new MQTT connection and persist it (atomically) before it is used.

        When the file cannot be written, the sequence goes on in memory (data keeps flowing) and
        the problem is logged once, until writing works again.
        """
        last = self.last() if self._memory is None or not self._failing else self._memory
        value = 0 if last is None else (last + 1) % 256
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(self.path.name + ".tmp")
            with open(tmp, "w") as f:
                f.write(f"{value}\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except OSError as exc:
            if not self._failing:
                log.warning("cannot store the Sparkplug bdSeq in %s (%s); counting in memory, so a restart may "
                            "reuse a bdSeq", self.path, exc.strerror or exc)
            self._failing = True
        else:
            if self._failing:
                log.info("the Sparkplug bdSeq is stored in %s again", self.path)
            self._failing = False
        self._memory = value
        return value


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message to publish: topic, encoded payload, message type and seq (None for NDEATH)."""

    topic: str
    payload: bytes
    kind: str
    seq: int | None = None
    metrics: int = 0


@dataclass(frozen=True, slots=True)
class Command:
    """One metric of an NCMD/DCMD: a rebirth request, a tag write, or something edged refuses.

    ``kind`` is ``rebirth``, ``write`` or ``refused``; ``tag`` is set for writes; refusals say why in
    ``reason`` (for people) and ``code`` (a metric label: malformed, unknown_device, unknown_metric,
    null_value, unsupported).
    """

    kind: str
    source: str
    metric: str
    tag: Tag | None = None
    value: Any = None
    reason: str = ""
    code: str = ""


@dataclass(slots=True)
class DataStats:
    """What ``EdgeNode.data`` did with one batch of samples."""

    live: int = 0
    historical: int = 0
    unknown: int = 0
    unencodable: int = 0
    unknown_keys: set[str] = field(default_factory=set)


class EdgeNode:
    """One edge node's Sparkplug state: aliases and types of every tag, seq, bdSeq and birth time.

    ``births`` starts a session (NBIRTH seq 0 then a DBIRTH per device); ``data`` turns spool samples
    into DDATA, flagging as ``is_historical`` every sample acquired before the session's births;
    ``parse_command`` decodes NCMD/DCMD. Nothing here does I/O.
    """

    def __init__(self, group_id: str, edge_node_id: str, tags: Iterable[Tag],
                 max_metrics_per_message: int = 500) -> None:
        self.topics = Topics(group_id, edge_node_id)
        self.max_metrics = max_metrics_per_message
        self.tags: dict[str, Tag] = {}
        self.devices: dict[str, list[Tag]] = {}
        self.types: dict[str, SpType] = {}
        self.by_alias: dict[int, Tag] = {}
        # (device, tag name) -> (tag, alias, datatype, value encoder): the per-sample lookup of data()
        self._meta: dict[tuple[str, str], tuple[Tag, int, SpType, sp.Encoder]] = {}
        for t in sorted(tags, key=lambda t: t.slot):
            self._register(t)
        self.bd_seq: int | None = None
        self.birth_ns: int | None = None
        self._seq = 0
        self._node_sent: dict[str, Any] = {}
        self._next_slot = max((t.slot for t in self.tags.values()), default=-1) + 1
        self.learned: dict[str, tuple[Any, int, int]] = {}  # last value of each learned metric
        self._encode_warned: set[str] = set()

    def learn(self, samples: Iterable[Sample]) -> list[str]:
        """Add metrics for samples whose key is no tag of the cell; return the new keys.

        Such samples are the reported outputs of control tasks (device = task name, tag =
        ``block.pin``) and samples spooled under an older cell file. Their datatype is inferred
        from the value and kept; they are read-only. New metrics need new births (the caller
        rebirths before publishing them); until then ``learned`` keeps their latest values.
        """
        new: list[str] = []
        for s in samples:
            key = f"{s.device}.{s.tag}"
            if key in self.tags:
                if key in self.learned and s.ts_ns >= self.learned[key][2]:
                    self.learned[key] = (s.value, s.quality, s.ts_ns)
                continue
            if not valid_id(s.device) or not s.tag:
                continue
            tag = Tag(s.device, s.tag, "", _infer_type(s.value), "", None, slot=self._next_slot)
            self._next_slot += 1
            self._register(tag)
            self.learned[key] = (s.value, s.quality, s.ts_ns)
            new.append(key)
        return new

    def _register(self, tag: Tag) -> None:
        sp_type = sp.sparkplug_type(tag)
        self.tags[tag.key] = tag
        self.devices.setdefault(tag.device, []).append(tag)
        self.types[tag.key] = sp_type
        self.by_alias[self.alias(tag)] = tag
        self._meta[(tag.device, tag.name)] = (tag, self.alias(tag), sp_type, sp.encoder(sp_type))

    @staticmethod
    def alias(tag: Tag) -> int:
        """The stable metric alias of a tag (from its slot in the cell)."""
        return TAG_ALIAS_BASE + max(tag.slot, 0)

    def _next_seq(self) -> int:
        seq = self._seq
        self._seq = (self._seq + 1) % 256
        return seq

    # -- births and death ---------------------------------------------------------------------
    def death_payload(self, bd_seq: int) -> bytes:
        """The NDEATH payload (the MQTT Will): the bdSeq metric only, no seq."""
        msg = sp.Payload()
        msg.timestamp = _now_ms()
        _add_bdseq(msg, bd_seq)
        return msg.SerializeToString()

    def births(self, bd_seq: int, values: dict[str, tuple[Any, int, int]],
               now_ns: int | None = None, node_values: dict[str, Any] | None = None) -> list[Outgoing]:
        """NBIRTH (seq 0, with bdSeq, Node Control/Rebirth, node info) then one DBIRTH per device.

        ``values`` is ``{tag_key: (value, quality, ts_ns)}``; a tag without a current value is
        born with ``is_null``. ``node_values`` are the ``NODE_INFO`` metrics. From now on,
        samples acquired before ``now_ns`` are historical.
        """
        now_ns = time.time_ns() if now_ns is None else now_ns
        values = {**self.learned, **values}
        self._type_learned(values)
        self.bd_seq = bd_seq
        self.birth_ns = now_ns
        self._seq = 0
        now_ms = now_ns // 1_000_000
        out: list[Outgoing] = []
        nb = sp.Payload()
        nb.timestamp = now_ms
        nb.seq = self._next_seq()
        _add_bdseq(nb, bd_seq)
        m = nb.metrics.add()
        m.name, m.alias, m.timestamp, m.datatype = REBIRTH, REBIRTH_ALIAS, now_ms, SpType.Boolean
        m.boolean_value = False
        self._node_sent = {}
        for name, (alias, sp_type) in NODE_INFO.items():
            value = (node_values or {}).get(name)
            m = nb.metrics.add()
            m.name, m.alias, m.timestamp, m.datatype = name, alias, now_ms, sp_type
            sp.set_value(m, sp_type, value)
            self._node_sent[name] = value
        out.append(Outgoing(self.topics.node("NBIRTH"), nb.SerializeToString(), "NBIRTH", nb.seq, len(nb.metrics)))
        for device, tags in self.devices.items():
            db = sp.Payload()
            db.timestamp = now_ms
            db.seq = self._next_seq()
            for tag in tags:
                value, quality, ts_ns = values.get(tag.key, (None, 2, now_ns))
                m = db.metrics.add()
                m.name, m.alias, m.datatype = tag.name, self.alias(tag), self.types[tag.key]
                m.timestamp = (ts_ns if ts_ns else now_ns) // 1_000_000
                self._fill(m, tag, value, quality)
            out.append(Outgoing(self.topics.device("DBIRTH", device), db.SerializeToString(), "DBIRTH",
                                db.seq, len(db.metrics)))
        return out

    def _type_learned(self, values: dict[str, tuple[Any, int, int]]) -> None:
        """Tags whose type the device says at connect (``any``) take the Sparkplug type of their current value,
        at each birth (a metric's type may change only with a birth)."""
        for key, tag in self.tags.items():
            if tag.dtype is not DataType.ANY:
                continue
            value = values.get(key, (None, 2, 0))[0]
            if value is None:
                continue
            sp_type = sp.sparkplug_type_of_value(value)
            if sp_type is not self.types[key]:
                self.types[key] = sp_type
                self._meta[(tag.device, tag.name)] = (tag, self.alias(tag), sp_type, sp.encoder(sp_type))

    def _fill(self, m: Any, tag: Tag, value: Any, quality: int) -> bool:
        """Set a metric's value and quality; on a value that does not fit its type, send null and say so."""
        ok = True
        try:
            sp.set_value(m, self.types[tag.key], value)
        except sp.EncodeError as exc:
            self._unencodable(m, tag, exc)
            quality, ok = 2, False
        if quality:
            sp.add_quality(m, quality)
        return ok

    def _unencodable(self, m: Any, tag: Tag, exc: Exception) -> None:
        """Send a value that does not fit its datatype as null, warning once per metric (no log flood)."""
        if tag.key not in self._encode_warned:
            self._encode_warned.add(tag.key)
            log.warning("%s: cannot encode value as %s (%s); sent as null (logged once per metric)", tag.key,
                        self.types[tag.key].name, exc)
        m.is_null = True

    def node_data(self, node_values: dict[str, Any], now_ns: int | None = None) -> Outgoing | None:
        """NDATA with the node info metrics that changed since they were last sent, or None."""
        if self.birth_ns is None:
            raise RuntimeError("node_data() before births()")
        changed = {k: v for k, v in node_values.items() if k in NODE_INFO and self._node_sent.get(k) != v}
        if not changed:
            return None
        now_ms = (time.time_ns() if now_ns is None else now_ns) // 1_000_000
        msg = sp.Payload()
        msg.timestamp = now_ms
        for name, value in changed.items():
            alias, sp_type = NODE_INFO[name]
            m = msg.metrics.add()
            m.alias, m.timestamp, m.datatype = alias, now_ms, sp_type
            sp.set_value(m, sp_type, value)
            self._node_sent[name] = value
        msg.seq = self._next_seq()
        return Outgoing(self.topics.node("NDATA"), msg.SerializeToString(), "NDATA", msg.seq, len(msg.metrics))

    # -- data ------------------------------------------------------------------------------
    def data(self, samples: Iterable[Sample], now_ns: int | None = None) -> tuple[list[Outgoing], DataStats]:
        """DDATA messages for spool samples, per device in sample (time) order, chunked.

        Samples acquired before the current births get ``is_historical``; samples of tags this
        node does not know (e.g. spooled under an older cell file) are counted and left out.
        """
        if self.birth_ns is None:
            raise RuntimeError("data() before births()")
        stats = DataStats()
        meta = self._meta
        per_device: dict[str, list[tuple[Sample, tuple[Tag, int, SpType, sp.Encoder]]]] = {}
        for s in samples:
            info = meta.get((s.device, s.tag))
            if info is None:
                stats.unknown += 1
                stats.unknown_keys.add(f"{s.device}.{s.tag}")
                continue
            per_device.setdefault(s.device, []).append((s, info))
        birth_ns = self.birth_ns
        now_ms = (time.time_ns() if now_ns is None else now_ns) // 1_000_000
        out: list[Outgoing] = []
        for device, rows in per_device.items():
            for start in range(0, len(rows), self.max_metrics):
                msg = sp.Payload(timestamp=now_ms)
                add = msg.metrics.add
                for s, (tag, alias, sp_type, encode) in rows[start:start + self.max_metrics]:
                    if s.ts_ns < birth_ns:
                        m = add(alias=alias, timestamp=s.ts_ns // 1_000_000, datatype=sp_type, is_historical=True)
                        stats.historical += 1
                    else:
                        m = add(alias=alias, timestamp=s.ts_ns // 1_000_000, datatype=sp_type)
                        stats.live += 1
                    quality = s.quality
                    if s.value is None:
                        m.is_null = True
                    else:
                        try:
                            field, wire = encode(s.value)
                            setattr(m, field, wire)
                        except sp.EncodeError as exc:
                            self._unencodable(m, tag, exc)
                            stats.unencodable += 1
                            quality = 2
                    if quality:
                        sp.add_quality(m, quality)
                msg.seq = self._next_seq()
                out.append(Outgoing(self.topics.device("DDATA", device), msg.SerializeToString(), "DDATA",
                                    msg.seq, len(msg.metrics)))
        return out, stats

    # -- commands --------------------------------------------------------------------------
    def parse_command(self, topic: str, payload: bytes) -> list[Command]:
        """Decode an NCMD or DCMD of this node into commands (malformed input gives one refusal)."""
        parts = topic.split("/")
        if (len(parts) == 4 and parts[2] == "NCMD" and topic == self.topics.node("NCMD")):
            device = None
            source = "NCMD"
        elif (len(parts) == 5 and parts[2] == "DCMD" and parts[:2] == [NAMESPACE, self.topics.group_id]
              and parts[3] == self.topics.edge_node_id):
            device = parts[4]
            source = f"DCMD/{device}"
        else:
            return [Command("refused", topic, "", reason="not a command topic of this edge node",
                            code="unknown_device")]
        try:
            msg = sp.decode(payload)
        except DecodeError as exc:
            return [Command("refused", source, "", reason=f"malformed Sparkplug payload: {exc}", code="malformed")]
        if device is None:
            return [self._node_command(m, source) for m in msg.metrics]
        if device not in self.devices:
            return [Command("refused", source, "", reason=f"unknown device {device!r}", code="unknown_device")]
        return [self._device_command(m, device, source) for m in msg.metrics]

    def _node_command(self, m: Any, source: str) -> Command:
        if m.HasField("name") and m.name:
            label, is_rebirth = m.name, m.name == REBIRTH
        elif m.HasField("alias"):
            label, is_rebirth = f"alias {m.alias}", m.alias == REBIRTH_ALIAS
        else:
            label, is_rebirth = "(unnamed)", False
        if not is_rebirth:
            return Command("refused", source, label, reason="unsupported node command", code="unsupported")
        if sp.get_value(m, SpType.Boolean) is not True:
            return Command("refused", source, REBIRTH, reason="Node Control/Rebirth needs the value true",
                           code="invalid_value")
        return Command("rebirth", source, REBIRTH)

    def _device_command(self, m: Any, device: str, source: str) -> Command:
        tag: Tag | None = None
        if m.HasField("name") and m.name:
            tag = self.tags.get(f"{device}.{m.name}")
            label = m.name
        elif m.HasField("alias"):
            tag = self.by_alias.get(m.alias)
            label = f"alias {m.alias}"
            if tag is not None and tag.device != device:
                tag = None
        else:
            return Command("refused", source, "(unnamed)", reason="metric has neither name nor alias",
                           code="unknown_metric")
        if tag is None:
            return Command("refused", source, label, reason=f"device {device!r} has no such metric",
                           code="unknown_metric")
        value = sp.get_value(m, self.types[tag.key] if not m.HasField("datatype") else None)
        if value is None:
            return Command("refused", source, tag.name, tag, reason="no value (null or unset)", code="null_value")
        return Command("write", source, tag.name, tag, value)


def _infer_type(value: Any) -> DataType:
    """The data type of a learned metric, from its first value (None: a number)."""
    if isinstance(value, bool):
        return DataType.BOOL
    if isinstance(value, int):
        return DataType.UINT64 if value > 2**63 - 1 else DataType.INT64
    if isinstance(value, str):
        return DataType.STRING
    return DataType.FLOAT64


def _add_bdseq(msg: Any, bd_seq: int) -> None:
    m = msg.metrics.add()
    m.name, m.datatype, m.long_value = BDSEQ, SpType.UInt64, bd_seq
    m.timestamp = msg.timestamp


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
