"""The Modbus TCP/RTU driver: device keys, planned batched reads, typed writes, error accounting."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from pymodbus.exceptions import ModbusException

from edged.cext import codec
from edged.driver import DeviceSpec, Driver
from edged.errors import DeviceUnavailable, ReadFailed
from edged.schema import Section, describe
from edged.tag import DataType, Quality, Reading, Tag

from .address import (MAX_BITS, MAX_REGISTERS, MAX_UNIT_ID, T_BIT, T_COIL, T_STRING, ModbusAddress, Table,
                      parse_tag_address)
from .line import Link, LinkDown, LinkTimeout, SerialLine, SerialSettings, TcpLink, attach_serial, detach_serial
from .plan import Limits, Request, build_plan, unit_of

log = logging.getLogger(__name__)

READ_METHOD = {Table.COIL: "read_coils", Table.DISCRETE: "read_discrete_inputs",
               Table.HOLDING: "read_holding_registers", Table.INPUT: "read_input_registers"}
EXCEPTION_NAMES = {
    1: "ILLEGAL FUNCTION", 2: "ILLEGAL DATA ADDRESS", 3: "ILLEGAL DATA VALUE", 4: "SERVER DEVICE FAILURE",
    5: "ACKNOWLEDGE", 6: "SERVER DEVICE BUSY", 7: "NEGATIVE ACKNOWLEDGE", 8: "MEMORY PARITY ERROR",
    10: "GATEWAY PATH UNAVAILABLE", 11: "GATEWAY TARGET DEVICE FAILED TO RESPOND",
}
_RTU_KEYS = ("baudrate", "parity", "bytesize", "stopbits")


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
    else:
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
                    limits=limits, bit_write=bit_write)


def compile_request(req: Request) -> None:
    """Attach the codec program that decodes a request's response into readings of its tags."""
    entries = []
    for tag in req.tags:
        a: ModbusAddress = tag.addr
        entries.append((a.offset - req.start, a.type_code, int(a.order), a.bit, a.length,
                        tag.scale, tag.offset))
    req.program = codec.Program(entries, req.count, req.table.is_bit, req.tags, Reading)


