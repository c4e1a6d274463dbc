"""The S7 driver: python-snap7's ISO-on-TCP connection on a per-device worker thread, packed reads, bit-safe writes."""
from __future__ import annotations

import logging
import socket
import time
from dataclasses import dataclass
from typing import Any, Callable

from snap7.client import Client
from snap7.connection import ISOTCPConnection
from snap7.error import S7ConnectionError, S7Error, S7ProtocolError, S7TimeoutError
from snap7.szl import parse_cpu_info_szl, parse_order_code_szl
from snap7.type import Area

from edged.driver import DeviceSpec, Driver
from edged.errors import DeviceUnavailable, ReadFailed, WriteFailed
from edged.schema import Section, describe
from edged.tag import DataType, Quality, Reading, Tag
from edged.worker import BlockingWorker, WorkerPoisoned, WorkerTimeout

from .address import AREA_NAME, WRITABLE_AREAS, S7Address, parse_tag_address
from .codec import ValueDecodeError, encode
from .plan import DEFAULT_MAX_GAP, DEFAULT_MAX_ITEMS, DEFAULT_PDU, MAX_PDU, MIN_PDU, Block, Packet, build_plan, \
    max_item_bytes, oversized
from .wire import ITEM_OK, WL_BIT, WL_BYTE, WL_COUNTER, WL_TIMER, HeaderError, ItemSpec, MalformedResponse, \
    build_read, build_setup, build_write, parse_read, parse_setup, parse_write

log = logging.getLogger(__name__)
logging.getLogger("snap7").setLevel(logging.WARNING)  # the library logs every connect and disconnect at INFO

CONNECTION_TYPES = {"pg": 1, "op": 2, "s7_basic": 3}
PUT_GET_HINT = ("enable PUT/GET on the S7-1200/1500: TIA Portal, CPU properties > Protection & Security > "
                "Connection mechanisms > tick 'Permit access with PUT/GET communication from remote partner', "
                "then download the hardware configuration")
OPTIMIZED_HINT = ("untick 'Optimized block access' in the DB's properties (Attributes) in TIA Portal and download "
                  "it, so its tags have absolute offsets")
CPU_RUN, CPU_STOP, CPU_UNKNOWN = "run", "stop", "unknown"
SZL_CPU_STATE = 0x0424
WRITE_OVERHEAD = 10 + 14 + 4  # job header, parameters with one item, data item header


def parse_tsap(section: Section, key: str) -> int | None:
    """A TSAP as TIA shows it ("03.01", "0301", "0x0301") or an integer; None when absent or invalid."""
    raw = section.raw(key, None)
    if raw is None:
        return None
    value: int | None = None
    if isinstance(raw, int) and not isinstance(raw, bool):
        value = raw
    elif isinstance(raw, str):
        text = raw.strip().lower().removeprefix("0x").replace(".", "").replace(" ", "")
        if 1 <= len(text) <= 4 and all(c in "0123456789abcdef" for c in text):
            value = int(text, 16)
    if value is None or not 0 <= value <= 0xFFFF:
        section.error(key, f"expected a TSAP such as \"03.01\" (two hex bytes), found {describe(raw)}")
        return None
    return value


def tsap_text(value: int) -> str:
    """A TSAP as TIA writes it: ``03.01``."""
    return f"{value >> 8:02X}.{value & 0xFF:02X}"


@dataclass(frozen=True, slots=True)
class Settings:
    """The S7 keys of one device table."""

    host: str
    port: int = 102
    rack: int = 0
    slot: int = 1
    local_tsap: int = 0x0100
    remote_tsap: int | None = None  # None: from connection type, rack and slot
    connection_type: str = "pg"
    pdu_size: int = DEFAULT_PDU
    max_gap: int = DEFAULT_MAX_GAP
    max_items: int = DEFAULT_MAX_ITEMS
    cpu_state_s: float = 5.0

    @property
    def tsap(self) -> int:
        """The remote TSAP sent: configured, or connection type << 8 | rack << 5 | slot."""
        if self.remote_tsap is not None:
            return self.remote_tsap
        return (CONNECTION_TYPES[self.connection_type] << 8) | (self.rack << 5) | self.slot

    def endpoint(self) -> str:
        """For messages: ``192.168.0.10:102 rack 0 slot 1``."""
        where = (f"TSAP {tsap_text(self.tsap)}" if self.remote_tsap is not None
                 else f"rack {self.rack} slot {self.slot}")
        return f"{self.host}:{self.port} {where}"


