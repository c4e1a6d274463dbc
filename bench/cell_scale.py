"""Cell scale: the edged daemon polling N float32 values/s from M Modbus/TCP connections at 10 ms, end to end.

Each point runs, in separate processes so that their CPU is not counted as edged's:
  - responders: a lean asyncio Modbus/TCP server per device (fixed-time answers: 125 holding registers of float32
    values; register pair 0 of device 0 is a marker that steps every 100 ms), spread over two processes;
  - mosquitto, with a counting subscriber in this process;
  - ``edged run`` on a generated cell (spool with default durability, an MQTT sink to the broker, metrics on).
It reports for the edged process alone (from /proc): values acquired per second, CPU seconds per second and µs
of CPU per value, RSS, scan overruns, spool depth, and end-to-end latency p50/p99 (marker step in the responder →
sample received at the broker). In the same run, the baseline: a hand-written pymodbus loop doing the same reads
(one AsyncModbusTcpClient per device, 10 ms, ``convert_from_registers``), measured the same way.

Run: ``.venv/bin/python bench/cell_scale.py [--points 1000,10000,50000,200000] [--seconds 20] [--write-md]``
"""
from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import resource
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "hil_tests"))
from support import Broker, free_port, metric, scrape, wait_port  # noqa: E402

MD_SECTION = "## Cell scale"
TICK = os.sysconf("SC_CLK_TCK")
REGS = 125
FLOATS = 62
MARKER_STEP_S = 0.1


