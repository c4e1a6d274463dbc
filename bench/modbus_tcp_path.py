"""Modbus/TCP read path benchmark: edged's own client vs the pymodbus path vs a hand-written pymodbus loop.

The workload of issue 14: ``--connections`` devices (default 32), each with ``--blocks`` requests of 62
float32 values (124 holding registers) read every ``--interval-ms`` (default 10 ms): 32 x 62 x 100 =
198,400 values/s. Every mode reads the same plan from the same servers, which run in a separate process
(a minimal asyncio Modbus/TCP server with precomputed answers, so the server is not the bottleneck);
the CPU time measured (``time.process_time`` of this process) is the client's alone.

  (L)  ``ModbusDriver.read`` with ``client = "edged"`` (edged's Protocol, Cython MBAP, decode from bytes)
  (P)  ``ModbusDriver.read`` with ``client = "pymodbus"`` (the previous TCP path, with edged's checks)
  (H)  a hand-written pymodbus loop: ``read_holding_registers`` + ``struct`` decoding, no checks

``--flat-out`` reads back to back instead of every interval (maximum rate). ``--profile L|P`` runs one
mode for a few seconds under cProfile and prints where the time goes.

Run: ``.venv/bin/python bench/modbus_tcp_path.py [--connections 32 --blocks 1 --seconds 5 --rounds 3] [--write-md]``
"""
from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import os
import pstats
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MD_SECTION = "## Modbus/TCP read path"
REGS = 124  # 62 float32 per request


