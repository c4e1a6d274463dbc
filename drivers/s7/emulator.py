"""S7Emulator: python-snap7's Server serving the DBs, M, I, Q, T and C areas a cell's S7 tags declare, with fault hooks.

The server is snap7.server.Server with what an S7 CPU does and the library's server does not: bit writes
that touch only their bit, the CPU operating state in SZL 0x0424, rejected ISO connections for a wrong
rack/slot (remote TSAP), PUT/GET switched off (S7 error 0x8104) and DBs with optimized block access
(item error 0x03). Hooks for the HIL fault-injection kit: ``set_cpu_state("stop"|"run")``, ``stop()``
and ``start()`` (the memory survives a restart), ``set_put_get(enabled)``, ``set_optimized(db, flag)``.
"""
from __future__ import annotations

import asyncio
import logging
import random
import socket
import struct
import threading
import time
from typing import Any

from snap7.server import CPUState, Server
from snap7.type import Area, SrvArea

from edged.driver import Emulator
from edged.tag import Tag

from .address import S7Address
from .codec import decoder, encode
from .driver import S7Driver
from .types import TYPES

log = logging.getLogger(__name__)

_SRV_AREA = {Area.DB: SrvArea.DB, Area.MK: SrvArea.MK, Area.PE: SrvArea.PE, Area.PA: SrvArea.PA,
             Area.TM: SrvArea.TM, Area.CT: SrvArea.CT}
_READ, _WRITE = 0x04, 0x05
_BIT = 0x01