def read_settings(section: Section) -> Settings | None:
    """Read and check the device keys; None after recording issues."""
    before = len(section.issues.items)
    host = section.get_str("host")
    port = section.get_int("port", 102, min=1, max=65535)
    rack = section.get_int("rack", None, min=0, max=7)
    slot = section.get_int("slot", None, min=0, max=31)
    local_tsap = parse_tsap(section, "local_tsap")
    remote_tsap = parse_tsap(section, "remote_tsap")
    ctype = section.get_str("connection_type", "pg", choices=list(CONNECTION_TYPES))
    pdu = section.get_int("pdu_size", DEFAULT_PDU, min=MIN_PDU, max=MAX_PDU)
    max_gap = section.get_int("max_gap", DEFAULT_MAX_GAP, min=0, max=MAX_PDU)
    max_items = section.get_int("max_items", DEFAULT_MAX_ITEMS, min=1, max=DEFAULT_MAX_ITEMS)
    cpu_state_s = section.get_float("cpu_state_s", 5.0, min=0.0, max=3600.0)
    if section.has("remote_tsap") and (section.has("rack") or section.has("slot")):
        section.error("remote_tsap", "expected either remote_tsap or rack/slot, found both "
                                     "(the remote TSAP encodes connection type, rack and slot)")
    if len(section.issues.items) != before:
        return None
    return Settings(host=host, port=port, rack=0 if rack is None else rack, slot=1 if slot is None else slot,
                    local_tsap=0x0100 if local_tsap is None else local_tsap, remote_tsap=remote_tsap,
                    connection_type=ctype, pdu_size=pdu, max_gap=max_gap, max_items=max_items,
                    cpu_state_s=cpu_state_s)


class _Session:
    """One ISO-on-TCP connection and its S7 sequence numbers; used only on the device's worker thread."""

    def __init__(self, settings: Settings, timeout: float) -> None:
        self.settings = settings
        self.timeout = timeout
        self.conn = ISOTCPConnection(settings.host, settings.port, settings.local_tsap, settings.tsap)
        self.conn.timeout = timeout
        self.client: Client | None = None
        self.seq = 0

    def next_seq(self) -> int:
        """The next PDU reference (1..65535)."""
        self.seq = self.seq % 0xFFFF + 1
        return self.seq

    def socket(self) -> socket.socket | None:
        """The TCP socket (for abort from the asyncio thread)."""
        return self.conn.socket

    def exchange(self, pdu: bytes) -> bytes:
        """Send one job and return the next answer (the caller checks its sequence number)."""
        self.conn.send_data(pdu)
        return self.conn.receive_data()

    def close(self) -> None:
        """Disconnect (COTP disconnect request, then close)."""
        self.conn.disconnect()


