"""The Modbus TCP/RTU driver: device keys, planned batched reads, typed writes, error accounting."""
from __future__ import annotations

import asyncio
import logging
import os
import struct
import time
from dataclasses import dataclass, replace
from typing import Any, Callable

from pymodbus.exceptions import ModbusException

from edged.cext import codec, mbap
from edged.driver import DeviceSpec, Driver, GroupMode
from edged.errors import DeviceUnavailable, ReadFailed, WriteFailed
from edged.schema import Section, describe
from edged.tag import DataType, Quality, Reading, Tag

from .address import (MAX_BITS, MAX_REGISTERS, MAX_UNIT_ID, T_BIT, T_COIL, T_STRING, ModbusAddress, Table,
                      parse_tag_address)
from .line import Link, LinkDown, LinkTimeout, SerialLine, SerialSettings, TcpLink, attach_serial, detach_serial
from .plan import Limits, Request, build_plan, unit_of
from .tcp import MbapLink, describe_event
from .units import UnitHealth

log = logging.getLogger(__name__)

READ_METHOD = {Table.COIL: "read_coils", Table.DISCRETE: "read_discrete_inputs",
               Table.HOLDING: "read_holding_registers", Table.INPUT: "read_input_registers"}
EXCEPTION_NAMES = {
    1: "ILLEGAL FUNCTION", 2: "ILLEGAL DATA ADDRESS", 3: "ILLEGAL DATA VALUE", 4: "SERVER DEVICE FAILURE",
    5: "ACKNOWLEDGE", 6: "SERVER DEVICE BUSY", 7: "NEGATIVE ACKNOWLEDGE", 8: "MEMORY PARITY ERROR",
    10: "GATEWAY PATH UNAVAILABLE", 11: "GATEWAY TARGET DEVICE FAILED TO RESPOND",
}
GOOD = Quality.GOOD
_FIELD_WORDS = {"stray": "a frame nobody asked for", "unit": "wrong unit id", "function": "wrong function code", "count": "wrong byte count",
                "length": "MBAP length contradicts the content", "echo": "write echo differs from the request",
                "decode": "undecodable"}
_RTU_KEYS = ("baudrate", "parity", "bytesize", "stopbits")
_TCP_ONLY_KEYS = ("client", "max_outstanding")
MAX_OUTSTANDING = 64


def exception_name(code: int) -> str:
    """The Modbus name of an exception code, e.g. 2 -> ``ILLEGAL DATA ADDRESS``."""
    return EXCEPTION_NAMES.get(code, f"EXCEPTION {code}")


@dataclass(frozen=True, slots=True)
class Settings:
    """The Modbus keys of one device table."""

    transport: str = "tcp"
    host: str = ""
    port: int = 502
    serial: SerialSettings | None = None
    unit_id: int = 1
    limits: Limits = Limits()
    bit_write: str = "mask"
    client: str = "edged"
    max_outstanding: int = 1
    link_timeouts: int = 0  # 0: the number of distinct unit ids of the device

    def endpoint(self) -> str:
        """Where the device is reached, for messages: ``tcp 10.0.0.5:502`` or ``rtu /dev/ttyUSB0``."""
        return f"tcp {self.host}:{self.port}" if self.transport == "tcp" else f"rtu {self.serial.port}"  # type: ignore[union-attr]


