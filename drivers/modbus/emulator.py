"""ModbusEmulator: real pymodbus servers (TCP, or RTU on a pty pair) serving the configured devices' units."""
from __future__ import annotations

import asyncio
import logging
import os
import random
import shutil
import subprocess
import time
from array import array
from dataclasses import replace
from typing import Any

from pymodbus.constants import ExcCodes
from pymodbus.exceptions import NoSuchIdException
from pymodbus.framer import FramerType
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import SimData, SimDevice

from edged.cext import codec
from edged.driver import Emulator
from edged.tag import Tag

from .address import T_BIT, T_COIL, ModbusAddress, Table
from .driver import ModbusDriver
from .line import open_through_edged
from .plan import unit_of

log = logging.getLogger(__name__)

_FC_TABLE = {1: Table.COIL, 5: Table.COIL, 15: Table.COIL, 2: Table.DISCRETE, 4: Table.INPUT,
             3: Table.HOLDING, 6: Table.HOLDING, 16: Table.HOLDING, 22: Table.HOLDING, 23: Table.HOLDING}
_SPACE = 65536


class UnitMemory:
    """The four tables of one emulated unit; only offsets marked valid answer, others give exception 2."""

    def __init__(self) -> None:
        self.values = {t: array("H", bytes(2 * _SPACE)) for t in Table}
        self.valid = {t: bytearray(_SPACE) for t in Table}

    def cover(self, table: Table, start: int, count: int) -> None:
        """Make offsets start..start+count-1 of a table answer."""
        self.valid[table][start:start + count] = b"\1" * count

    def covered(self, table: Table, start: int, count: int) -> bool:
        """True when every offset of the range answers."""
        if start < 0 or count < 1 or start + count > _SPACE:
            return False
        return self.valid[table].find(0, start, start + count) < 0


class Store:
    """The server context of one endpoint: units, fault injection; duck-types pymodbus's datastore API."""

    def __init__(self) -> None:
        self.units: dict[int, UnitMemory] = {}
        self.silent: set[int] = set()
        self.short: set[int] = set()
        self.delays: dict[int, float] = {}
        self.exceptions: dict[tuple[int, Table, int], int] = {}
        self.drop: dict[int, float] = {}  # unit -> share of requests left unanswered
        self.rng = random.Random(0)
        self.writes = 0  # write requests accepted
        self.requests = 0  # request PDUs received (answered or not), counted by trace_pdu

    def trace_pdu(self, sending: bool, pdu: Any) -> Any:
        """pymodbus PDU hook of this endpoint's server: counts the requests received."""
        if not sending:
            self.requests += 1
        return pdu

    def unit(self, unit_id: int) -> UnitMemory:
        """The memory of a unit (created on first use)."""
        return self.units.setdefault(unit_id, UnitMemory())

    def device_ids(self) -> list[int]:
        """Unit ids served (pymodbus broadcast support)."""
        return list(self.units)

    def _enter(self, device_id: int, func_code: int, address: int, count: int
               ) -> tuple[UnitMemory, Table] | ExcCodes:
        if device_id in self.silent or device_id not in self.units:
            raise NoSuchIdException(f"unit {device_id} does not answer")
        share = self.drop.get(device_id)
        if share and self.rng.random() < share:
            raise NoSuchIdException(f"unit {device_id}: request dropped (fault)")
        table = _FC_TABLE.get(func_code)
        if table is None:
            return ExcCodes.ILLEGAL_FUNCTION
        mem = self.units[device_id]
        if not mem.covered(table, address, count):
            return ExcCodes.ILLEGAL_ADDRESS
        for off in range(address, address + count):
            code = self.exceptions.get((device_id, table, off))
            if code:
                return ExcCodes(code)
        return mem, table

    async def _late(self, device_id: int) -> None:
        """Wait out an injected response delay (values were sampled before it, like a slow device)."""
        delay = self.delays.get(device_id)
        if delay:
            await asyncio.sleep(delay)

    async def async_getValues(self, device_id: int, func_code: int, address: int, count: int = 1
                              ) -> list[int] | list[bool] | ExcCodes:
        """Read values (called by pymodbus request handlers)."""
        entered = self._enter(device_id, func_code, address, count)
        if isinstance(entered, ExcCodes):
            await self._late(device_id)
            return entered
        mem, table = entered
        if device_id in self.short:
            count = max(0, count - 1)
        values = mem.values[table][address:address + count]
        result = [bool(v) for v in values] if table.is_bit else values.tolist()
        await self._late(device_id)
        return result

    async def async_setValues(self, device_id: int, func_code: int, address: int,
                              values: list[int] | list[bool]) -> ExcCodes | None:
        """Write values (called by pymodbus request handlers)."""
        entered = self._enter(device_id, func_code, address, len(values))
        if isinstance(entered, ExcCodes):
            return entered
        mem, table = entered
        if not table.writable:
            return ExcCodes.ILLEGAL_ADDRESS
        mem.values[table][address:address + len(values)] = array("H", [int(v) & 0xFFFF for v in values])
        self.writes += 1
        await self._late(device_id)
        return None


