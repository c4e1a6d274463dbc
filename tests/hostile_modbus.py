"""A small hostile Modbus/TCP server (not pymodbus) that plays, on demand, every way a device can lie on the wire.

Real data: holding/input register ``i`` holds ``REAL_BASE + i``; coil/discrete ``i`` is ``real_bit(i)``.
Every lying answer carries INVENTED data instead (registers ``INVENTED``, bits the complement of the
real ones), so a test can tell that no invented value was ever reported good. Units in ``silent`` never
answer; units in ``late`` answer after ``late_s``. ``case`` is one of CASES, or ``"rotate"`` to play
them in turn, one per request. ``accepts`` counts TCP connections accepted.

``hold`` keeps answers back until ``release()`` (to see how many requests a client has in flight).

Run alone: ``python hostile_modbus.py [--port N] [--case rotate] [--silent 9]`` (prints ``serving PORT``).
"""
from __future__ import annotations

import argparse
import asyncio
import struct
import threading

REAL_BASE = 1000
INVENTED = 0xDEAD

CASES = (
    "ok",                # a correct answer
    "more_registers",    # more registers (or bit bytes) than requested, MBAP length and byte count consistent
    "tid0_first",        # a stray frame with transaction id 0 (invented data) before the correct answer
    "coil_short",        # byte count says 4, one data byte follows (MBAP length counts the one byte)
    "wrong_unit",        # the answer names another unit id
    "short_mbap_1",      # MBAP length 1 byte shorter than the PDU sent
    "short_mbap_2",
    "short_mbap_3",
    "lying_bytecount",   # the byte count claims 2 more bytes than carried; MBAP length counts what is carried
    "wrong_function",    # fc 4 answering fc 3 (and 3 answering the others)
    "wrong_tid",         # the answer carries another transaction id (and no correct answer follows)
    "exception_wrong_fc",  # an exception response for another function code
    "trailing_garbage",  # a correct answer followed by 3 garbage bytes
    "split",             # a correct answer split across TCP segments
)


def real_bit(i: int) -> bool:
    """The real value of coil or discrete input i."""
    return i % 3 == 0


