"""OPC UA benchmark: edged's subscriptions and batched polling vs a hand-written asyncua Read loop.

All modes talk to the same asyncua server (edged's OPC UA emulator), which runs in a separate process
and changes every value every ``--update-ms``, so the CPU time measured here (time.process_time of this
process) is the client's alone:

  (s)  subscriptions: ``OpcUaDriver.run_push`` (one subscription per scan group), values counted as delivered;
  (p)  batched polling: ``OpcUaDriver.read(group)`` back to back (Read requests of MaxNodesPerRead nodes,
       every value checked, scaled and turned into a Reading);
  (h)  a hand-written asyncua loop doing the same batched Read (same nodes, same ReadParameters) and taking
       ``dv.Value.Value`` of each result.

Target: (p) at 90 % or more of (h) in values/s.

Run: ``.venv/bin/python bench/opcua.py [--tags 500 --seconds 3 --rounds 3 --update-ms 100 --write-md]``
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MD_SECTION = "## OPC UA"
TICK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_cell(directory: Path, n_tags: int, interval_ms: int, security: str) -> Path:
    """One OPC UA device with n_tags float64/int32/bool tags (namespace-URI NodeIds) in one scan group."""
    port = free_port()
    keys = [f'security_policy = "{security}"']
    if security != "None":
        keys += ['auto_trust_first = true', f'pki = "{directory / "pki"}"']
    lines = ['[cell]', 'name = "bench"', 'log_level = "warning"', '[metrics]', 'enabled = false',
             '[scan.g0]', f'interval_ms = {interval_ms}',
             '[device.srv]', 'driver = "opcua"', f'endpoint = "opc.tcp://127.0.0.1:{port}"', 'timeout_s = 10.0',
             *keys]
    kinds = ["float64", "int32", "float64", "bool"]
    for i in range(n_tags):
        lines += [f"[device.srv.tag.t{i}]", f'address = "nsu=urn:bench;s=T{i}"', f'type = "{kinds[i % 4]}"',
                  'scan = "g0"']
    path = directory / "cell.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


# -- the server process -------------------------------------------------------------------------
async def serve(cell_path: str, update_ms: int) -> None:
    """Run the emulator for the cell and change every value every update_ms until SIGTERM."""
    from edged.cell import load_cell
    from edged.driver import emulator_for

    cell = load_cell(cell_path)
    emu = emulator_for([d.driver for d in cell.devices.values()])
    await emu.start()
    print("ready", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    tags = list(cell.tags.values())
    step = 0
    while not stop.is_set():
        step += 1
        for t in tags:
            emu.set_value(t, (step % 2 == 0) if t.dtype.value == "bool" else (step % 1000) + (0.5 if t.dtype.is_float else 0))
        try:
            await asyncio.wait_for(stop.wait(), update_ms / 1000)
        except asyncio.TimeoutError:
            pass
    await emu.stop()


def cpu_of(pid: int) -> float:
    """User + system CPU seconds of a process (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


# -- the contenders -------------------------------------------------------------------------------
async def run_subscribe(cell_path: Path, seconds: float) -> tuple[int, int, "Clock"]:
    """(s): values delivered by the driver's subscriptions in `seconds` (after the initial values)."""
    from edged.cell import load_cell
    from edged.driver import PushSink

    drv = load_cell(cell_path).devices["srv"].driver
    count = [0]

    def take(readings: list) -> None:
        count[0] += len(readings)

    await drv.connect()
    sink = PushSink(take, asyncio.get_running_loop().time)
    task = asyncio.create_task(drv.run_push(sink))
    await asyncio.sleep(1.0)  # subscriptions created, initial values delivered
    count[0] = 0
    clock = Clock()
    await asyncio.sleep(seconds)
    n = count[0]
    clock.stop()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await drv.close()
    return n, 0, clock


async def run_poll(cell_path: Path, seconds: float) -> tuple[int, int, "Clock"]:
    """(p): OpcUaDriver.read back to back."""
    from edged.cell import load_cell

    drv = load_cell(cell_path).devices["srv"].driver
    await drv.connect()
    await drv.read("g0")
    n = reqs = 0
    clock = Clock()
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        n += len(await drv.read("g0"))
        reqs += len(drv._batches["g0"])
    clock.stop()
    await drv.close()
    return n, reqs, clock


async def run_hand(cell_path: Path, seconds: float) -> tuple[int, int, "Clock"]:
    """(h): the same batched Read written directly against asyncua."""
    from asyncua import Client, ua
    from edged.cell import load_cell

    cell = load_cell(cell_path)
    drv = cell.devices["srv"].driver
    client = Client(drv.conn.endpoint, timeout=10)
    await client.connect()
    ns = (await client.get_namespace_array()).index("urn:bench")
    limit = await client.get_node(ua.NodeId(ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerRead)).read_value() or 1000
    nodes = [ua.NodeId(f"T{i}", ns) for i in range(len(cell.tags))]
    batches = []
    for i in range(0, len(nodes), limit):
        p = ua.ReadParameters(MaxAge=0, TimestampsToReturn=ua.TimestampsToReturn.Both)
        p.NodesToRead = [ua.ReadValueId(NodeId=n, AttributeId=ua.AttributeIds.Value) for n in nodes[i:i + limit]]
        batches.append(p)
    for p in batches:
        await client.uaclient.read(p)
    n = reqs = 0
    clock = Clock()
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        for p in batches:
            res = await client.uaclient.read(p)
            values = [dv.Value.Value for dv in res]
            n += len(values)
            reqs += 1
    clock.stop()
    await client.disconnect()
    return n, reqs, clock


MODES = {"s": ("(s) edged subscriptions (OpcUaDriver.run_push)", run_subscribe),
         "p": ("(p) edged batched polling (OpcUaDriver.read)", run_poll),
         "h": ("(h) hand-written asyncua Read loop", run_hand)}


class Clock:
    """Wall time, this process's CPU time and the server's CPU time of the measured window only."""

    server_pid = 0

    def __init__(self) -> None:
        self.t0, self.c0, self.s0 = time.perf_counter(), time.process_time(), cpu_of(Clock.server_pid)

    def stop(self) -> None:
        """End the window."""
        self.wall = time.perf_counter() - self.t0
        self.cpu = time.process_time() - self.c0
        self.server = cpu_of(Clock.server_pid) - self.s0


def measure(mode: str, cell_path: Path, seconds: float) -> dict[str, float]:
    """Run one contender in a fresh event loop (setup excluded); values/s, requests/s, CPU per 1,000 values."""
    n, reqs, clock = asyncio.run(MODES[mode][1](cell_path, seconds))
    return {"values_s": n / clock.wall, "requests_s": reqs / clock.wall,
            "cpu_per_1000": clock.cpu / max(n, 1) * 1000, "server_cpu_per_1000": clock.server / max(n, 1) * 1000}


def main() -> int:
    """Start the server process, run interleaved rounds, print (and optionally record) the table."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tags", type=int, default=500)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--interval-ms", type=int, default=100, help="scan group interval (subscription publishing)")
    ap.add_argument("--update-ms", type=int, default=100, help="how often the server changes every value")
    ap.add_argument("--write-md", action="store_true", help="replace the OPC UA table in BENCHMARKS.md")
    ap.add_argument("--serve", metavar="CELL", help=argparse.SUPPRESS)
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)
    if args.serve:
        asyncio.run(serve(args.serve, args.update_ms))
        return 0
    with tempfile.TemporaryDirectory(prefix="edged-bench-opcua-") as tmp:
        cell = make_cell(Path(tmp), args.tags, args.interval_ms, "None")
        server = subprocess.Popen([sys.executable, __file__, "--serve", str(cell), "--update-ms", str(args.update_ms)],
                                  stdout=subprocess.PIPE, text=True)
        try:
            assert server.stdout is not None and server.stdout.readline().strip() == "ready"
            Clock.server_pid = server.pid
            results: dict[str, list[dict[str, float]]] = {m: [] for m in MODES}
            for i in range(args.rounds):
                # alternate who goes first (the server may still be busy after the previous mode)
                for m in (("p", "h", "s") if i % 2 == 0 else ("h", "p", "s")):
                    results[m].append(measure(m, cell, args.seconds))
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(30)
    med = {m: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for m, rs in results.items()}
    ratio = med["p"]["values_s"] / med["h"]["values_s"]
    head = (f"{args.tags} tags on one asyncua 2.1.0 server (edged's emulator, security None) in a separate "
            f"process on loopback, changing every value every {args.update_ms} ms; one scan group of "
            f"{args.interval_ms} ms; median of {args.rounds} interleaved rounds (p and h alternating first) of {args.seconds:g} s per mode, "
            f"{os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.")
    rows = ["| mode | values/s | requests/s | client CPU s per 1,000 values | server CPU s per 1,000 values |",
            "|---|---:|---:|---:|---:|"]
    for m, (label, _) in MODES.items():
        r = med[m]
        if m == "s":
            r["requests_s"] = float("nan")
        reqs = "-" if r["requests_s"] != r["requests_s"] else f"{r['requests_s']:,.0f}"
        rows.append(f"| {label} | {r['values_s']:,.0f} | {reqs} | {r['cpu_per_1000']:.4f} | "
                    f"{r['server_cpu_per_1000']:.4f} |")
    cpu_ratio = med["h"]["cpu_per_1000"] / med["p"]["cpu_per_1000"]
    summary = (f"(p) / (h) values/s = **{ratio:.2f}** (target ≥ 0.90); client CPU per value (h) / (p) = "
               f"**{cpu_ratio:.2f}** (the same comparison by CPU cost, less sensitive to other load on the machine). "
               f"Load average at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())}.")
    opts = "".join(f" --{k.replace('_', '-')} {v}" for k, v in vars(args).items()
                   if k in ("tags", "update_ms") and v != ap.get_default(k))
    text = "\n".join([f"### `python bench/opcua.py{opts}`",
                      "", head, "", *rows, "", summary])
    print(text)
    if args.write_md:
        write_md(text)
    return 0


def write_md(table: str) -> None:
    """Put the table under the OPC UA section of BENCHMARKS.md (replacing an older table of the same command)."""
    path = ROOT / "BENCHMARKS.md"
    doc = path.read_text()
    title = table.splitlines()[0]
    if MD_SECTION not in doc:
        doc = doc.rstrip("\n") + f"\n\n{MD_SECTION}\n\n"
    start = doc.find(title)
    if start >= 0:
        end = doc.find("\n### ", start + 1)
        nxt = doc.find("\n## ", start + 1)
        ends = [e for e in (end, nxt) if e >= 0]
        stop = min(ends) if ends else len(doc)
        doc = doc[:start] + table + "\n" + doc[stop:]
    else:
        sec = doc.find(MD_SECTION)
        nxt = doc.find("\n## ", sec + 1)
        insert = nxt if nxt >= 0 else len(doc)
        doc = doc[:insert].rstrip("\n") + "\n\n" + table + "\n" + doc[insert:]
    path.write_text(doc)


if __name__ == "__main__":
    sys.exit(main())