class ModbusEmulator(Emulator):
    """Serves the given Modbus devices at their configured endpoints on this machine.

    TCP devices get a ``ModbusTcpServer`` per host:port; RTU devices get a ``ModbusSerialServer`` per
    serial port on the far end of a pty pair made with socat (the device's ``port`` becomes the near
    end: it must not exist yet), or on ``serial_peers[port]`` when the caller made the pair itself.
    Every unit answers for the ranges its devices' plans read and for every tag's address; other
    offsets answer ILLEGAL DATA ADDRESS; unknown or silenced units do not answer at all.
    """

    def __init__(self, drivers: list[ModbusDriver], serial_peers: dict[str, str] | None = None) -> None:
        self.drivers = list(drivers)
        self.serial_peers = dict(serial_peers or {})
        self.stores: dict[Any, Store] = {}
        self._where: dict[str, tuple[Store, int]] = {}  # device name -> (store, default unit)
        self._servers: list[Any] = []
        self._by_key: dict[Any, Any] = {}
        self._peers: dict[Any, str] = {}  # RTU endpoint key -> the pty the server uses
        self._keys: dict[str, Any] = {}  # device name -> endpoint key
        self._socats: list[tuple[subprocess.Popen[bytes], tuple[str, str]]] = []
        for drv in self.drivers:
            s = drv.settings
            key: Any = (("tcp", s.host, s.port) if s.transport == "tcp"
                        else ("rtu", os.path.realpath(s.serial.port)))  # type: ignore[union-attr]
            store = self.stores.setdefault(key, Store())
            self._where[drv.spec.name] = (store, s.unit_id)
            self._keys[drv.spec.name] = key
            for reqs in drv.requests.values():
                for req in reqs:
                    store.unit(req.unit).cover(req.table, req.start, req.count)
            for tag in drv.tags:
                a: ModbusAddress = tag.addr
                store.unit(unit_of(tag, s.unit_id)).cover(a.table, a.offset, a.count)

    # -- lifecycle ----------------------------------------------------------------------
    async def start(self) -> None:
        """Start one server per endpoint (and the pty pairs RTU endpoints need)."""
        try:
            for key in self.stores:
                await self._start_endpoint(key)
        except BaseException:
            await self.stop()
            raise

    async def _start_endpoint(self, key: Any) -> None:
        """Start the server of one endpoint (an RTU endpoint keeps its pty pair across a stop and start)."""
        store = self.stores[key]
        if key[0] == "tcp":
            server = ModbusTcpServer(_placeholder(), address=(key[1], key[2]), ignore_missing_devices=True,
                                     trace_pdu=store.trace_pdu)
        else:
            ports = [d.settings.serial for d in self.drivers if d.settings.transport == "rtu"
                     and os.path.realpath(d.settings.serial.port) == key[1]]  # type: ignore[union-attr]
            ser = ports[0]
            assert ser is not None
            peer = self._peers.get(key)
            if peer is None:
                peer = (next((self.serial_peers[p.port] for p in ports if p.port in self.serial_peers), None)
                        or await self._pty_pair(ser.port))
                self._peers[key] = peer
            server = ModbusSerialServer(_placeholder(), framer=FramerType.RTU, port=peer,
                                        baudrate=ser.baudrate, parity=ser.parity, bytesize=ser.bytesize,
                                        stopbits=ser.stopbits, ignore_missing_devices=True,
                                        trace_pdu=store.trace_pdu)
            open_through_edged(server, replace(ser, port=peer))  # pty-tolerant, like the driver
        server.context = store  # our datastore: exact coverage, fault injection
        await server.serve_forever(background=True)
        self._servers.append(server)
        self._by_key[key] = server

    async def _pty_pair(self, port: str) -> str:
        """Make a pty pair with socat: ``port`` for the driver, ``port + '.emu'`` for the server."""
        socat = shutil.which("socat")
        if socat is None:
            raise RuntimeError("the Modbus RTU emulator needs socat (apt-get install socat)")
        peer = port + ".emu"
        for path in (port, peer):
            if os.path.lexists(path):
                raise RuntimeError(f"cannot emulate serial port {path}: it exists already")
        proc = subprocess.Popen([socat, f"pty,raw,echo=0,link={port}", f"pty,raw,echo=0,link={peer}"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._socats.append((proc, (port, peer)))
        deadline = time.monotonic() + 30.0
        while not (os.path.exists(port) and os.path.exists(peer)):
            if proc.poll() is not None:
                raise RuntimeError(f"socat exited with {proc.returncode} making a pty pair for {port}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"socat made no pty pair for {port} within 30 s")
            await asyncio.sleep(0.01)
        return peer

    async def stop(self) -> None:
        """Stop every server and pty pair."""
        servers, self._servers = self._servers, []
        self._by_key.clear()
        for server in servers:
            try:
                await server.shutdown()
            except Exception as exc:  # stopping must release everything else too
                log.debug("emulator: shutdown failed: %r", exc)
        self._peers.clear()
        socats, self._socats = self._socats, []
        for proc, links in socats:
            proc.terminate()
            deadline = time.monotonic() + 5.0
            while proc.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            for link in links:  # socat removes them when it ends normally; never leave them behind
                if os.path.islink(link):
                    os.unlink(link)

    # -- values -----------------------------------------------------------------------------
    def _locate(self, tag: Tag) -> tuple[UnitMemory, ModbusAddress]:
        if tag.device not in self._where:
            raise KeyError(f"{tag.key}: device {tag.device!r} is not emulated here")
        store, default_unit = self._where[tag.device]
        return store.unit(unit_of(tag, default_unit)), tag.addr

    def set_value(self, tag: Tag, value: Any) -> None:
        """Set the engineering value a tag reads as (encoded through the driver's codec).

        Integer registers hold the nearest integer of a fractional value, as a device would; float
        registers may hold NaN and infinities; a value outside the raw type raises ValueError.
        """
        mem, a = self._locate(tag)
        regs = mem.values[a.table]
        if a.type_code == T_COIL:
            regs[a.offset] = 1 if value else 0
        elif a.type_code == T_BIT:
            mask = 1 << a.bit
            regs[a.offset] = (regs[a.offset] | mask) if value else (regs[a.offset] & ~mask & 0xFFFF)
        else:
            raw = tag.to_raw(value)
            if tag.dtype.is_integer and isinstance(raw, float):
                raw = round(raw)
            words = codec.encode(a.type_code, int(a.order), raw, a.length, False)
            regs[a.offset:a.offset + len(words)] = array("H", words)

    def get_value(self, tag: Tag) -> Any:
        """The engineering value the emulated device holds for a tag."""
        mem, a = self._locate(tag)
        regs = mem.values[a.table]
        if a.type_code == T_COIL:
            return bool(regs[a.offset])
        raw = codec.decode(a.type_code, int(a.order), regs[a.offset:a.offset + a.count].tolist(), a.length,
                           max(a.bit, 0))
        return tag.to_engineering(raw)

    # -- fault injection -----------------------------------------------------------------------
    def _stores_of(self, unit_id: int) -> list[Store]:
        return [s for s in self.stores.values() if unit_id in s.units]

    def silence(self, unit_id: int, silent: bool = True) -> None:
        """Stop (or resume) answering any request to a unit id."""
        for s in self._stores_of(unit_id):
            (s.silent.add if silent else s.silent.discard)(unit_id)

    def delay(self, unit_id: int, seconds: float) -> None:
        """Answer a unit's requests only after a delay (0 to answer at once again)."""
        for s in self._stores_of(unit_id):
            s.delays[unit_id] = seconds

    def malformed(self, unit_id: int, on: bool = True) -> None:
        """Answer a unit's reads with one value fewer than asked (a malformed response)."""
        for s in self._stores_of(unit_id):
            (s.short.add if on else s.short.discard)(unit_id)

    def set_exception(self, unit_id: int, table: Table, offset: int, code: int | None) -> None:
        """Answer any request touching one offset with a Modbus exception code (None to stop)."""
        for s in self._stores_of(unit_id):
            if code:
                s.exceptions[(unit_id, table, offset)] = code
            else:
                s.exceptions.pop((unit_id, table, offset), None)

    def request_count(self) -> int:
        """Request PDUs the servers received (answered or not)."""
        return sum(s.requests for s in self.stores.values())

    faults = frozenset({"stop", "start", "latency", "drop", "exception", "malformed", "silence-unit", "clear"})

    async def inject(self, device: str, fault: str, arg: str = "") -> None:
        """Play a fault on one device: ``stop``/``start`` its endpoint (TCP: connections refused), ``latency:MS``,
        ``drop:SHARE``, ``exception:CODE`` (every read of the device answers that code), ``malformed`` (one value
        short), ``silence-unit:ID`` (a unit behind a gateway stops answering), ``clear`` (undo all but stop)."""
        if fault not in self.faults:
            await super().inject(device, fault, arg)
        store, unit = self._where[device]
        key = self._keys[device]
        units = sorted({unit_of(t, unit) for t in self._device_tags(device)}) or [unit]
        if fault == "stop":
            server = self._by_key.pop(key, None)
            if server is not None:
                self._servers.remove(server)
                await server.shutdown()
        elif fault == "start":
            if key not in self._by_key:
                await self._start_endpoint(key)
        elif fault == "latency":
            from edged.simulation.server import parse_duration_s

            for u in units:
                store.delays[u] = parse_duration_s(arg or "200ms")
        elif fault == "drop":
            for u in units:
                store.drop[u] = min(1.0, max(0.0, float(arg or "0.5")))
        elif fault == "exception":
            code = int(arg or "4")
            for t in self._device_tags(device):
                a: ModbusAddress = t.addr
                for off in range(a.offset, a.offset + a.count):
                    store.exceptions[(unit_of(t, unit), a.table, off)] = code
        elif fault == "malformed":
            store.short.update(units)
        elif fault == "silence-unit":
            store.silent.add(int(arg) if arg else unit)
        else:  # clear
            for u in units:
                store.delays.pop(u, None)
                store.drop.pop(u, None)
                store.short.discard(u)
            store.silent.clear()
            for k in [k for k in store.exceptions if k[0] in units]:
                del store.exceptions[k]

    def _device_tags(self, device: str) -> list[Tag]:
        return next((d.tags for d in self.drivers if d.spec.name == device), [])

    def writes_seen(self) -> dict[str, int]:
        """Write requests each device's endpoint accepted (devices sharing an endpoint share the count)."""
        return {name: store.writes for name, (store, _) in self._where.items()}


def _placeholder() -> SimDevice:
    """A minimal device for the server constructor; the emulator replaces the context with its Store."""
    return SimDevice(0, simdata=SimData(0))