def read_settings(section: Section) -> Settings | None:
    """Read and check the device keys; None after recording issues."""
    before = len(section.issues.items)
    transport = section.get_str("transport", "tcp", choices=["tcp", "rtu"])
    host = section.get_str("host", None)
    port_raw = section.raw("port", None)
    unit_id = section.get_int("unit_id", 1, min=0, max=MAX_UNIT_ID)
    max_registers = section.get_int("max_registers", MAX_REGISTERS, min=1, max=MAX_REGISTERS)
    max_bits = section.get_int("max_bits", MAX_BITS, min=1, max=MAX_BITS)
    max_gap = section.get_int("max_gap", 10, min=0, max=MAX_REGISTERS)
    max_gap_bits = section.get_int("max_gap_bits", 64, min=0, max=MAX_BITS)
    bit_write = section.get_str("bit_write", "mask", choices=["mask", "read_modify_write"])
    client = section.get_str("client", "edged", choices=["edged", "pymodbus"])
    max_outstanding = section.get_int("max_outstanding", 1, min=1, max=MAX_OUTSTANDING)
    link_timeouts = section.get_int("link_timeouts", None, min=1, max=1000)
    baudrate = section.get_int("baudrate", None, min=50, max=4_000_000)
    parity = section.get_str("parity", None, choices=["N", "E", "O"])
    bytesize = section.get_int("bytesize", None, min=7, max=8)
    stopbits = section.get_int("stopbits", None, min=1, max=2)
    if transport is None:
        return None
    port = 502
    serial = None
    if transport == "tcp":
        if host is None and not section.has("host"):
            section.error("host", "missing required key (transport \"tcp\" needs the host name or IP address)")
        for key in _RTU_KEYS:
            if section.has(key):
                section.error(key, f"expected {key} only with transport = \"rtu\", found it with transport \"tcp\"")
        if port_raw is not None:
            if isinstance(port_raw, bool) or not isinstance(port_raw, int) or not 1 <= port_raw <= 65535:
                section.error("port", f"expected a TCP port 1..65535, found {describe(port_raw)}")
            else:
                port = port_raw
        if client == "pymodbus" and section.has("max_outstanding") and (max_outstanding or 1) > 1:
            section.error("max_outstanding", f"expected 1 with client = \"pymodbus\" (it sends one request at a "
                                             f"time), found {max_outstanding}")
    else:
        for key in _TCP_ONLY_KEYS:
            if section.has(key):
                section.error(key, f"expected {key} only with transport = \"tcp\", found it with transport \"rtu\"")
        if section.has("host"):
            section.error("host", "expected host only with transport = \"tcp\", found it with transport \"rtu\"")
        if port_raw is None:
            section.error("port", "missing required key (transport \"rtu\" needs the serial device, "
                                  "e.g. \"/dev/ttyUSB0\")")
        elif not isinstance(port_raw, str) or not port_raw.strip():
            section.error("port", f"expected the serial device path such as \"/dev/ttyUSB0\", found {describe(port_raw)}")
        else:
            serial = SerialSettings(port=port_raw, baudrate=baudrate or 19200, parity=parity or "N",
                                    bytesize=bytesize or 8, stopbits=stopbits or 1)
    if len(section.issues.items) != before:
        return None
    limits = Limits(max_registers=max_registers, max_bits=max_bits, max_gap=max_gap, max_gap_bits=max_gap_bits)
    return Settings(transport=transport, host=host or "", port=port, serial=serial, unit_id=unit_id,
                    limits=limits, bit_write=bit_write, client=client or "edged", max_outstanding=max_outstanding or 1,
                    link_timeouts=link_timeouts or 0)


def compile_request(req: Request) -> None:
    """Attach the codec program that decodes a request's response into readings of its tags."""
    entries = []
    for tag in req.tags:
        a: ModbusAddress = tag.addr
        entries.append((a.offset - req.start, a.type_code, int(a.order), a.bit, a.length,
                        tag.scale, tag.offset))
    req.program = codec.Program(entries, req.count, req.table.is_bit, req.tags, Reading)
    req.nbytes = (req.count + 7) // 8 if req.table.is_bit else 2 * req.count
    unit, fc, start, count = req.unit, req.table.fc, req.start, req.count
    req.frame = lambda tid: mbap.read_request(tid, unit, fc, start, count)