def _pack_bits(bits: list[bool]) -> bytes:
    out = bytearray((len(bits) + 7) // 8)
    for i, b in enumerate(bits):
        if b:
            out[i // 8] |= 1 << (i % 8)
    return bytes(out)


class HostileServer:
    """The hostile server; ``start()``/``stop()`` in a running loop, or ``start_in_thread()`` for subprocess tests."""

    def __init__(self, case: str = "ok", silent: set[int] | None = None, late: set[int] | None = None,
                 late_s: float = 1.0, answer_units: set[int] | None = None) -> None:
        self.case = case
        self.silent = set(silent or ())
        self.late = set(late or ())
        self.late_s = late_s
        self.answer_units = answer_units  # None: every unit not silent answers
        self.accepts = 0
        self.played: dict[str, int] = {}
        self.requests = 0
        self.port = 0
        self._rotation = 0
        self._server: asyncio.base_events.Server | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.registers: dict[int, int] = {}  # writes land here (holding registers)
        self._writers: set[asyncio.StreamWriter] = set()
        self.hold = False  # while True, answers are kept back until release()
        self._held: list[tuple[asyncio.StreamWriter, str, int, int, bytes]] = []

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self, port: int = 0) -> int:
        """Listen on loopback (port 0: a free one); returns the port."""
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        """Stop listening and close every connection."""
        if self._server is not None:
            self._server.close()
            for w in list(self._writers):
                w.close()
            await self._server.wait_closed()
            self._server = None

    def start_in_thread(self, port: int = 0) -> int:
        """Serve from a background thread with its own event loop; returns the port."""
        ready = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            self._loop.run_until_complete(self.start(port))
            ready.set()
            self._loop.run_forever()
            self._loop.run_until_complete(self.stop())
            self._loop.close()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        ready.wait(10)
        return self.port

    def stop_thread(self) -> None:
        """Stop a server started with start_in_thread."""
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    # -- serving -------------------------------------------------------------------------------
    def _next_case(self) -> str:
        if self.case != "rotate":
            return self.case
        case = CASES[self._rotation % len(CASES)]
        self._rotation += 1
        return case

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepts += 1
        self._writers.add(writer)
        try:
            while True:
                head = await reader.readexactly(7)
                tid, pid, length, unit = struct.unpack(">HHHB", head)
                pdu = await reader.readexactly(length - 1)
                self.requests += 1
                if unit in self.silent or (self.answer_units is not None and unit not in self.answer_units):
                    continue
                case = self._next_case()
                self.played[case] = self.played.get(case, 0) + 1
                if self.hold:
                    self._held.append((writer, case, tid, unit, pdu))
                    continue
                if unit in self.late:
                    asyncio.get_running_loop().call_later(self.late_s, self._answer_later, writer, case, tid,
                                                          unit, pdu)
                    continue
                await self._answer(writer, case, tid, unit, pdu)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    def release(self) -> None:
        """Stop holding answers back and send the held ones (in the loop thread of the server)."""
        self.hold = False
        held, self._held = self._held, []
        for writer, case, tid, unit, pdu in held:
            self._answer_later(writer, case, tid, unit, pdu)

    def _answer_later(self, writer: asyncio.StreamWriter, case: str, tid: int, unit: int, pdu: bytes) -> None:
        if not writer.is_closing():
            asyncio.ensure_future(self._answer(writer, case, tid, unit, pdu))

    async def _answer(self, writer: asyncio.StreamWriter, case: str, tid: int, unit: int, pdu: bytes) -> None:
        fc = pdu[0]
        if fc in (1, 2, 3, 4):
            start, count = struct.unpack(">HH", pdu[1:5])
            frames = self._read_answer(case, tid, unit, fc, start, count)
        else:
            echo = self._write_echo(fc, pdu)
            if case == "exception_wrong_fc":
                echo = bytes([0x80 | (3 if fc != 3 else 4), 2])
            elif case == "wrong_unit":
                unit = (unit + 1) & 0xFF
            elif case not in ("ok", "split", "trailing_garbage", "tid0_first"):
                echo = echo[:-1] + bytes([echo[-1] ^ 1])  # an echo that differs from the request
            frames = [self._mbap(tid, unit, echo)]
        if case == "split":
            data = b"".join(frames)
            for i in range(len(data)):
                writer.write(data[i:i + 1])
                await writer.drain()
                await asyncio.sleep(0.001)
            return
        for f in frames:
            writer.write(f)
        await writer.drain()

    @staticmethod
    def _mbap(tid: int, unit: int, pdu: bytes, length_delta: int = 0) -> bytes:
        return struct.pack(">HHHB", tid, 0, len(pdu) + 1 + length_delta, unit) + pdu

    def _data(self, fc: int, start: int, count: int, invented: bool, extra: int = 0) -> bytes:
        if fc in (1, 2):
            bits = [real_bit(start + i) != invented for i in range(count + 8 * extra)]
            return _pack_bits(bits)
        regs = [INVENTED if invented else self.registers.get(start + i, REAL_BASE + start + i) & 0xFFFF
                for i in range(count + extra)]
        return struct.pack(f">{len(regs)}H", *regs)

    def _read_answer(self, case: str, tid: int, unit: int, fc: int, start: int, count: int) -> list[bytes]:
        real = self._data(fc, start, count, False)
        fake = self._data(fc, start, count, True)
        ok = self._mbap(tid, unit, bytes([fc, len(real)]) + real)
        if case in ("ok", "split"):
            return [ok]
        if case == "more_registers":
            more = self._data(fc, start, count, True, extra=1)
            return [self._mbap(tid, unit, bytes([fc, len(more)]) + more)]
        if case == "tid0_first":
            return [self._mbap(0, unit, bytes([fc, len(fake)]) + fake), ok]
        if case == "coil_short":
            return [self._mbap(tid, unit, bytes([fc, 4]) + fake[:1])]
        if case == "wrong_unit":
            return [self._mbap(tid, (unit + 1) & 0xFF, bytes([fc, len(fake)]) + fake)]
        if case.startswith("short_mbap_"):
            return [self._mbap(tid, unit, bytes([fc, len(fake)]) + fake, length_delta=-int(case[-1]))]
        if case == "lying_bytecount":
            return [self._mbap(tid, unit, bytes([fc, len(fake) + 2]) + fake)]
        if case == "wrong_function":
            return [self._mbap(tid, unit, bytes([4 if fc == 3 else 3, len(fake)]) + fake)]
        if case == "wrong_tid":
            return [self._mbap((tid + 1) & 0xFFFF or 1, unit, bytes([fc, len(fake)]) + fake)]
        if case == "exception_wrong_fc":
            return [self._mbap(tid, unit, bytes([0x80 | (4 if fc == 3 else 3), 2]))]
        if case == "trailing_garbage":
            return [ok + b"\xde\xad\xbe"]
        raise ValueError(f"unknown case {case!r}")

    def _write_echo(self, fc: int, pdu: bytes) -> bytes:
        if fc == 6:
            addr, value = struct.unpack(">HH", pdu[1:5])
            self.registers[addr] = value
            return pdu[:5]
        if fc == 16:
            addr, n = struct.unpack(">HH", pdu[1:5])
            for i, v in enumerate(struct.unpack(f">{n}H", pdu[6:6 + 2 * n])):
                self.registers[addr + i] = v
            return pdu[:5]
        if fc in (5, 22):
            return pdu
        return bytes([fc | 0x80, 1])


def main(argv: list[str] | None = None) -> None:
    """Serve until interrupted."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--case", default="ok", choices=("rotate",) + CASES)
    ap.add_argument("--silent", type=int, action="append", default=[])
    args = ap.parse_args(argv)

    async def run() -> None:
        server = HostileServer(args.case, set(args.silent))
        port = await server.start(args.port)
        print(f"serving {port}", flush=True)
        await asyncio.Event().wait()

    asyncio.run(run())


if __name__ == "__main__":
    main()