# -- the responder: a lean Modbus/TCP server ---------------------------------------------------------------
def responder_main(ports: list[int], epoch0: float, marker_port: int) -> None:
    """Serve fixed float32 blocks on each port; device 0's first float steps every 100 ms (the latency marker)."""
    base = bytearray()
    for i in range(FLOATS):
        base += struct.pack(">f", 20.0 + i * 0.5)
    base += b"\x00\x00"  # 125th register

    class Proto(asyncio.Protocol):
        def __init__(self, marker: bool) -> None:
            self.marker = marker
            self.buf = b""

        def connection_made(self, transport: Any) -> None:
            """Keep the transport."""
            self.t = transport

        def data_received(self, data: bytes) -> None:
            """Answer every complete request in the buffer."""
            self.buf += data
            while len(self.buf) >= 12:
                tid, _pid, length, unit, fc, start, count = struct.unpack(">HHHBBHH", self.buf[:12])
                self.buf = self.buf[6 + length:]
                regs = bytes(base)
                if self.marker:
                    step = math.floor((time.time() - epoch0) / MARKER_STEP_S)
                    regs = struct.pack(">f", float(step)) + regs[4:]
                body = regs[2 * start:2 * (start + count)]
                pdu = bytes([fc, len(body)]) + body
                self.t.write(struct.pack(">HHHB", tid, 0, len(pdu) + 1, unit) + pdu)

    async def main() -> None:
        """Run the points (or a responder / the baseline, when started as one)."""
        _servers = [await asyncio.get_running_loop().create_server(lambda p=p: Proto(p == marker_port), "127.0.0.1", p)
                   for p in ports]
        print("ready", flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


def start_responders(ports: list[int], epoch0: float, procs: int = 2) -> list[subprocess.Popen]:
    """Responder processes serving the ports (device 0, the marker, is served by the first)."""
    out = []
    chunks = [ports[i::procs] for i in range(procs)]
    for chunk in chunks:
        if not chunk:
            continue
        p = subprocess.Popen([sys.executable, __file__, "--responder", ",".join(map(str, chunk)), "--epoch0",
                              repr(epoch0), "--marker", str(ports[0])], stdout=subprocess.PIPE, text=True)
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        out.append(p)
    return out


# -- the workload ----------------------------------------------------------------------------------------
def layout(values_per_s: int) -> tuple[int, int]:
    """(connections, float32 tags per connection) for a target rate at 10 ms scans."""
    per_conn = FLOATS * 100
    if values_per_s <= per_conn:
        return 1, max(1, values_per_s // 100)
    return max(1, round(values_per_s / per_conn)), FLOATS


SPOOL = {"commit_interval_ms": 10, "durability": "os"}


def make_cell(directory: Path, ports: list[int], tags: int, broker_port: int, metrics_port: int) -> Path:
    """The generated cell file."""
    lines = ['[cell]', 'name = "scale"', f'state_dir = "{directory / "state"}"', 'log_level = "warning"',
             'heartbeat_s = 0', '[metrics]', f'listen = "127.0.0.1:{metrics_port}"',
             '[spool]', f'commit_interval_ms = {SPOOL["commit_interval_ms"]}', f'durability = "{SPOOL["durability"]}"',
             '[sink.upstream]', 'type = "mqtt"', 'host = "127.0.0.1"', f"port = {broker_port}",
             'client_id = "edged-scale"']
    for d, port in enumerate(ports):
        lines += [f"[device.plc{d}]", 'driver = "modbus"', 'host = "127.0.0.1"', f"port = {port}", "timeout_s = 1.0"]
        for i in range(tags):
            lines += [f"[device.plc{d}.tag.v{i}]", f'address = "hr:{2 * i}"', 'type = "float32"', "scan_ms = 10"]
    path = directory / "cell.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def proc_cpu_s(pid: int) -> float:
    """User plus system CPU seconds of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def proc_rss_mb(pid: int) -> float:
    """Resident memory of a process in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def run_edged(values_per_s: int, seconds: float, work: Path) -> dict[str, Any]:
    """One point through the daemon."""
    conns, tags = layout(values_per_s)
    ports = [free_port() for _ in range(conns)]
    epoch0 = time.time()
    responders = start_responders(ports, epoch0)
    broker = Broker(work)
    arrivals: list[tuple[float, float]] = []  # (arrival wall time, marker value)

    import paho.mqtt.client as mqtt

    def on_message(_c: Any, _u: Any, msg: Any) -> None:
        now = time.time()
        try:
            body = json.loads(msg.payload)
        except ValueError:
            return
        if body.get("device") != "plc0":
            return
        cols = body.get("columns") or []
        for row in body.get("samples", []):
            r = dict(zip(cols, row)) if cols else row
            if r.get("tag") == "v0" and isinstance(r.get("value"), (int, float)):
                arrivals.append((now, float(r["value"])))

    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="scale-sub")
    sub.on_message = on_message
    sub.on_connect = lambda c, *_a: c.subscribe("scale/#", qos=1)
    sub.connect("127.0.0.1", broker.port)
    sub.loop_start()
    metrics_port = free_port()
    cell = make_cell(work, ports, tags, broker.port, metrics_port)
    daemon = subprocess.Popen([sys.executable, "-m", "edged", "run", "-c", str(cell)], cwd=work,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{metrics_port}/metrics"
        assert wait_port(metrics_port, 60), "edged did not start"
        time.sleep(3.0)  # warm-up: connections, first scans, broker session
        m0, c0, t0 = scrape(url), proc_cpu_s(daemon.pid), time.monotonic()
        arrivals.clear()
        time.sleep(seconds)
        m1, c1, t1 = scrape(url), proc_cpu_s(daemon.pid), time.monotonic()
        rss = proc_rss_mb(daemon.pid)
        elapsed = t1 - t0
        values = metric(m1, "edged_device_values_read_total") - metric(m0, "edged_device_values_read_total")
        overruns = metric(m1, "edged_scan_overruns_total") - metric(m0, "edged_scan_overruns_total")
        cpu = (c1 - c0) / elapsed
        vps = values / elapsed
        lat = sorted(max(0.0, (t - (epoch0 + v * MARKER_STEP_S))) * 1000 for t, v in arrivals)
        return {"target": values_per_s, "connections": conns, "tags": conns * tags, "values_per_s": vps,
                "cpu_s_per_s": cpu, "us_per_value": 1e6 * cpu / vps if vps else float("nan"), "rss_mb": rss,
                "latency_p50_ms": _q(lat, 0.5), "latency_p99_ms": _q(lat, 0.99), "overruns": overruns,
                "spool_depth": metric(m1, "edged_spool_depth_samples")}
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(30)
        except subprocess.TimeoutExpired:
            daemon.kill()
        sub.loop_stop()
        broker.stop()
        for p in responders:
            p.kill()
            p.wait()


def _q(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    return xs[min(len(xs) - 1, int(q * len(xs)))]


# -- the baseline: a hand-written pymodbus loop ---------------------------------------------------------
def baseline_main(ports: list[int], tags: int, seconds: float) -> None:
    """Read the same blocks every 10 ms with pymodbus, one client per device; print values/s and CPU s/s."""
    from pymodbus.client import AsyncModbusTcpClient

    async def main() -> None:
        """Run the points (or a responder / the baseline, when started as one)."""
        clients = [AsyncModbusTcpClient("127.0.0.1", port=p, retries=0, reconnect_delay=0) for p in ports]
        for c in clients:
            await c.connect()
        count = 0

        async def loop(c: Any) -> None:
            nonlocal count
            loop_ = asyncio.get_running_loop()
            deadline = loop_.time()
            while True:
                rr = await c.read_holding_registers(0, count=2 * tags, device_id=1)
                vals = c.convert_from_registers(rr.registers, c.DATATYPE.FLOAT32)
                count += len(vals) if isinstance(vals, list) else 1
                deadline += 0.01
                await asyncio.sleep(max(0.0, deadline - loop_.time()))

        tasks = [asyncio.create_task(loop(c)) for c in clients]
        await asyncio.sleep(2.0)
        r0, n0, t0 = resource.getrusage(resource.RUSAGE_SELF), count, time.monotonic()
        await asyncio.sleep(seconds)
        r1, n1, t1 = resource.getrusage(resource.RUSAGE_SELF), count, time.monotonic()
        for t in tasks:
            t.cancel()
        cpu = (r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime) / (t1 - t0)
        print(json.dumps({"values_per_s": (n1 - n0) / (t1 - t0), "cpu_s_per_s": cpu,
                          "rss_mb": r1.ru_maxrss / 1024}), flush=True)
        for c in clients:
            c.close()

    asyncio.run(main())


def run_baseline(values_per_s: int, seconds: float) -> dict[str, Any]:
    """One point through the hand-written pymodbus loop (in its own process)."""
    conns, tags = layout(values_per_s)
    ports = [free_port() for _ in range(conns)]
    responders = start_responders(ports, time.time())
    try:
        out = subprocess.run([sys.executable, __file__, "--baseline", ",".join(map(str, ports)), "--tags", str(tags),
                              "--seconds", str(seconds)], capture_output=True, text=True, timeout=seconds + 60)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        r["us_per_value"] = 1e6 * r["cpu_s_per_s"] / r["values_per_s"] if r["values_per_s"] else float("nan")
        r["target"] = values_per_s
        return r
    finally:
        for p in responders:
            p.kill()
            p.wait()


def main() -> None:
    """Run the points (or a responder / the baseline, when started as one)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", default="1000,10000,50000,200000")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--write-md", action="store_true", help="replace the Cell scale section of BENCHMARKS.md")
    ap.add_argument("--commit-interval-ms", type=int, default=10,
                    help="spool commit interval (default 10: latency; the product default 200 favours flash wear)")
    ap.add_argument("--durability", default="os", choices=["os", "batch"], help="spool durability (default os)")
    ap.add_argument("--responder", help=argparse.SUPPRESS)
    ap.add_argument("--epoch0", type=float, default=0.0, help=argparse.SUPPRESS)
    ap.add_argument("--marker", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--baseline", help=argparse.SUPPRESS)
    ap.add_argument("--tags", type=int, default=FLOATS, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.responder:
        responder_main([int(p) for p in args.responder.split(",")], args.epoch0, args.marker)
        return
    if args.baseline:
        baseline_main([int(p) for p in args.baseline.split(",")], args.tags, args.seconds)
        return
    SPOOL.update(commit_interval_ms=args.commit_interval_ms, durability=args.durability)
    rows = []
    for point in [int(p) for p in args.points.split(",")]:
        with tempfile.TemporaryDirectory(prefix="edged-scale-") as tmp:
            e = run_edged(point, args.seconds, Path(tmp))
        b = run_baseline(point, args.seconds)
        rows.append((e, b))
        print(f"N={point:>7}: edged {e['values_per_s']:>9.0f} v/s, {e['cpu_s_per_s']:.3f} CPU s/s, "
              f"{e['us_per_value']:.2f} us/value, RSS {e['rss_mb']:.0f} MB, latency p50 {e['latency_p50_ms']:.1f} ms "
              f"p99 {e['latency_p99_ms']:.1f} ms, overruns {e['overruns']:.0f}, spool {e['spool_depth']:.0f} | "
              f"pymodbus loop {b['values_per_s']:>9.0f} v/s, {b['cpu_s_per_s']:.3f} CPU s/s, "
              f"{b['us_per_value']:.2f} us/value (ratio {b['us_per_value'] / e['us_per_value']:.2f}x)", flush=True)
    if args.write_md:
        write_md(rows, args)


def write_md(rows: list[tuple[dict, dict]], args: argparse.Namespace) -> None:
    """Replace this benchmark's section of BENCHMARKS.md."""
    cmd = (f".venv/bin/python bench/cell_scale.py --points {args.points} --seconds {args.seconds:g} "
           f"--commit-interval-ms {args.commit_interval_ms} --durability {args.durability} --write-md")
    lines = [MD_SECTION, "", f"Command: `{cmd}` ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores). Each point: "
             f"`edged run` (spool with commit_interval_ms {args.commit_interval_ms} and durability {args.durability}, MQTT sink to a local mosquitto, metrics) polling float32 blocks at 10 ms from lean "
             "responder processes; CPU, RSS from /proc of the edged process alone; latency from a marker step in the "
             "responder to its arrival at the broker. Baseline: a hand-written pymodbus loop doing the same reads.", "",
             "| N target | connections | values/s | CPU s/s | µs CPU/value | RSS MB | latency p50 ms | p99 ms | "
             "overruns | spool depth | pymodbus loop µs/value | edged advantage |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for e, b in rows:
        lines.append(f"| {e['target']:,} | {e['connections']} | {e['values_per_s']:,.0f} | {e['cpu_s_per_s']:.3f} | "
                     f"{e['us_per_value']:.2f} | {e['rss_mb']:.0f} | {e['latency_p50_ms']:.1f} | "
                     f"{e['latency_p99_ms']:.1f} | {e['overruns']:.0f} | {e['spool_depth']:.0f} | "
                     f"{b['us_per_value']:.2f} | {b['us_per_value'] / e['us_per_value']:.2f}x |")
    md = ROOT / "BENCHMARKS.md"
    text = md.read_text() if md.exists() else "# Benchmarks\n"
    block = "\n".join(lines) + "\n"
    if MD_SECTION in text:
        start = text.index(MD_SECTION)
        nxt = text.find("\n## ", start + len(MD_SECTION))
        text = text[:start] + block + (text[nxt + 1:] if nxt >= 0 else "")
    else:
        text = text.rstrip() + "\n\n" + block
    md.write_text(text)


if __name__ == "__main__":
    main()