class ModbusDriver(Driver):
    """A Modbus device reached over TCP or a shared RTU serial line; reads follow a plan made at load."""

    kind = "modbus"

    def __init__(self, spec: DeviceSpec, tags: list[Tag], settings: Settings,
                 requests: dict[str, list[Request]]) -> None:
        super().__init__(spec, tags)
        self.settings = settings
        self.requests = requests
        self._link: Link | None = None
        self._connects = 0
        self._logged: set[tuple[Any, ...]] = set()

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

    def polled_groups(self) -> list[str]:
        """Every scan group that has at least one request."""
        return sorted(self.requests)

    # -- connection ---------------------------------------------------------------------
    async def connect(self) -> None:
        """Open the TCP connection, or join the shared serial line; DeviceUnavailable on failure."""
        s = self.settings
        timeout = self.spec.timeout_s
        try:
            if s.transport == "tcp":
                if self._link is None:
                    self._link = TcpLink(s.host, s.port)
                await self._link.open(timeout)
            else:
                if self._link is None:
                    self._link = attach_serial(s.serial, id(self), self.spec.name)  # type: ignore[arg-type]
                async with self._link.lock:
                    await self._link.open(timeout)
        except LinkDown as exc:
            self.stats.error("connection")
            await self.close()
            raise DeviceUnavailable(f"device {self.spec.name}: {exc}") from None
        self._connects += 1
        if self._connects > 1:
            self.stats.reconnects += 1

    async def close(self) -> None:
        """Close the TCP connection, or leave the serial line (closed when its last device leaves)."""
        link, self._link = self._link, None
        if link is None:
            return
        if isinstance(link, SerialLine):
            detach_serial(link, id(self))
        else:
            link.drop()

    def _require_link(self) -> Link:
        if self._link is None or not self._link.connected:
            self.stats.error("connection")
            raise DeviceUnavailable(f"device {self.spec.name}: not connected ({self.settings.endpoint()})")
        return self._link

    def _lost(self, exc: Exception, what: str) -> DeviceUnavailable:
        """Account a timeout or a lost connection; drop what must be dropped; the error to raise."""
        link = self._link
        if isinstance(exc, LinkTimeout):
            self.stats.timeouts += 1
            self.stats.error("timeout")
            # TCP: close the connection so a late answer is never taken for the next request. A shared
            # serial line stays open for the other units; this device leaves it until reconnected.
            if link is not None and not isinstance(link, SerialLine):
                link.drop()
        else:
            self.stats.error("connection")
            if link is not None:
                link.drop()
        return DeviceUnavailable(f"device {self.spec.name}: {what}: {exc}")

    # -- reads -----------------------------------------------------------------------------
    async def read(self, group: str) -> list[Reading]:
        """Execute the plan of a scan group; bad-quality readings for requests that failed."""
        requests = self.requests.get(group)
        if not requests:
            return []
        link = self._require_link()
        timeout = self.spec.timeout_s
        out: list[Reading] = []
        failures: list[str] = []
        for req in requests:
            try:
                rsp = await link.request(READ_METHOD[req.table], timeout, address=req.start, count=req.count,
                                         device_id=req.unit)
            except (LinkTimeout, LinkDown) as exc:
                self.stats.requests += 1
                raise self._lost(exc, f"unit {req.unit} {req.span()}") from None
            except ModbusException as exc:
                self.stats.requests += 1
                failures.append(self._failed(req, "malformed", f"bad response: {exc}"))
                out.extend(self._bad(req))
                continue
            ts = time.time_ns()
            self.stats.requests += 1
            if rsp.isError():
                code = int(getattr(rsp, "exception_code", 0) or 0)
                failures.append(self._failed(req, "exception", f"exception {code} {exception_name(code)}", code))
                out.extend(self._bad(req, ts))
                continue
            data = rsp.bits if req.table.is_bit else rsp.registers
            try:
                if (rsp.function_code & 0x7F) != req.table.fc:
                    raise ValueError(f"expected function code {req.table.fc}, found {rsp.function_code}")
                readings = req.program.readings(data, ts, Quality.GOOD)
            except (ValueError, TypeError, OverflowError) as exc:
                failures.append(self._failed(req, "malformed", f"malformed response: {exc}"))
                out.extend(self._bad(req, ts))
                continue
            self._recovered(req)
            self.stats.values += len(readings)
            out.extend(readings)
        if failures and len(failures) == len(requests):
            raise ReadFailed(f"device {self.spec.name}: scan {group}: " + "; ".join(failures),
                             kind="exception" if all("exception" in f for f in failures) else "malformed")
        return out

    def _bad(self, req: Request, ts: int | None = None) -> list[Reading]:
        ts = time.time_ns() if ts is None else ts
        return [Reading(tag, None, Quality.BAD, ts) for tag in req.tags]

    def _failed(self, req: Request, kind: str, detail: str, code: int = 0) -> str:
        """Count and log (once per distinct error until the request succeeds again) a failed request."""
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

        Failures raise ReadFailed (kind ``refused`` when the encoder refuses the value and nothing was
        sent, e.g. a string longer than the tag's length; ``exception`` or ``malformed`` for the device's
        answer) or DeviceUnavailable (timeout, lost connection).
        """
        a: ModbusAddress = tag.addr
        if not tag.writable or not a.table.writable:
            self.stats.writes_failed += 1
            raise ReadFailed(f"{tag.key}: write refused: the tag is not writable", kind="refused")
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
            raise ReadFailed(f"{tag.key}: write refused, nothing sent: {exc}", kind="refused") from None
        link = self._require_link()
        timeout = self.spec.timeout_s
        try:
            if a.type_code == T_COIL:
                rsp = await link.request("write_coil", timeout, address=a.offset, value=value, device_id=unit)
            elif a.type_code == T_BIT:
                rsp = await self._write_bit(link, a, unit, value, timeout)
            elif len(registers) == 1 and a.type_code != T_STRING:  # type: ignore[arg-type]
                rsp = await link.request("write_register", timeout, address=a.offset, value=registers[0],  # type: ignore[index]
                                         device_id=unit)
            else:
                rsp = await link.request("write_registers", timeout, address=a.offset, values=registers,
                                         device_id=unit)
        except (LinkTimeout, LinkDown) as exc:
            self.stats.writes_failed += 1
            raise self._lost(exc, f"write {tag.name} (unit {unit} {a.span()})") from None
        except ModbusException as exc:
            self.stats.writes_failed += 1
            self.stats.error("malformed")
            raise ReadFailed(f"device {self.spec.name}: write {tag.name}: bad response: {exc}", kind="malformed") from None
        if rsp.isError():
            code = int(getattr(rsp, "exception_code", 0) or 0)
            self.stats.writes_failed += 1
            self.stats.error("exception")
            raise ReadFailed(f"device {self.spec.name}: write {tag.name} (fc {rsp.function_code & 0x7F} unit {unit} "
                             f"{a.table.label} {a.span()}) refused: exception {code} {exception_name(code)}",
                             kind="exception")
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
            if not rsp.registers:
                raise ModbusException("empty read in read-modify-write")
            reg = rsp.registers[0]
            reg = (reg | mask) if value else (reg & ~mask & 0xFFFF)
            return await link.call("write_register", timeout, address=a.offset, value=reg, device_id=unit)