class ModbusDriver(Driver):
    """A Modbus device reached over TCP or a shared RTU serial line; reads follow a plan made at load.

    TCP uses edged's own client (``client = "edged"``, drivers/modbus/tcp.py) unless the device asks for
    pymodbus; RTU goes through pymodbus. Either way every response is checked here, field by field,
    against its request, and each unit id behind the connection fails and backs off on its own.
    """

    kind = "modbus"

    def __init__(self, spec: DeviceSpec, tags: list[Tag], settings: Settings,
                 requests: dict[str, list[Request]]) -> None:
        super().__init__(spec, tags)
        self.settings = settings
        self.requests = requests
        self._link: Link | MbapLink | None = None
        self._connects = 0
        self._logged: set[tuple[Any, ...]] = set()
        self._link_logged: set[str] = set()
        self._events_in_scan = False
        self._late_logged = False
        self._reopen = False  # pymodbus over TCP: the link was dropped on purpose and is reopened on use
        self.malformed: dict[str, int] = {}  # finer kinds of stats.errors["malformed"]
        units = sorted({r.unit for reqs in requests.values() for r in reqs}
                       | {unit_of(t, settings.unit_id) for t in tags})
        self.units = UnitHealth(spec.name, units, self.stats.unit_state,
                                settings.link_timeouts or max(1, len(units)),
                                spec.backoff_initial_s, spec.backoff_max_s)
        self._write_lock = asyncio.Lock()

    @property
    def lean(self) -> bool:
        """True when TCP requests go through edged's own client."""
        return self.settings.transport == "tcp" and self.settings.client == "edged"

    # -- load time ------------------------------------------------------------------
    @classmethod
    def parse_tag(cls, section: Section, dtype: DataType | None) -> tuple[Any, DataType] | None:
        """Read ``address``, ``order``, ``unit_id`` and ``length`` of a tag (see the README for the styles)."""
        return parse_tag_address(section, dtype)

    @classmethod
    def from_config(cls, spec: DeviceSpec, section: Section, tags: list[Tag]) -> "ModbusDriver | None":
        """Read the device keys, check every tag fits one request, and compute the read plan (no I/O)."""
        settings = read_settings(section)
        if settings is None:
            return None
        limits = settings.limits
        ok = True
        for tag in tags:
            a: ModbusAddress = tag.addr
            size = limits.size(a.table)
            if a.count > size:
                what = "bits" if a.table.is_bit else "registers"
                key = "length" if a.type_code == T_STRING else "address"
                section.error(f"tag.{tag.name}.{key}",
                              f"expected a value that fits one request (max_{'bits' if a.table.is_bit else 'registers'}"
                              f" = {size}), found {a.count} {what}"
                              + (f" for {a.length} characters" if a.type_code == T_STRING else ""))
                ok = False
        if not ok:
            return None
        requests = build_plan(tags, settings.unit_id, limits)
        for reqs in requests.values():
            for req in reqs:
                compile_request(req)
        return cls(spec, tags, settings, requests)

    def plan(self) -> dict[str, list[str]]:
        """Per scan group, one line per request: ``unit 1 hr 100..109 (10 regs): oil_temp, pressure``."""
        return {group: [r.describe() for r in reqs] for group, reqs in self.requests.items()}

    def group_modes(self) -> dict[str, GroupMode]:
        """Every scan group that has at least one request is polled."""
        return {g: GroupMode.POLL for g in sorted(self.requests)}

    @classmethod
    def validate_cell(cls, drivers: list[Driver], report: Callable[[str, str], None]) -> None:
        """Devices sharing an RTU serial port must agree on its settings (one line, one baud rate)."""
        first: dict[str, tuple[str, SerialSettings]] = {}
        for d in drivers:
            if not isinstance(d, ModbusDriver) or d.settings.serial is None:
                continue
            ser = d.settings.serial
            key = os.path.normpath(ser.port)  # no I/O at load: another name of the port is caught at connect
            if key not in first:
                first[key] = (d.spec.name, ser)
                continue
            name, other = first[key]
            if replace(other, port=ser.port) != ser:
                bad = [k for k in ("baudrate", "parity", "bytesize", "stopbits") if getattr(ser, k) != getattr(other, k)]
                for k in bad:
                    report(f"device.{d.spec.name}.{k}",
                           f"expected the same {k} as device {name} on serial port {ser.port} "
                           f"({getattr(other, k)!r}: devices on one line share its settings), found {getattr(ser, k)!r}")

    # -- connection ---------------------------------------------------------------------
    async def connect(self) -> None:
        """Open the TCP connection, or join the shared serial line; DeviceUnavailable on failure."""
        s = self.settings
        timeout = self.spec.timeout_s
        try:
            if s.transport == "tcp":
                if self._link is None:
                    self._link = (MbapLink(s.host, s.port, s.max_outstanding, self._on_link_event) if self.lean
                                  else TcpLink(s.host, s.port))
                await self._link.open(timeout)
            else:
                if self._link is None:
                    self._link = attach_serial(s.serial, id(self), self.spec.name)  # type: ignore[arg-type]
                async with self._link.lock:  # type: ignore[union-attr]
                    await self._link.open(timeout)
        except LinkDown as exc:
            self.stats.error("connection")
            await self.close()
            raise DeviceUnavailable(f"device {self.spec.name}: {exc}") from None
        self._reopen = False
        self._late_logged = False
        self._connects += 1
        if self._connects > 1:
            self.stats.reconnects += 1
        self.units.link_up()

    async def close(self) -> None:
        """Close the TCP connection, or leave the serial line (closed when its last device leaves)."""
        link, self._link = self._link, None
        if link is None:
            return
        self.units.link_down()
        if isinstance(link, SerialLine):
            detach_serial(link, id(self))
        else:
            link.drop()

    def _require_link(self) -> Link | MbapLink:
        if isinstance(self._link, TcpLink) and self._reopen:
            return self._link  # pymodbus over TCP, dropped after one unit's timeout: reopened by the read
        if self._link is None or not self._link.connected:
            self.stats.error("connection")
            raise DeviceUnavailable(f"device {self.spec.name}: not connected ({self.settings.endpoint()})")
        return self._link

    def _lost(self, exc: Exception, what: str) -> DeviceUnavailable:
        """Account a silent link or a lost connection; drop what must be dropped; the error to raise."""
        link = self._link
        self._reopen = False
        if isinstance(exc, LinkTimeout):
            # TCP: close the connection so a late answer is never taken for the next request. A shared
            # serial line stays open for the other units; this device leaves it until reconnected.
            if link is not None and not isinstance(link, SerialLine):
                link.drop()
        else:
            self.stats.error("connection")
            if link is not None:
                link.drop()
        self.units.link_down()
        return DeviceUnavailable(f"device {self.spec.name}: {what}: {exc}")

    def _on_link_event(self, kind: str, unit: int) -> None:
        """Events of edged's TCP client: timeouts (per unit), late answers, stray frames, broken streams."""
        link = self._link
        if kind == "timeout":
            self.stats.timeouts += 1
            self.stats.error("timeout")
            if self.units.timed_out(unit) and isinstance(link, MbapLink):
                link.drop(f"unit {unit}: no response within {self.spec.timeout_s:g} s (link silent: "
                          f"{self.units.consecutive} timeout(s) in a row, no unit answered)", silent=True)
            return
        if kind == "late":  # benign (a slow unit): counted, logged once per connection
            self.stats.error("late")
            self.units.link_alive()
            if not self._late_logged:
                self._late_logged = True
                log.info("device %s: a late answer (unit %d) arrived after its timeout: recognised by its "
                         "transaction id and discarded (counted as late)", self.spec.name, unit)
            return
        self._malformed(kind)
        if kind == "broken":
            self.units.link_down()
        self._events_in_scan = True
        if kind not in self._link_logged:
            self._link_logged.add(kind)
            log.warning("device %s: %s on %s%s (counted; logged again after a clean scan)", self.spec.name,
                        describe_event(kind), self.settings.endpoint(),
                        f" (unit {unit})" if unit else "")

    def _malformed(self, kind: str) -> None:
        self.stats.error("malformed")
        self.malformed[kind] = self.malformed.get(kind, 0) + 1

    # -- reads -----------------------------------------------------------------------------
    async def read(self, group: str) -> list[Reading]:
        """Execute the plan of a scan group; bad-quality readings for requests (or units) that failed."""
        requests = self.requests.get(group)
        if not requests:
            return []
        link = self._require_link()
        if isinstance(link, MbapLink):
            return await self._read_lean(group, requests, link)
        return await self._read_pymodbus(group, requests, link)

    async def _read_lean(self, group: str, requests: list[Request], link: MbapLink) -> list[Reading]:
        """Send a scan's requests (up to max_outstanding in flight), then collect their answers in order."""
        timeout = self.spec.timeout_s
        units = self.units
        self._events_in_scan = False
        futs: list[asyncio.Future | None] = []
        try:
            try:
                for req in requests:
                    if units.backed_off(req.unit):
                        futs.append(None)
                        continue
                    if link.outstanding < link.max_outstanding and not link.waiters and link.transport is not None:
                        link.outstanding += 1  # a free slot: taken without awaiting
                    else:
                        await link.acquire()
                        if units.backed_off(req.unit):  # it timed out while we waited for the slot
                            link.release_unused()
                            futs.append(None)
                            continue
                    futs.append(link.send(req.unit, req.frame, timeout))
            except LinkDown as exc:
                raise self._lost(exc, "connection lost") from None
            return await self._collect(group, requests, futs, link)
        except BaseException:
            for fut in futs:
                if fut is None:
                    continue
                if not fut.done():
                    fut.cancel()  # an answer may still come: recognised by its tid and discarded
                elif not fut.cancelled():
                    fut.exception()  # retrieved: no "Future exception was never retrieved" at collection
            raise

    async def _collect(self, group: str, requests: list[Request], futs: list[asyncio.Future | None],
                       link: MbapLink) -> list[Reading]:
        """Await, check and decode the answers of a scan's requests (edged's TCP client)."""
        units = self.units
        out: list[Reading] = []
        failures: list[str] = []
        lost: Exception | None = None
        for req, fut in zip(requests, futs):
            if fut is None:
                out.extend(self._bad(req))
                continue
            self.stats.requests += 1
            try:
                f = await fut
            except LinkTimeout:
                out.extend(self._bad(req))
                continue
            except LinkDown as exc:
                lost = lost or exc
                continue
            ts = time.time_ns()
            readings = req.program.readings_mbap(f, req.unit, req.table.fc, ts, GOOD)
            if readings is not None:  # every field matched the request
                if units.consecutive or units.retry_at:
                    units.answered(req.unit)
                if self._logged:
                    self._recovered(req)
                self.stats.values += len(readings)
                out.extend(readings)
                continue
            st = mbap.check_read(f, req.unit, req.table.fc, req.nbytes)
            out.extend(self._bad(req, ts))
            if st == mbap.EXCEPTION:
                units.answered(req.unit)
                code = f[8]
                failures.append(self._failed(req, "exception", f"exception {code} {exception_name(code)}", code))
                continue
            kind = mbap.KIND[st] if st != mbap.OK else "decode"  # OK here would mean the two checks disagree
            self._malformed(kind)
            failures.append(self._failed(req, "malformed", f"malformed response ({_FIELD_WORDS[kind]})",
                                         count=False))
            if st == mbap.BAD_LENGTH:  # the MBAP length lied about this frame: the stream is out of step
                link.drop(f"a frame whose MBAP length contradicts its content (unit {req.unit} {req.span()})")
        if lost is not None or not link.connected:
            raise self._lost(lost or link.lost_error or LinkDown("connection lost"), f"scan {group}")
        if self._link_logged and not failures and not self._events_in_scan:
            self._link_logged.clear()  # a clean scan: the next wire problem is a new state, logged again
            log.info("device %s: frames from %s are clean again", self.spec.name, self.settings.endpoint())
        return self._finish(group, requests, failures, out)

    def _finish(self, group: str, requests: list[Request], failures: list[str], out: list[Reading]) -> list[Reading]:
        if failures and len(failures) == len(requests):
            raise ReadFailed(f"device {self.spec.name}: scan {group}: " + "; ".join(failures),
                             kind="exception" if all("exception" in f for f in failures) else "malformed")
        return out

    async def _read_pymodbus(self, group: str, requests: list[Request], link: Link) -> list[Reading]:
        timeout = self.spec.timeout_s
        units = self.units
        tcp = not isinstance(link, SerialLine)
        out: list[Reading] = []
        failures: list[str] = []
        for req in requests:
            if units.backed_off(req.unit):
                out.extend(self._bad(req))
                continue
            if not link.connected:  # pymodbus over TCP: reopened after a unit's timeout
                try:
                    await link.open(timeout)
                except LinkDown as exc:
                    raise self._lost(exc, "reconnect") from None
            try:
                rsp = await link.request(READ_METHOD[req.table], timeout, address=req.start, count=req.count,
                                         device_id=req.unit)
            except LinkTimeout as exc:
                self.stats.requests += 1
                self.stats.timeouts += 1
                self.stats.error("timeout")
                if units.timed_out(req.unit):
                    raise self._lost(exc, f"unit {req.unit} {req.span()}") from None
                if tcp:
                    link.drop()  # pymodbus cannot tell a late answer from the next one: start afresh
                    self._reopen = True
                out.extend(self._bad(req))
                continue
            except LinkDown as exc:
                self.stats.requests += 1
                raise self._lost(exc, f"unit {req.unit} {req.span()}") from None
            except ModbusException as exc:
                self.stats.requests += 1
                self._malformed("decode")
                failures.append(self._failed(req, "malformed", f"bad response: {exc}", count=False))
                out.extend(self._bad(req))
                if tcp:
                    link.drop()
                    self._reopen = True
                continue
            ts = time.time_ns()
            self.stats.requests += 1
            fc = int(getattr(rsp, "function_code", -1))
            dev = getattr(rsp, "dev_id", None)
            if dev != req.unit:
                kind, detail = "unit", f"unit id {dev}"
            elif rsp.isError():
                if fc != (req.table.fc | 0x80):
                    kind, detail = "function", f"function code {fc}"
                else:
                    units.answered(req.unit)
                    code = int(getattr(rsp, "exception_code", 0) or 0)
                    failures.append(self._failed(req, "exception", f"exception {code} {exception_name(code)}", code))
                    out.extend(self._bad(req, ts))
                    continue
            elif fc != req.table.fc:
                kind, detail = "function", f"function code {fc}"
            elif tcp and getattr(rsp, "transaction_id", None) == 0:  # pymodbus takes a tid 0 frame for any answer
                kind, detail = "stray", "transaction id 0"
            else:
                data = rsp.bits if req.table.is_bit else rsp.registers
                have = len(data)
                want = 8 * req.nbytes if req.table.is_bit else req.count
                if getattr(rsp, "byte_count", req.nbytes) != req.nbytes or \
                        getattr(rsp, "data_len", req.nbytes) != req.nbytes:
                    kind, detail = "count", (f"byte count {getattr(rsp, 'byte_count', '?')} with "
                                             f"{getattr(rsp, 'data_len', '?')} data bytes")
                elif have != want:
                    kind, detail = "count", f"{have} {'bits' if req.table.is_bit else 'registers'}"
                else:
                    try:
                        readings = req.program.readings(data, ts, Quality.GOOD)
                    except (ValueError, TypeError, OverflowError) as exc:
                        kind, detail = "decode", str(exc)
                    else:
                        units.answered(req.unit)
                        self._recovered(req)
                        self.stats.values += len(readings)
                        out.extend(readings)
                        continue
            self._malformed(kind)
            failures.append(self._failed(req, "malformed", f"malformed response ({_FIELD_WORDS.get(kind, kind)}: "
                                                           f"{detail})", count=False))
            out.extend(self._bad(req, ts))
            if tcp:
                link.drop()  # pymodbus may be out of step with the stream now: start afresh on the next request
                self._reopen = True
        return self._finish(group, requests, failures, out)

    def _bad(self, req: Request, ts: int | None = None) -> list[Reading]:
        ts = time.time_ns() if ts is None else ts
        return [Reading(tag, None, Quality.BAD, ts) for tag in req.tags]

    def _failed(self, req: Request, kind: str, detail: str, code: int = 0, count: bool = True) -> str:
        """Count and log (once per distinct error until the request succeeds again) a failed request."""
        if count:
            self.stats.error(kind)
        msg = (f"fc {req.table.fc} unit {req.unit} {req.table.label} {req.start}..{req.end}: {detail}")
        key = (req.unit, req.table, req.start, req.count, kind, code)
        if key not in self._logged:
            self._logged.add(key)
            hint = " (an off-by-one address or a read spanning a hole in the device's map?)" if code == 2 else ""
            log.warning("device %s: %s%s; tags %s get bad quality", self.spec.name, msg, hint,
                        ", ".join(t.name for t in req.tags))
        return msg

    def _recovered(self, req: Request) -> None:
        if self._logged:
            gone = {k for k in self._logged if k[:4] == (req.unit, req.table, req.start, req.count)}
            if gone:
                self._logged -= gone
                log.info("device %s: unit %d %s reads again", self.spec.name, req.unit, req.span())

    # -- writes ------------------------------------------------------------------------------
    async def write(self, tag: Tag, value: Any) -> None:
        """Write an engineering value: coil (fc 5), register (fc 6), registers (fc 16), bit (fc 22 or read-modify-write).

        Failures raise WriteFailed (kind ``refused`` when the encoder refuses the value and nothing was
        sent, e.g. a string longer than the tag's length; ``exception`` or ``malformed`` for the device's
        answer; ``timeout`` when the unit did not answer but the link works) or DeviceUnavailable (lost
        connection, silent link).
        """
        a: ModbusAddress = tag.addr
        if not tag.writable or not a.table.writable:
            self.stats.writes_failed += 1
            raise WriteFailed(f"{tag.key}: write refused: the tag is not writable", kind="refused")
        unit = unit_of(tag, self.settings.unit_id)
        try:
            if a.type_code in (T_COIL, T_BIT):
                if not isinstance(value, bool):
                    raise ValueError(f"expected a boolean, found {value!r}")
                registers = None
            else:
                registers = codec.encode(a.type_code, int(a.order), tag.to_raw(value), a.length)
        except ValueError as exc:
            self.stats.writes_failed += 1
            raise WriteFailed(f"{tag.key}: write refused, nothing sent: {exc}", kind="refused") from None
        link = self._require_link()
        if isinstance(link, MbapLink):
            async with self._write_lock:
                await self._write_lean(link, tag, a, unit, value, registers)
            self.stats.writes += 1
            return
        await self._write_pymodbus(link, tag, a, unit, value, registers)

    async def _write_lean(self, link: MbapLink, tag: Tag, a: ModbusAddress, unit: int, value: Any,
                          registers: list[int] | None) -> None:
        if a.type_code == T_COIL:
            pdu = struct.pack(">BHH", 5, a.offset, 0xFF00 if value else 0)
        elif a.type_code == T_BIT:
            mask = 1 << a.bit
            if self.settings.bit_write == "mask":
                pdu = struct.pack(">BHHH", 22, a.offset, 0xFFFF ^ mask, mask if value else 0)
            else:  # read-modify-write: writes are serialized by the driver's write lock
                f = await self._transact(link, tag, unit, struct.pack(">BHH", 3, a.offset, 1))
                self._check_write_answer(tag, a, unit, f, 3, mbap.check_read(f, unit, 3, 2))
                reg = (f[9] << 8) | f[10]
                reg = (reg | mask) if value else (reg & ~mask & 0xFFFF)
                pdu = struct.pack(">BHH", 6, a.offset, reg)
        elif len(registers) == 1 and a.type_code != T_STRING:  # type: ignore[arg-type]
            pdu = struct.pack(">BHH", 6, a.offset, registers[0])  # type: ignore[index]
        else:
            n = len(registers)  # type: ignore[arg-type]
            pdu = struct.pack(f">BHHB{n}H", 16, a.offset, n, 2 * n, *registers)  # type: ignore[misc]
        echo = pdu[:5] if pdu[0] == 16 else pdu
        f = await self._transact(link, tag, unit, pdu)
        self._check_write_answer(tag, a, unit, f, pdu[0], mbap.check_write(f, unit, echo))

    async def _transact(self, link: MbapLink, tag: Tag, unit: int, pdu: bytes) -> bytes:
        try:
            return await link.transact(unit, (lambda tid: mbap.frame(tid, unit, pdu)), self.spec.timeout_s)
        except LinkTimeout as exc:
            self.stats.writes_failed += 1
            if not link.connected:
                raise self._lost(link.lost_error or exc, f"write {tag.name} (unit {unit})") from None
            raise WriteFailed(f"device {self.spec.name}: write {tag.name} (unit {unit}): {exc}",
                              kind="timeout") from None
        except LinkDown as exc:
            self.stats.writes_failed += 1
            raise self._lost(exc, f"write {tag.name} (unit {unit})") from None

    def _check_write_answer(self, tag: Tag, a: ModbusAddress, unit: int, f: bytes, fc: int, st: int) -> None:
        if st == mbap.OK:
            self.units.answered(unit)
            return
        self.stats.writes_failed += 1
        if st == mbap.EXCEPTION:
            self.units.answered(unit)
            code = f[8]
            self.stats.error("exception")
            raise WriteFailed(f"device {self.spec.name}: write {tag.name} (fc {fc} unit {unit} "
                              f"{a.table.label} {a.span()}) refused: exception {code} {exception_name(code)}",
                              kind="exception")
        kind = mbap.KIND[st]
        self._malformed(kind)
        if st == mbap.BAD_LENGTH and isinstance(self._link, MbapLink):
            self._link.drop("a frame whose MBAP length contradicts its content")
        raise WriteFailed(f"device {self.spec.name}: write {tag.name} (fc {fc} unit {unit}): malformed answer "
                          f"({_FIELD_WORDS[kind]})", kind="malformed")

    async def _write_pymodbus(self, link: Link, tag: Tag, a: ModbusAddress, unit: int, value: Any,
                              registers: list[int] | None) -> None:
        timeout = self.spec.timeout_s
        if not link.connected:
            try:
                await link.open(timeout)
            except LinkDown as exc:
                raise self._lost(exc, "reconnect") from None
        echo: bytes | None = None  # the data an exact echo carries (None: read-modify-write, checked by address)
        try:
            if a.type_code == T_COIL:
                want_fc, echo = 5, struct.pack(">HH", a.offset, 0xFF00 if value else 0)
                rsp = await link.request("write_coil", timeout, address=a.offset, value=value, device_id=unit)
            elif a.type_code == T_BIT:
                want_fc = 22 if self.settings.bit_write == "mask" else 6
                if want_fc == 22:
                    mask = 1 << a.bit
                    echo = struct.pack(">HHH", a.offset, 0xFFFF ^ mask, mask if value else 0)
                rsp = await self._write_bit(link, a, unit, value, timeout)
            elif len(registers) == 1 and a.type_code != T_STRING:  # type: ignore[arg-type]
                want_fc, echo = 6, struct.pack(">HH", a.offset, registers[0])  # type: ignore[index]
                rsp = await link.request("write_register", timeout, address=a.offset, value=registers[0],  # type: ignore[index]
                                         device_id=unit)
            else:
                want_fc, echo = 16, struct.pack(">HH", a.offset, len(registers))  # type: ignore[arg-type]
                rsp = await link.request("write_registers", timeout, address=a.offset, values=registers,
                                         device_id=unit)
        except LinkTimeout as exc:
            self.stats.writes_failed += 1
            self.stats.timeouts += 1
            self.stats.error("timeout")
            if self.units.timed_out(unit):
                raise self._lost(exc, f"write {tag.name} (unit {unit} {a.span()})") from None
            if not isinstance(link, SerialLine):
                link.drop()
                self._reopen = True
            raise WriteFailed(f"device {self.spec.name}: write {tag.name} (unit {unit}): {exc}",
                              kind="timeout") from None
        except LinkDown as exc:
            self.stats.writes_failed += 1
            raise self._lost(exc, f"write {tag.name} (unit {unit} {a.span()})") from None
        except ModbusException as exc:
            self.stats.writes_failed += 1
            self._malformed("decode")
            raise WriteFailed(f"device {self.spec.name}: write {tag.name}: bad response: {exc}",
                              kind="malformed") from None
        fc = int(getattr(rsp, "function_code", -1))
        raw = getattr(rsp, "raw_data", None)
        bad_echo = not rsp.isError() and (raw != echo if echo is not None else getattr(rsp, "address", None) != a.offset)
        if getattr(rsp, "dev_id", None) != unit or (fc & 0x7F) != want_fc or bad_echo:
            kind = "unit" if getattr(rsp, "dev_id", None) != unit else "function" if (fc & 0x7F) != want_fc else "echo"
            self.stats.writes_failed += 1
            self._malformed(kind)
            if not isinstance(link, SerialLine):
                link.drop()
                self._reopen = True
            raise WriteFailed(f"device {self.spec.name}: write {tag.name}: malformed answer ({_FIELD_WORDS[kind]})",
                              kind="malformed")
        if rsp.isError():
            code = int(getattr(rsp, "exception_code", 0) or 0)
            self.stats.writes_failed += 1
            self.stats.error("exception")
            raise WriteFailed(f"device {self.spec.name}: write {tag.name} (fc {fc & 0x7F} unit {unit} "
                              f"{a.table.label} {a.span()}) refused: exception {code} {exception_name(code)}",
                              kind="exception")
        self.units.answered(unit)
        self.stats.writes += 1

    async def _write_bit(self, link: Link, a: ModbusAddress, unit: int, value: bool, timeout: float) -> Any:
        """One bit of a holding register: mask write (fc 22, atomic in the device) or read-modify-write."""
        mask = 1 << a.bit
        if self.settings.bit_write == "mask":
            return await link.request("mask_write_register", timeout, address=a.offset, and_mask=0xFFFF ^ mask,
                                      or_mask=mask if value else 0, device_id=unit)
        async with link.lock:  # nothing of ours runs between the read and the write
            rsp = await link.call("read_holding_registers", timeout, address=a.offset, count=1, device_id=unit)
            if rsp.isError():
                return rsp
            if len(rsp.registers) != 1 or getattr(rsp, "dev_id", None) != unit or rsp.function_code != 3:
                raise ModbusException("malformed read in read-modify-write")
            reg = rsp.registers[0]
            reg = (reg | mask) if value else (reg & ~mask & 0xFFFF)
            return await link.call("write_register", timeout, address=a.offset, value=reg, device_id=unit)