class S7Server(Server):
    """snap7.server.Server plus CPU state, TSAP check, PUT/GET switch, optimized DBs and real bit writes."""

    def __init__(self, host: str = "127.0.0.1", tsaps: set[int] | None = None) -> None:
        super().__init__(log=False)
        self.host = host
        self.tsaps = tsaps  # accepted remote TSAPs; None accepts any
        self.put_get = True
        self.optimized: set[int] = set()
        self.delay_s = 0.0  # answer reads and writes this late (fault injection: late answers)
        self.malformed = False  # answer reads with a wrong PDU reference (fault injection: a stray answer)
        self.drop = 0.0  # share of read/write requests never answered
        self.item_error: int | None = None  # every read item answers this return code (or header error > 0xFF)
        self.writes = 0  # write requests answered
        self._rng = random.Random(0)
        self.identity = (b"6ES7 516-3AN02-0AB0", b"CPU 1516-3 PN/DP", (3, 0, 1))
        self._sockets: set[socket.socket] = set()
        self._sock_lock = threading.Lock()

    # -- connections -----------------------------------------------------------------------
    def _handle_client(self, client_socket: socket.socket, address: tuple[str, int]) -> None:
        with self._sock_lock:
            self._sockets.add(client_socket)
        try:
            if self.tsaps is not None and self._called_tsap(client_socket) not in self.tsaps:
                log.info("S7 emulator: refusing an ISO connection for an unknown TSAP (wrong rack/slot)")
                client_socket.close()
                return
            super()._handle_client(client_socket, address)
        finally:
            with self._sock_lock:
                self._sockets.discard(client_socket)

    @staticmethod
    def _called_tsap(sock: socket.socket) -> int | None:
        """The called (remote) TSAP of the COTP connection request, peeked without consuming it."""
        try:
            sock.settimeout(5.0)
            head = sock.recv(4, socket.MSG_PEEK | socket.MSG_WAITALL)
            if len(head) < 4:
                return None
            length = struct.unpack(">H", head[2:4])[0]
            data = sock.recv(length, socket.MSG_PEEK | socket.MSG_WAITALL)
        except OSError:
            return None
        off = 4 + 7
        while off + 2 <= len(data):
            code, n = data[off], data[off + 1]
            if code == 0xC2 and n == 2 and off + 4 <= len(data):
                return struct.unpack(">H", data[off + 2:off + 4])[0]
            off += 2 + n
        return None

    def stop(self) -> int:
        """Stop listening and drop every client connection at once (like a CPU switched off)."""
        self.running = False
        with self._sock_lock:
            for s in list(self._sockets):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        return super().stop()

    # -- requests --------------------------------------------------------------------------
    def _process_request(self, request_data: bytes, client_address: tuple[str, int]) -> bytes | None:
        if (not self.put_get and len(request_data) > 10 and request_data[1] == 0x01
                and request_data[10] in (_READ, _WRITE)):
            return self._build_error_response(self._parse_request(request_data), 0x8104)
        job = len(request_data) > 10 and request_data[1] == 0x01 and request_data[10] in (_READ, _WRITE)
        if job and self.drop and self._rng.random() < self.drop:
            return None
        if job and self.delay_s:
            time.sleep(self.delay_s)
        if job and self.item_error is not None and self.item_error > 0xFF:
            return self._build_error_response(self._parse_request(request_data), self.item_error)
        if job and request_data[10] == _WRITE:
            self.writes += 1
        response = super()._process_request(request_data, client_address)
        if self.malformed and response and len(response) > 12 and len(request_data) > 10 and request_data[10] == _READ:
            seq = (struct.unpack_from(">H", response, 4)[0] + 1) & 0xFFFF
            response = response[:4] + struct.pack(">H", seq) + response[6:]
        return response

    def _parse_address_specification(self, addr_spec: bytes) -> dict[str, Any]:
        out = super()._parse_address_specification(addr_spec)
        if out and out.get("word_len") == _BIT and len(addr_spec) >= 12:
            out["bit"] = addr_spec[11] & 0x07
        return out

    def _read_from_memory_area(self, area: Any, db_number: int, start: int, count: int) -> tuple[int, bytearray]:
        if self.item_error is not None:
            return self.item_error, bytearray()
        if int(area) == int(Area.DB) and db_number in self.optimized and (area, db_number) in self.memory_areas:
            return 0x03, bytearray()
        return super()._read_from_memory_area(area, db_number, start, count)

    def _handle_write_area(self, request: dict[str, Any], client_address: tuple[str, int]) -> bytes:
        spec = (request.get("parameters") or {}).get("address_spec") or {}
        if spec.get("word_len") != _BIT:
            return super()._handle_write_area(request, client_address)
        key = (spec.get("area"), spec.get("db_number"))
        data = (request.get("data") or {}).get("data", b"")
        if key not in self.memory_areas or len(data) != 1 or spec.get("count") != 1:
            return self._build_error_response(request, 0x8404)
        with self.area_locks[key]:
            mem = self.memory_areas[key]
            byte, bit = spec["start"], spec.get("bit", 0)
            if byte >= len(mem):
                return self._build_error_response(request, 0x8404)
            if data[0] & 1:
                mem[byte] |= 1 << bit
            else:
                mem[byte] &= ~(1 << bit) & 0xFF
        header = struct.pack(">BBHHHHBB", 0x32, 0x03, 0, request["sequence"], 2, 1, 0, 0)
        return header + bytes([_WRITE, 1, 0xFF])

    def _get_szl_data(self, szl_id: int, szl_index: int) -> bytes | None:
        if szl_id == 0x0424:
            mode = {CPUState.RUN: 0x08, CPUState.STOP: 0x04}.get(self.cpu_state, 0x00)
            record = struct.pack(">HBB", 0x4303, 0xFF, mode) + bytes(16)
            return struct.pack(">HH", len(record), 1) + record
        if szl_id == 0x0011:
            mlfb, _, (v1, v2, v3) = self.identity
            record = struct.pack(">H", 0x0001) + mlfb.ljust(20, b"\0")[:20] + bytes([0, v1, v2, v3])
            return struct.pack(">HH", 26, 1) + record
        data = super()._get_szl_data(szl_id, szl_index)
        if szl_id == 0x001C and data is not None:
            buf = bytearray(data)
            name = self.identity[1]
            buf[40:64] = name.ljust(24, b"\0")[:24]
            buf[176:208] = name.ljust(32, b"\0")[:32]
            buf[6:30] = b"EDGED-EMULATOR".ljust(24, b"\0")
            return bytes(buf)
        return data