class S7Failure(Exception):
    """A read or write item the PLC refused, with its kind (for counters) and an actionable message."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def item_failure(rc: int, area: Area, db: int, region: str) -> S7Failure:
    """Translate an item return code into a specific kind and message."""
    if rc == 0x0A:
        if area is Area.DB:
            return S7Failure("no_db", f"DB{db} does not exist in the PLC (item error 0x0A 'object does not "
                                      f"exist'): download DB{db} or fix the DB number of {region}")
        return S7Failure("out_of_range", f"{region}: {AREA_NAME[area]} not available in this CPU (item error 0x0A)")
    if rc == 0x05:
        extra = (f"; if DB{db} is optimized it has no absolute offsets: {OPTIMIZED_HINT}" if area is Area.DB else "")
        return S7Failure("out_of_range", f"{region} is out of range (item error 0x05 'address out of range'): "
                                         f"check the offset against the size of "
                                         f"{'DB' + str(db) if area is Area.DB else AREA_NAME[area]}{extra}")
    if rc == 0x03:
        if area is Area.DB:
            return S7Failure("optimized_db", f"{region}: access to DB{db} refused (item error 0x03): the DB has "
                                             f"optimized block access, {OPTIMIZED_HINT}")
        return S7Failure("access_denied", f"{region}: access refused (item error 0x03): {PUT_GET_HINT}")
    if rc == 0x06:
        return S7Failure("exception", f"{region}: the PLC does not support this data type (item error 0x06)")
    if rc == 0x07:
        return S7Failure("exception", f"{region}: data type inconsistent (item error 0x07)")
    if rc == 0x01:
        return S7Failure("exception", f"{region}: hardware fault in the PLC (item error 0x01)")
    return S7Failure("exception", f"{region}: the PLC refused the item (item error 0x{rc:02X})")


def header_failure(code: int, what: str) -> S7Failure:
    """Translate an error in a response header into a specific kind and message."""
    if code == 0x8104:  # "function not available / context not supported": PUT/GET off (S7-1200/1500)
        return S7Failure("access_denied", f"{what}: access denied (S7 error 0x{code:04X}): {PUT_GET_HINT}")
    if code == 0x8500:
        return S7Failure("malformed", f"{what}: the request does not fit the PDU (S7 error 0x8500)")
    return S7Failure("exception", f"{what}: the PLC refused the request (S7 error 0x{code:04X})")


class S7Driver(Driver):
    """A Siemens S7-300/400/1200/1500 reached over ISO-on-TCP; python-snap7 on a BlockingWorker thread."""

    kind = "s7"
    capabilities = frozenset({"poll", "write"})

    def __init__(self, spec: DeviceSpec, tags: list[Tag], settings: Settings) -> None:
        super().__init__(spec, tags)
        self.settings = settings
        self.pdu_size = settings.pdu_size  # the planned size until a connection negotiated one
        self.negotiated: int | None = None
        self.plans: dict[str, list[Packet]] = {}
        self.too_big: dict[str, list[Tag]] = {}
        self.identity: dict[str, str] = {}
        self.cpu_state = CPU_UNKNOWN
        self._state_supported = True
        self._next_state_check = 0.0
        self._session: _Session | None = None
        self._worker: BlockingWorker | None = None
        self._connects = 0
        self._logged: dict[Any, str] = {}
        self._replan(settings.pdu_size)

    # -- load time ------------------------------------------------------------------------
    @classmethod
    def parse_tag(cls, section: Section, dtype: DataType | None) -> tuple[Any, DataType, tuple[int, ...]] | None:
        """Read the tag's ``address`` (TIA absolute, PLC4X or nodeS7) and check ``type`` agrees with it."""
        return parse_tag_address(section, dtype)

    @classmethod
    def from_config(cls, spec: DeviceSpec, section: Section, tags: list[Tag]) -> "S7Driver | None":
        """Read the device keys and plan the reads at the configured PDU size (no I/O)."""
        settings = read_settings(section)
        if settings is None:
            return None
        ok = True
        limit = max_item_bytes(MIN_PDU)
        for tag in tags:
            a: S7Address = tag.addr
            if tag.writable and a.area not in WRITABLE_AREAS:
                section.error(f"tag.{tag.name}.access", f"expected \"read\": {AREA_NAME[a.area]} cannot be written, "
                                                         f"found \"write\"")
                ok = False
            if a.size > limit:
                section.error(f"tag.{tag.name}.address", f"expected a tag of at most {limit} bytes (one read item "
                                                         f"at the smallest PDU, {MIN_PDU}), found {a.size} bytes "
                                                         f"({a.type_text}); split it into smaller tags")
                ok = False
        if not ok:
            return None
        return cls(spec, tags, settings)

    def _replan(self, pdu_size: int) -> None:
        self.pdu_size = pdu_size
        by_group: dict[str, list[Tag]] = {}
        for t in self.tags:
            by_group.setdefault(t.scan, []).append(t)
        s = self.settings
        self.plans = {g: build_plan(ts, pdu_size, s.max_gap, s.max_items) for g, ts in sorted(by_group.items())}
        self.too_big = {g: oversized(ts, pdu_size) for g, ts in by_group.items()}

    def plan(self) -> dict[str, list[str]]:
        """Per scan group, one line per read request, at the configured PDU size (recomputed at connect)."""
        out: dict[str, list[str]] = {}
        for group, packets in self.plans.items():
            lines = [p.describe(self.pdu_size) for p in packets]
            if lines:
                lines[0] = (f"[planned for PDU {self.pdu_size}; recomputed at connect from the negotiated size] "
                            + lines[0])
            out[group] = lines
        return out

    def status(self) -> dict[str, Any]:
        """``info``: the CPU's identity (SZL, read at connect); ``gauges``: PDU sizes and RUN (1) / STOP (0)."""
        gauges: dict[str, float] = {"pdu_requested": self.settings.pdu_size}
        if self.negotiated is not None:
            gauges["pdu_negotiated"] = self.negotiated
        if self.cpu_state != CPU_UNKNOWN:
            gauges["cpu_run"] = 1 if self.cpu_state == CPU_RUN else 0
        return {"info": dict(self.identity), "gauges": gauges, "cpu_state": self.cpu_state}

    # -- connection ---------------------------------------------------------------------------
    def _abort(self) -> None:
        session = self._session
        sock = session.socket() if session is not None else None
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _open(self) -> tuple[int, dict[str, str], str, bool]:
        """On the worker: TCP, COTP, setup communication, identity and CPU state."""
        s = self.settings
        timeout = self.spec.timeout_s
        session = _Session(s, timeout)
        self._session = session
        conn = session.conn
        try:
            conn._tcp_connect()
        except S7Error as exc:
            raise ConnectFailure("connection", f"cannot reach {s.host}:{s.port}: {exc}") from None
        try:
            conn._iso_connect()
        except S7TimeoutError:
            raise ConnectFailure("timeout", f"{s.host}:{s.port} accepted TCP but did not answer the ISO connection "
                                            f"request within {timeout:g} s (is it an S7 device?)") from None
        except (S7Error, OSError) as exc:
            raise ConnectFailure("iso_refused", f"{s.host}:{s.port} refused the ISO connection for "
                                                f"{s.endpoint().split(' ', 1)[1]} (TSAP {tsap_text(s.tsap)}): "
                                                f"check rack and slot (S7-300: rack 0 slot 2; S7-400: see the "
                                                f"hardware configuration; S7-1200/1500: rack 0 slot 1) or the "
                                                f"TSAPs ({exc})") from None
        conn.connected = True
        seq = session.next_seq()
        try:
            pdu = parse_setup(session.exchange(build_setup(seq, s.pdu_size)), seq, s.pdu_size)
        except HeaderError as exc:
            raise ConnectFailure("iso_refused", f"the PLC refused the S7 connection setup (S7 error "
                                                f"0x{exc.code:04X}): check the connection type and TSAPs") from None
        client = Client()
        client.connection = conn
        client.connected = True
        client.host, client.port, client.pdu_length = s.host, s.port, pdu
        session.client = client
        identity: dict[str, str] = {}
        try:
            oc = parse_order_code_szl(client.read_szl(0x0011, 0))
            code = bytes(oc.OrderCode).split(b"\0")[0].decode("latin-1", "replace").strip()
            if code:
                identity["order_code"] = code
                identity["firmware"] = f"V{oc.V1}.{oc.V2}.{oc.V3}"
            ci = parse_cpu_info_szl(client.read_szl(0x001C, 0))
            for key, raw in (("module_name", ci.ModuleName), ("module_type", ci.ModuleTypeName),
                             ("serial_number", ci.SerialNumber), ("station_name", ci.ASName)):
                text = bytes(raw).split(b"\0")[0].decode("latin-1", "replace").strip()
                if text:
                    identity[key] = text
        except (S7TimeoutError, S7ConnectionError, OSError):
            raise
        except (S7ProtocolError, RuntimeError, ValueError) as exc:
            identity["identity_error"] = str(exc)
        state, supported = self._cpu_state_blocking()
        return pdu, identity, state, supported

    def _cpu_state_blocking(self) -> tuple[str, bool]:
        """On the worker: RUN/STOP from SZL 0x0424 (byte 3 of the record); (state, supported)."""
        session = self._session
        if session is None or session.client is None:
            return CPU_UNKNOWN, False
        try:
            szl = session.client.read_szl(SZL_CPU_STATE, 0)
        except (S7TimeoutError, S7ConnectionError, OSError):
            raise
        except (S7ProtocolError, RuntimeError, ValueError):
            return CPU_UNKNOWN, False
        data = bytes(b & 0xFF for b in szl.Data[:szl.Header.LengthDR])
        # partial list header (record length, record count), then the record: ereig (2), ae (1), bzu-id (1)...
        if len(data) < 8:
            return CPU_UNKNOWN, True
        mode = data[7]
        if mode == 0x08:
            return CPU_RUN, True
        if mode in (0x03, 0x04):
            return CPU_STOP, True
        return CPU_UNKNOWN, True

    def _close_blocking(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            session.close()

    async def _call(self, fn: Callable[..., Any], *args: Any, timeout: float | None = None) -> Any:
        """Run a blocking step on the worker; timeouts and lost connections drop the connection (DeviceUnavailable)."""
        if self._worker is None:
            self._worker = BlockingWorker(f"s7:{self.spec.name}", abort=self._abort)
        t = self.spec.timeout_s + 0.25 if timeout is None else timeout
        try:
            return await self._worker.call(fn, *args, timeout=t)
        except (WorkerTimeout, S7TimeoutError, TimeoutError):
            self.stats.timeouts += 1
            self.stats.error("timeout")
            await self._drop()
            raise DeviceUnavailable(f"device {self.spec.name}: no answer within {self.spec.timeout_s:g} s "
                                    f"({self.settings.endpoint()}); connection dropped") from None
        except WorkerPoisoned:
            await self._drop()
            raise DeviceUnavailable(f"device {self.spec.name}: the previous request hung; reconnecting") from None
        except ConnectFailure as exc:
            self.stats.error(exc.kind)
            if exc.kind == "timeout":
                self.stats.timeouts += 1
            await self._drop()
            raise DeviceUnavailable(f"device {self.spec.name}: {exc}") from None
        except MalformedResponse as exc:
            self.stats.error("malformed")
            await self._drop()
            raise DeviceUnavailable(f"device {self.spec.name}: malformed response ({exc}); connection dropped so "
                                    f"no later answer is mistaken for another") from None
        except (S7Error, OSError, ConnectionError) as exc:
            self.stats.error("connection")
            await self._drop()
            raise DeviceUnavailable(f"device {self.spec.name}: connection lost ({self.settings.endpoint()}): "
                                    f"{exc}") from None

    async def _drop(self) -> None:
        """Close the connection on the worker thread (after any hung call returned); replace a stuck worker."""
        worker = self._worker
        if worker is None:
            return
        if not await worker.reset(self._close_blocking, timeout=max(2.0, 2 * self.spec.timeout_s)):
            self._worker = worker.replace()
            self._session = None

    async def connect(self) -> None:
        """Open the connection, negotiate the PDU (replanning the reads), read the CPU identity and state."""
        await self._drop()
        timeout = 4 * self.spec.timeout_s + 0.5  # TCP, COTP, setup, SZL reads: each bounded by the socket timeout
        pdu, identity, state, supported = await self._call(self._open, timeout=timeout)
        self._connects += 1
        if self._connects > 1:
            self.stats.reconnects += 1
        if pdu != self.negotiated:
            log.info("device %s: negotiated PDU size %d (requested %d)%s", self.spec.name, pdu,
                     self.settings.pdu_size, "; read plan recomputed" if pdu != self.pdu_size else "")
        self.negotiated = pdu
        if pdu != self.pdu_size:
            self._replan(pdu)
        for group, tags in self.too_big.items():
            for tag in tags:
                self._report(("too_big", tag.name), "malformed",
                             f"{tag.name} ({tag.addr.size} bytes) does not fit one read at PDU {pdu}: bad quality")
        if identity != self.identity:
            self.identity = identity
            if "order_code" in identity or "module_name" in identity:
                log.info("device %s: CPU %s %s %s", self.spec.name, identity.get("module_name", ""),
                         identity.get("order_code", ""), identity.get("firmware", ""))
        self._state_supported = supported
        self._set_cpu_state(state)
        self._next_state_check = time.monotonic() + self.settings.cpu_state_s

    async def close(self) -> None:
        """Close the connection and let the worker thread exit."""
        worker, self._worker = self._worker, None
        if worker is not None:
            await worker.reset(self._close_blocking, timeout=max(2.0, 2 * self.spec.timeout_s))
            worker.stop()
        self._session = None

    def _set_cpu_state(self, state: str) -> None:
        if state == self.cpu_state:
            return
        if state == CPU_STOP:
            self.stats.error("cpu_stop")
            log.warning("device %s: PLC in STOP: its values are frozen and delivered with uncertain quality; put "
                        "the CPU in RUN (mode selector, or TIA Portal > Online > Start CPU)", self.spec.name)
        elif self.cpu_state == CPU_STOP and state == CPU_RUN:
            log.info("device %s: PLC back in RUN", self.spec.name)
        self.cpu_state = state

    async def _check_cpu_state(self) -> None:
        if not self._state_supported or self.settings.cpu_state_s <= 0:
            return
        now = time.monotonic()
        if now < self._next_state_check:
            return
        self._next_state_check = now + self.settings.cpu_state_s
        state, supported = await self._call(self._cpu_state_blocking)
        self._state_supported = supported
        self._set_cpu_state(state)

    # -- reads --------------------------------------------------------------------------------
    def _read_blocking(self, packet: Packet) -> list[tuple[int, bytes | None]]:
        session = self._session
        if session is None:
            raise S7ConnectionError("not connected")
        seq = session.next_seq()
        items = packet.items
        return parse_read(session.exchange(build_read(seq, items)), seq, items)

    async def read(self, group: str) -> list[Reading]:
        """Execute the plan of a scan group; tags of refused items get bad quality, with a specific error kind."""
        if self._session is None:
            self.stats.error("connection")
            raise DeviceUnavailable(f"device {self.spec.name}: not connected ({self.settings.endpoint()})")
        await self._check_cpu_state()
        packets = self.plans.get(group, [])
        quality = Quality.UNCERTAIN if self.cpu_state == CPU_STOP else Quality.GOOD
        out: list[Reading] = []
        failures: list[S7Failure] = []
        failed_blocks = 0
        for packet in packets:
            try:
                results = await self._call(self._read_blocking, packet)
            except HeaderError as exc:
                self.stats.requests += 1
                f = header_failure(exc.code, f"read of {len(packet.blocks)} item(s)")
                self._report(("hdr", group, id(packet)), f.kind, str(f))
                self.stats.error(f.kind)
                failures.append(f)
                failed_blocks += len(packet.blocks)
                out.extend(self._bad(packet.tags))
                continue
            self.stats.requests += 1
            self._recovered(("hdr", group, id(packet)))
            ts = time.time_ns()
            for block, (rc, data) in zip(packet.blocks, results):
                if rc != ITEM_OK or data is None:
                    s = block.spec
                    f = item_failure(rc, Area(s.area), s.db, block.describe())
                    self.stats.error(f.kind)
                    self._report(("item", s.area, s.db, s.start, s.count), f.kind,
                                 f"{f}; tags {', '.join(t.name for t in block.tags)} get bad quality")
                    failures.append(f)
                    failed_blocks += 1
                    out.extend(self._bad(block.tags, ts))
                    continue
                self._recovered(("item", block.spec.area, block.spec.db, block.spec.start, block.spec.count))
                out.extend(self._decode(block, data, ts, quality))
        big = self.too_big.get(group)
        if big:
            out.extend(self._bad(big))
        if failures and failed_blocks == sum(len(p.blocks) for p in packets):
            kinds = {f.kind for f in failures}
            raise ReadFailed(f"device {self.spec.name}: scan {group}: {failures[0]}"
                             + (f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""),
                             kind=kinds.pop() if len(kinds) == 1 else "exception")
        return out

    def _decode(self, block: Block, data: bytes, ts: int, quality: Quality) -> list[Reading]:
        out = []
        n = 0
        for tag, off, dec in block.entries:
            try:
                value = dec(data, off)
            except (ValueDecodeError, IndexError, UnicodeDecodeError) as exc:
                self.stats.error("malformed")
                self._report(("value", tag.name), "malformed", f"{tag.name} ({tag.addr}): {exc}; bad quality")
                out.append(Reading(tag, None, Quality.BAD, ts))
                continue
            if tag.scaled:
                value = tag.to_engineering(value)
            out.append(Reading(tag, value, quality, ts))
            n += 1
        self.stats.values += n
        return out

    def _bad(self, tags: list[Tag], ts: int | None = None) -> list[Reading]:
        ts = time.time_ns() if ts is None else ts
        return [Reading(t, None, Quality.BAD, ts) for t in tags]

    def _report(self, key: Any, kind: str, message: str) -> None:
        """Log an error once until it changes or recovers."""
        if self._logged.get(key) != kind:
            self._logged[key] = kind
            log.warning("device %s: %s", self.spec.name, message)

    def _recovered(self, key: Any) -> None:
        if key in self._logged:
            del self._logged[key]
            log.info("device %s: %s reads again", self.spec.name, key)

    # -- writes -------------------------------------------------------------------------------
    def _write_blocking(self, item: ItemSpec, data: bytes) -> int:
        session = self._session
        if session is None:
            raise S7ConnectionError("not connected")
        seq = session.next_seq()
        return parse_write(session.exchange(build_write(seq, item, data)), seq)

    async def write(self, tag: Tag, value: Any) -> None:
        """Typed write: single bits with a bit write (never read-modify-write), strings keep their max length."""
        a: S7Address = tag.addr
        if not tag.writable or a.area not in WRITABLE_AREAS:
            self.stats.writes_failed += 1
            raise WriteFailed(f"{tag.key}: write refused: the tag is not writable", kind="refused")
        try:
            raw = tag.to_raw(value) if tag.scaled and not isinstance(value, (str, bool)) else value
            data = encode(a, raw)
        except ValueError as exc:
            self.stats.writes_failed += 1
            raise WriteFailed(f"{tag.key}: write refused, nothing sent: {exc}", kind="refused") from None
        if self._session is None:
            self.stats.writes_failed += 1
            raise DeviceUnavailable(f"device {self.spec.name}: not connected ({self.settings.endpoint()})")
        db = a.db if a.area is Area.DB else 0
        if a.is_bit:
            chunks = [(ItemSpec(int(a.area), db, a.byte, 1, WL_BIT, a.bit), data)]
        elif a.area in (Area.TM, Area.CT):
            chunks = [(ItemSpec(int(a.area), 0, a.byte, 1, WL_TIMER if a.area is Area.TM else WL_COUNTER), data)]
        else:
            step = (self.negotiated or self.pdu_size) - WRITE_OVERHEAD
            chunks = [(ItemSpec(int(a.area), db, a.byte + k, len(data[k:k + step]), WL_BYTE), data[k:k + step])
                      for k in range(0, len(data), step)]
        for item, chunk in chunks:
            try:
                rc = await self._call(self._write_blocking, item, chunk)
            except HeaderError as exc:
                f = header_failure(exc.code, f"write {tag.name} ({a})")
                self.stats.error(f.kind)
                self.stats.writes_failed += 1
                raise WriteFailed(f"device {self.spec.name}: {f}", kind="exception") from None
            except DeviceUnavailable:
                self.stats.writes_failed += 1
                raise
            if rc != ITEM_OK:
                f = item_failure(rc, a.area, db, a.region())
                self.stats.error(f.kind)
                self.stats.writes_failed += 1
                raise WriteFailed(f"device {self.spec.name}: write {tag.name} refused: {f}", kind="exception")
        self.stats.writes += 1


class ConnectFailure(Exception):
    """Connecting failed at a known step; ``kind`` is the error counter."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