# -- server process --------------------------------------------------------------------------------------
class _FastServer(asyncio.Protocol):
    """Answers fc 3 reads with fixed float32 data (values i + 0.5); just enough Modbus/TCP for the bench."""

    def __init__(self) -> None:
        self.buf = b""
        self.transport: Any = None
        self.cache: dict[tuple[int, int, int], bytes] = {}

    def connection_made(self, transport: Any) -> None:
        """asyncio callback."""
        self.transport = transport
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        """Answer every whole request in the buffer."""
        buf = self.buf + data
        out = []
        while len(buf) >= 12:
            tid, _, length, unit = struct.unpack_from(">HHHB", buf)
            if len(buf) < 6 + length:
                break
            fc, start, count = struct.unpack_from(">BHH", buf, 7)
            key = (unit, start, count)
            body = self.cache.get(key)
            if body is None:
                regs = []
                for i in range(count // 2):
                    regs += struct.unpack(">2H", struct.pack(">f", start // 2 + i + 0.5))
                regs += [0] * (count - len(regs))
                pdu = bytes([fc, 2 * count]) + struct.pack(f">{count}H", *regs)
                body = self.cache[key] = struct.pack(">HHB", 0, len(pdu) + 1, unit) + pdu
            out.append(struct.pack(">H", tid) + body)
            buf = buf[6 + length:]
        self.buf = buf
        if out:
            self.transport.write(b"".join(out))


async def serve(ports: list[int]) -> None:
    """Listen on the given ports until SIGTERM."""
    loop = asyncio.get_running_loop()
    servers = [await loop.create_server(_FastServer, "127.0.0.1", p) for p in ports]
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    print("ready", flush=True)
    await stop.wait()
    for s in servers:
        s.close()


# -- workload ---------------------------------------------------------------------------------------------
def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def device_doc(port: int, blocks: int, client: str) -> str:
    """One device: `blocks` requests of 62 float32 values each."""
    lines = ["[scan.fast]", "interval_ms = 10", "[device.d]", 'driver = "modbus"', 'host = "127.0.0.1"',
             f"port = {port}", f'client = "{client}"', "timeout_s = 5.0"]
    for b in range(blocks):
        for i in range(REGS // 2):
            lines += [f"[device.d.tag.b{b}_{i}]", f'address = "hr:{b * 200 + 2 * i}"', 'type = "float32"',
                      'scan = "fast"']
    return "\n".join(lines) + "\n"


def make_drivers(ports: list[int], blocks: int, client: str) -> list[Any]:
    """One ModbusDriver per port, loaded like the cell loader does."""
    sys.path.insert(0, str(ROOT / "tests"))
    from modbus_support import load_devices

    return [load_devices(device_doc(p, blocks, client))[0]["d"].driver for p in ports]


class Result:
    """Values, requests, wall and client CPU time of one mode."""

    def __init__(self, name: str, values: int, requests: int, wall: float, cpu: float) -> None:
        self.name, self.values, self.requests, self.wall, self.cpu = name, values, requests, wall, cpu

    @property
    def rate(self) -> float:
        """Values per second."""
        return self.values / self.wall

    @property
    def us_per_value(self) -> float:
        """Client CPU microseconds per value."""
        return 1e6 * self.cpu / max(self.values, 1)

    @property
    def us_per_request(self) -> float:
        """Client CPU microseconds per request."""
        return 1e6 * self.cpu / max(self.requests, 1)


async def _paced(step: Callable[[], Any], interval_s: float, running: list[bool]) -> None:
    """Call `step` every interval (absolute deadlines, missed ones skipped) or back to back (0)."""
    loop_time = asyncio.get_running_loop().time
    deadline = loop_time()
    while running[0]:
        await step()
        if interval_s:
            deadline += interval_s
            now = loop_time()
            if now >= deadline:
                deadline += ((now - deadline) // interval_s + 1) * interval_s
            await asyncio.sleep(deadline - now)


async def run_mode(mode: str, ports: list[int], blocks: int, interval_s: float, seconds: float,
                   warm_s: float = 1.0) -> Result:
    """Run one mode on every connection; measure a window after a warm-up."""
    count = [0, 0]  # values, requests
    running = [True]
    tasks: list[asyncio.Task] = []
    closers: list[Callable[[], Any]] = []
    if mode in ("L", "P"):
        drivers = make_drivers(ports, blocks, "edged" if mode == "L" else "pymodbus")
        for drv in drivers:
            await drv.connect()
            closers.append(drv.close)

            def step_of(drv: Any = drv) -> Callable[[], Any]:
                async def step() -> None:
                    readings = await drv.read("fast")
                    count[0] += len(readings)
                    count[1] += blocks
                return step
            tasks.append(asyncio.create_task(_paced(step_of(), interval_s, running)))
    else:
        from pymodbus.client import AsyncModbusTcpClient

        fmt = ">" + "f" * (REGS // 2)
        for port in ports:
            client = AsyncModbusTcpClient("127.0.0.1", port=port, retries=0, reconnect_delay=0, timeout=5)
            if not await client.connect():
                raise RuntimeError("cannot connect")

            async def close(client: Any = client) -> None:
                client.close()
            closers.append(close)

            def step_of(client: Any = client) -> Callable[[], Any]:
                async def step() -> None:
                    for b in range(blocks):
                        rsp = await client.read_holding_registers(b * 200, count=REGS, device_id=1)
                        if rsp.isError():
                            raise RuntimeError(str(rsp))
                        values = struct.unpack(fmt, struct.pack(f">{REGS}H", *rsp.registers))
                        count[0] += len(values)
                        count[1] += 1
                return step
            tasks.append(asyncio.create_task(_paced(step_of(), interval_s, running)))
    names = {"L": "(L) edged's client: ModbusDriver.read, client = \"edged\"",
             "P": "(P) pymodbus path: ModbusDriver.read, client = \"pymodbus\"",
             "H": "(H) hand-written pymodbus loop + struct"}
    try:
        await asyncio.sleep(warm_s)
        v0, r0, c0, t0 = count[0], count[1], time.process_time(), time.perf_counter()
        await asyncio.sleep(seconds)
        v1, r1, c1, t1 = count[0], count[1], time.process_time(), time.perf_counter()
    finally:
        running[0] = False  # a flag, not cancel(): Python 3.11's wait_for inside pymodbus may swallow one
        await asyncio.gather(*tasks, return_exceptions=True)
        for c in closers:
            await c()
    return Result(names[mode], v1 - v0, r1 - r0, t1 - t0, c1 - c0)


def table(results: list[Result]) -> str:
    """A markdown table."""
    rows = ["| mode | values/s | requests/s | client CPU µs per value | client CPU µs per request |",
            "|---|---:|---:|---:|---:|"]
    for r in results:
        rows.append(f"| {r.name} | {r.rate:,.0f} | {r.requests / r.wall:,.0f} | {r.us_per_value:.2f} | "
                    f"{r.us_per_request:.1f} |")
    return "\n".join(rows)


def profile(mode: str, ports: list[int], blocks: int, seconds: float) -> str:
    """Top functions (own time) of one mode, flat out, under cProfile."""
    prof = cProfile.Profile()
    prof.enable()
    asyncio.run(run_mode(mode, ports[:1], blocks, 0.0, seconds, warm_s=0.3))
    prof.disable()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(18)
    return out.getvalue()


def write_md(text: str, cmd: str) -> None:
    """Replace (or add) this benchmark's section of BENCHMARKS.md, keeping one subsection per command."""
    path = ROOT / "BENCHMARKS.md"
    old = path.read_text()
    start = old.find(MD_SECTION + "\n")
    if start < 0:
        old = old.rstrip("\n") + "\n\n" + MD_SECTION + "\n\n"
        start = old.find(MD_SECTION + "\n")
    nxt = old.find("\n## ", start + len(MD_SECTION))
    section = old[start:nxt + 1 if nxt >= 0 else len(old)]
    head, _, _ = section.partition("\n### ")
    runs: dict[str, str] = {}
    for chunk in section.split("\n### ")[1:]:
        runs[chunk.split("\n", 1)[0]] = "### " + chunk.rstrip("\n") + "\n"
    runs[f"`{cmd}`"] = f"### `{cmd}`\n\n{text.strip()}\n"
    body = head.rstrip("\n") + "\n\n" + "\n".join(runs.values())
    path.write_text(old[:start] + body + ("\n" + old[nxt + 1:] if nxt >= 0 else ""))


def main() -> int:
    """Parse arguments, start the server process, run the modes in interleaved rounds."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--blocks", type=int, default=1)
    ap.add_argument("--interval-ms", type=float, default=10.0)
    ap.add_argument("--flat-out", action="store_true")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--modes", default="L,P,H")
    ap.add_argument("--profile", choices=["L", "P", "H"])
    ap.add_argument("--write-md", action="store_true")
    ap.add_argument("--serve", nargs="*", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve is not None:
        asyncio.run(serve(args.serve))
        return 0
    import logging
    logging.basicConfig(level=logging.WARNING)
    ports = [free_port() for _ in range(args.connections)]
    server = subprocess.Popen([sys.executable, __file__, "--serve", *map(str, ports)], stdout=subprocess.PIPE)
    try:
        assert server.stdout is not None
        if server.stdout.readline().strip() != b"ready":
            raise RuntimeError("the server process did not start")
        if args.profile:
            print(profile(args.profile, ports, args.blocks, args.seconds))
            return 0
        interval = 0.0 if args.flat_out else args.interval_ms / 1000
        runs: dict[str, list[Result]] = {m: [] for m in args.modes.split(",")}
        for _ in range(args.rounds):
            for m in runs:
                runs[m].append(asyncio.run(run_mode(m, ports, args.blocks, interval, args.seconds)))
        best = [sorted(rs, key=lambda r: r.us_per_value)[len(rs) // 2] for rs in runs.values()]
        target = args.connections * args.blocks * (REGS // 2) * (0 if args.flat_out else 1000 / args.interval_ms)
        lines = [f"{args.connections} connections x {args.blocks} block(s) of 62 float32 "
                 + ("flat out" if args.flat_out else f"every {args.interval_ms:g} ms (target {target:,.0f} values/s)")
                 + f"; median of {args.rounds} rounds of {args.seconds:g} s; {os.cpu_count()} CPUs "
                 "(shared with other jobs)", "", table(best)]
        base = next((r for r in best if r.name.startswith("(H)")), None)
        lean = next((r for r in best if r.name.startswith("(L)")), None)
        if base and lean:
            lines += ["", f"CPU per value, hand-written pymodbus / edged's client: "
                          f"{base.us_per_value / lean.us_per_value:.1f}x"]
        text = "\n".join(lines)
        print(text)
        if args.write_md:
            write_md(text, " ".join(["python bench/modbus_tcp_path.py"] + [a for a in sys.argv[1:] if a != "--write-md"]))
        return 0
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    sys.exit(main())