class S7Emulator(Emulator):
    """One S7Server per configured endpoint port, with memory covering every tag of the devices served."""

    faults = frozenset({"stop", "start", "latency", "drop", "exception", "malformed", "plc-stop", "plc-run", "clear"})

    def __init__(self, drivers: list[S7Driver]) -> None:  # type: ignore[override]
        super().__init__(drivers)  # type: ignore[arg-type]
        self.servers: dict[int, S7Server] = {}
        self._server_of: dict[str, S7Server] = {}
        by_port: dict[int, list[S7Driver]] = {}
        for d in drivers:
            by_port.setdefault(d.settings.port, []).append(d)
        for port, devs in by_port.items():
            # loopback only: devices of a cell are served on 127.0.0.1 at their configured port
            srv = S7Server("127.0.0.1", {d.settings.tsap for d in devs})
            sizes: dict[tuple[Area, int], int] = {}
            for d in devs:
                self._server_of[d.spec.name] = srv
                for tag in d.tags:
                    a: S7Address = tag.addr
                    key = (a.area, a.db if a.area is Area.DB else 0)
                    end = (a.byte + 1) * 2 if a.area in (Area.TM, Area.CT) else a.byte + a.size
                    sizes[key] = max(sizes.get(key, 0), end)
            for (area, index), size in sizes.items():
                srv.register_area(_SRV_AREA[area], index, bytearray(size))
            for d in devs:
                for tag in d.tags:
                    a = tag.addr
                    if a.s7type in ("STRING", "WSTRING"):  # a valid empty string: its max length set
                        self._poke(srv, a, encode(a, ""))
                    elif a.s7type in ("DT", "DTL"):  # all-zero bytes are no valid date: start at the epoch
                        self._poke(srv, a, encode(a, "1990-01-01T00:00:00" if a.s7type == "DT" else "1970-01-01T00:00:00"))
            self.servers[port] = srv

    # -- lifecycle hooks ---------------------------------------------------------------------
    async def start(self) -> None:
        """Listen on every endpoint (again after stop(); the memory is kept)."""
        for port, srv in self.servers.items():
            if not srv.running:
                await asyncio.to_thread(srv.start, port)

    async def stop(self) -> None:
        """Stop listening and drop every connection (the memory is kept for a later start())."""
        for srv in self.servers.values():
            await asyncio.to_thread(srv.stop)

    def set_cpu_state(self, state: str, device: str | None = None) -> None:
        """Put the emulated CPU(s) in ``"stop"`` or ``"run"`` (reads go on; the state shows in SZL 0x0424)."""
        if state not in ("stop", "run"):
            raise ValueError(f"expected 'stop' or 'run', found {state!r}")
        for srv in self._servers(device):
            srv.cpu_state = CPUState.STOP if state == "stop" else CPUState.RUN

    def set_put_get(self, enabled: bool, device: str | None = None) -> None:
        """Switch PUT/GET access off (reads and writes answer S7 error 0x8104) or on."""
        for srv in self._servers(device):
            srv.put_get = enabled

    def set_optimized(self, db: int, optimized: bool = True, device: str | None = None) -> None:
        """Give a DB optimized block access (absolute reads answer item error 0x03) or take it away."""
        for srv in self._servers(device):
            (srv.optimized.add if optimized else srv.optimized.discard)(db)

    def set_delay(self, seconds: float, device: str | None = None) -> None:
        """Answer reads and writes ``seconds`` late (0: at once), e.g. later than the driver's timeout."""
        for srv in self._servers(device):
            srv.delay_s = seconds

    def set_malformed(self, enabled: bool, device: str | None = None) -> None:
        """Answer reads with a wrong PDU reference (a response that must never be taken as the answer)."""
        for srv in self._servers(device):
            srv.malformed = enabled

    async def inject(self, device: str, fault: str, arg: str = "") -> None:
        """Play a fault on one device's endpoint (devices sharing a port share it): ``stop``/``start`` (connections
        refused, memory kept), ``latency:MS``, ``drop:SHARE``, ``exception:CODE`` (every read item answers that
        return code, e.g. 5 out of range, 10 no such DB, 3 optimized DB; codes above 0xFF, e.g. 0x8104, are header
        errors: PUT/GET off), ``malformed`` (read answers with a wrong PDU reference), ``plc-stop``/``plc-run``,
        ``clear`` (undo latency, drop, exception, malformed)."""
        if fault not in self.faults:
            await super().inject(device, fault, arg)
        srv = self._server_of[device]
        if fault == "stop":
            await asyncio.to_thread(srv.stop)
        elif fault == "start":
            if not srv.running:
                port = next(p for p, s in self.servers.items() if s is srv)
                await asyncio.to_thread(srv.start, port)
        elif fault == "latency":
            from edged.simulation.server import parse_duration_s

            srv.delay_s = parse_duration_s(arg or "200ms")
        elif fault == "drop":
            srv.drop = min(1.0, max(0.0, float(arg or "0.5")))
        elif fault == "exception":
            srv.item_error = int(arg, 0) if arg else 0x05
        elif fault == "malformed":
            srv.malformed = True
        elif fault in ("plc-stop", "plc-run"):
            srv.cpu_state = CPUState.STOP if fault == "plc-stop" else CPUState.RUN
        else:  # clear
            srv.delay_s, srv.drop, srv.item_error, srv.malformed = 0.0, 0.0, None, False

    def writes_seen(self) -> dict[str, int]:
        """Write requests each device's endpoint answered (devices sharing a port share the count)."""
        return {name: srv.writes for name, srv in self._server_of.items()}

    def _servers(self, device: str | None) -> list[S7Server]:
        return list(self.servers.values()) if device is None else [self._server_of[device]]

    # -- values ------------------------------------------------------------------------------
    def set_value(self, tag: Tag, value: Any) -> None:
        """Store a tag's engineering value in the emulated memory (a BOOL sets only its bit)."""
        a: S7Address = tag.addr
        raw = tag.to_raw(value) if tag.scaled and not isinstance(value, (str, bool, list)) else value
        if a.count > 1 and not isinstance(raw, list):
            raw = [raw] * a.count  # `edged simulate --animate` sets numbers: fill the array
        if a.dtype.is_integer and not isinstance(raw, bool):
            raw = [round(x) for x in raw] if isinstance(raw, list) else round(raw)
        if a.s7type == "TIMER" and isinstance(raw, int):
            raw = max(0, min(9_990_000, raw))
            for base in (10, 100, 1000, 10000):  # the nearest S5TIME at the finest base that holds it
                if raw // base <= 999:
                    raw = min(round(raw / base), 999) * base
                    break
        self._poke(self._server_of[tag.device], a, encode(a, raw))

    def get_value(self, tag: Tag) -> Any:
        """The engineering value the emulated memory holds for a tag."""
        a: S7Address = tag.addr
        srv = self._server_of[tag.device]
        key = (a.area, a.db if a.area is Area.DB else 0)
        with srv.area_locks[key]:
            mem = bytes(srv.memory_areas[key])
        off = a.byte * 2 if a.area in (Area.TM, Area.CT) else a.byte
        return tag.to_engineering(decoder(a)(mem, off))

    @staticmethod
    def _poke(srv: S7Server, a: S7Address, data: bytes) -> None:
        key = (a.area, a.db if a.area is Area.DB else 0)
        with srv.area_locks[key]:
            mem = srv.memory_areas[key]
            if a.is_bit:
                if data[0]:
                    mem[a.byte] |= 1 << a.bit
                else:
                    mem[a.byte] &= ~(1 << a.bit) & 0xFF
                return
            off = a.byte * 2 if a.area in (Area.TM, Area.CT) else a.byte
            mem[off:off + len(data)] = data
