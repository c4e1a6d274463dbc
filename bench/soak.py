"""Soak: a cell at full rate for a long time with periodic faults; memory, descriptors and tasks must stay flat and
every sample must be accounted for.

The cell: M Modbus/TCP connections of 62 float32 values at 10 ms (bench/cell_scale.py's lean responders, whose
values move once a second so samples flow), plus one tag on unit 9 behind device 0 (a gateway unit), a local
JSON-lines sink and an MQTT sink to a local mosquitto. Faults, in turn every ``--fault-every`` seconds: a device
restart (its responder process killed and started again), a broker restart, a silent gateway unit (unit 9 stops
answering for a while). Every minute it prints RSS, open descriptors and asyncio tasks of the edged process. At
the end (SIGTERM, then the spool reopened offline) it checks that every sample the local sink wrote or still holds
also reached the broker or is still spooled for it, and reports gaps.

Run: ``.venv/bin/python bench/soak.py [--minutes 30] [--rate 50000] [--fault-every 60] [--write-md]``
"""
from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "hil_tests"))
from support import Broker, free_port, metric, scrape, wait_port  # noqa: E402

MD_SECTION = "## Soak"
FLOATS = 62
GATEWAY_UNIT = 9


def responder_main(port: int, silence_file: str) -> None:
    """One device: 62 float32 values that move once a second; unit 9 answers unless silence_file exists."""

    class Proto(asyncio.Protocol):
        def connection_made(self, transport: Any) -> None:
            """Keep the transport."""
            self.t = transport
            self.buf = b""

        def data_received(self, data: bytes) -> None:
            """Answer every complete request in the buffer."""
            self.buf += data
            while len(self.buf) >= 12:
                tid, _pid, length, unit, fc, start, count = struct.unpack(">HHHBBHH", self.buf[:12])
                self.buf = self.buf[6 + length:]
                if unit == GATEWAY_UNIT and os.path.exists(silence_file):
                    continue  # a silent unit behind the gateway
                step = int(time.time())
                regs = b"".join(struct.pack(">f", float(step % 1000 + i)) for i in range(FLOATS)) + b"\0\0"
                body = regs[2 * start:2 * (start + count)]
                pdu = bytes([fc, len(body)]) + body
                self.t.write(struct.pack(">HHHB", tid, 0, len(pdu) + 1, unit) + pdu)

    async def main() -> None:
        """Run the points (or a responder / the baseline, when started as one)."""
        await asyncio.get_running_loop().create_server(Proto, "127.0.0.1", port)
        print("ready", flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


class Responders:
    """One responder process per device, restartable."""

    def __init__(self, ports: list[int], silence_file: Path) -> None:
        self.ports = ports
        self.silence = silence_file
        self.procs: dict[int, subprocess.Popen] = {}
        for p in ports:
            self.start(p)

    def start(self, port: int) -> None:
        """Start the responder of one port."""
        p = subprocess.Popen([sys.executable, __file__, "--responder", str(port), "--silence-file", str(self.silence)],
                             stdout=subprocess.PIPE, text=True)
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        self.procs[port] = p

    def restart(self, port: int, down_s: float = 3.0) -> None:
        """Kill a device's responder and start it again after a pause."""
        p = self.procs.pop(port)
        p.kill()
        p.wait()
        time.sleep(down_s)
        self.start(port)

    def stop(self) -> None:
        """Stop every responder."""
        for p in self.procs.values():
            p.kill()
            p.wait()


def make_cell(work: Path, ports: list[int], tags: int, broker_port: int, metrics_port: int) -> Path:
    """The generated cell file."""
    lines = ['[cell]', 'name = "soak"', f'state_dir = "{work / "state"}"', 'log_level = "warning"', 'heartbeat_s = 0',
             '[metrics]', f'listen = "127.0.0.1:{metrics_port}"',
             '[sink.local]', 'type = "jsonl"', f'path = "{work / "samples.jsonl"}"', 'max_bytes = 100000000000',
             '[sink.upstream]', 'type = "mqtt"', 'host = "127.0.0.1"', f"port = {broker_port}",
             'client_id = "edged-soak"']
    for d, port in enumerate(ports):
        lines += [f"[device.plc{d}]", 'driver = "modbus"', 'host = "127.0.0.1"', f"port = {port}", "timeout_s = 0.5",
                  "backoff_initial_s = 0.2", "backoff_max_s = 5.0"]
        for i in range(tags):
            lines += [f"[device.plc{d}.tag.v{i}]", f'address = "hr:{2 * i}"', 'type = "float32"', "scan_ms = 10"]
    lines += ["[device.plc0.tag.gw_unit9]", 'address = "hr:0"', 'type = "float32"', f"unit_id = {GATEWAY_UNIT}",
              "scan_ms = 100"]
    path = work / "cell.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def proc_stats(pid: int) -> tuple[float, int]:
    """RSS (MB) and open descriptors of a process."""
    rss = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) / 1024
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


class Counter:
    """Subscribes to the cell's topics and keeps every distinct sample (device, tag, ts_ns) it receives."""

    def __init__(self, broker: Broker) -> None:
        import paho.mqtt.client as mqtt

        from edged.sinks.mqtt import samples_of

        self.seen: set[tuple[str, str, int]] = set()
        self.gaps = 0
        self.lock = threading.Lock()

        def on_message(_c: Any, _u: Any, msg: Any) -> None:
            try:
                body = json.loads(msg.payload)
            except ValueError:
                return
            if not isinstance(body, dict):
                return
            with self.lock:
                self.gaps += sum(int(g.get("count", 0)) for g in body.get("gaps", []))
                for s in samples_of(body) if "samples" in body else []:
                    self.seen.add((s.get("device"), s.get("tag"), int(s.get("ts_ns", 0))))

        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="soak-counter", clean_session=False)
        self.client.on_message = on_message
        self.client.on_connect = lambda c, *_a: c.subscribe("soak/#", qos=1)
        self.broker = broker

    def connect(self) -> None:
        """Connect and start the network thread."""
        self.client.connect("127.0.0.1", self.broker.port)
        self.client.loop_start()


def main() -> None:
    """Run the points (or a responder / the baseline, when started as one)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--rate", type=int, default=50_000, help="float32 values per second (62 per connection per 10 ms)")
    ap.add_argument("--fault-every", type=float, default=60.0, help="seconds between faults")
    ap.add_argument("--write-md", action="store_true")
    ap.add_argument("--responder", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--silence-file", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.responder:
        responder_main(args.responder, args.silence_file)
        return
    from edged.spool.config import SpoolSpec
    from edged.spool.spool import Spool

    conns = max(1, round(args.rate / (FLOATS * 100)))
    work = Path(tempfile.mkdtemp(prefix="edged-soak-"))
    ports = [free_port() for _ in range(conns)]
    silence = work / "silence-unit9"
    responders = Responders(ports, silence)
    broker = Broker(work)
    broker_conf = broker.dir / "mosquitto.conf"
    counter = Counter(broker)
    counter.connect()
    metrics_port = free_port()
    cell = make_cell(work, ports, FLOATS, broker.port, metrics_port)
    daemon = subprocess.Popen([sys.executable, "-m", "edged", "run", "-c", str(cell)], cwd=work,
                              stdout=subprocess.DEVNULL, stderr=open(work / "edged.log", "w"))
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    assert wait_port(metrics_port, 60), "edged did not start"
    t0 = time.monotonic()
    end = t0 + args.minutes * 60
    next_minute, next_fault, fault_no = t0 + 60, t0 + args.fault_every, 0
    rows: list[tuple[int, float, int, float, float]] = []
    faults: list[str] = []
    print(f"soak: {conns} connections, {conns * FLOATS * 100} values/s, {args.minutes:g} min, work dir {work}",
          flush=True)
    while time.monotonic() < end:
        time.sleep(1.0)
        now = time.monotonic()
        if now >= next_fault:
            kind = ("device restart", "broker restart", "silent gateway unit")[fault_no % 3]
            if kind == "device restart":
                responders.restart(ports[fault_no % len(ports)])
            elif kind == "broker restart":
                counter.client.loop_stop()
                broker.proc.stop()
                time.sleep(3.0)
                from support import Process

                broker.proc = Process([broker.BINARY, "-c", str(broker_conf)], cwd=broker.dir)
                wait_port(broker.port, 30)
                counter.client.reconnect()
                counter.client.loop_start()
            else:
                silence.touch()
                time.sleep(10.0)
                silence.unlink()
            faults.append(f"{(now - t0) / 60:.1f} min: {kind}")
            fault_no += 1
            next_fault = time.monotonic() + args.fault_every
        if now >= next_minute:
            rss, fds = proc_stats(daemon.pid)
            m = scrape(url)
            tasks = metric(m, "edged_asyncio_tasks")
            vals = metric(m, "edged_device_values_read_total")
            minute = round((now - t0) / 60)
            rows.append((minute, rss, fds, tasks, vals))
            print(f"minute {minute:>3}: RSS {rss:.1f} MB, fds {fds}, tasks {tasks:.0f}, values read {vals:,.0f}, "
                  f"spool depth {metric(m, 'edged_spool_depth_samples'):.0f}", flush=True)
            next_minute += 60
    daemon.send_signal(signal.SIGTERM)
    code = daemon.wait(60)
    time.sleep(2.0)
    responders.stop()
    spool = Spool.open(work / "state" / "spool", SpoolSpec(), ["local", "upstream"])
    left: dict[str, set[tuple[str, str, int]]] = {}
    for consumer in ("local", "upstream"):
        rest: set[tuple[str, str, int]] = set()
        while (batch := spool.take(consumer, 200_000)) is not None and batch.samples:
            rest.update((s.device, s.tag, s.ts_ns) for s in batch.samples)
        left[consumer] = rest
    spool.close()
    local: set[tuple[str, str, int]] = set()
    local_gaps = 0
    with open(work / "samples.jsonl") as f:
        for line in f:
            row = json.loads(line)
            if "gap" in row:
                local_gaps += int(row["gap"].get("count", 0))
            else:
                local.add((row["device"], row["tag"], int(row["ts_ns"])))
    accepted = local | left["local"]
    with counter.lock:
        upstream = counter.seen | left["upstream"]
        gaps = counter.gaps
    unaccounted = len(accepted - upstream) + len(upstream - accepted)
    counter.client.loop_stop()
    broker.stop()
    warm = [r for r in rows if r[0] >= 5]
    growth = (warm[-1][1] - warm[0][1]) / warm[0][1] * 100 if len(warm) >= 2 else float("nan")
    print(f"soak done: exit {code}; samples accepted {len(accepted):,}, at the broker or spooled for it "
          f"{len(upstream):,}, unaccounted {unaccounted}; gaps reported broker {gaps}, local {local_gaps}; "
          f"RSS growth minute 5 -> end {growth:.1f}%", flush=True)
    if args.write_md:
        write_md(args, conns, rows, faults, len(accepted), len(upstream), unaccounted, gaps, growth, code)


def write_md(args: argparse.Namespace, conns: int, rows: list, faults: list[str], accepted: int, upstream: int,
             unaccounted: int, gaps: int, growth: float, code: int) -> None:
    """Replace this benchmark's section of BENCHMARKS.md."""
    cmd = (f".venv/bin/python bench/soak.py --minutes {args.minutes:g} --rate {args.rate} --fault-every "
           f"{args.fault_every:g} --write-md")
    lines = [MD_SECTION, "", f"Command: `{cmd}` ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores): {conns} "
             f"connections of 62 float32 at 10 ms plus a gateway unit, local JSON-lines and MQTT sinks; faults in "
             f"turn: device restart, broker restart, silent gateway unit.", "",
             f"- exit code {code}; samples accepted into the spool {accepted:,}; at the broker or still spooled for "
             f"it {upstream:,}; **unaccounted {unaccounted}**; gaps reported {gaps}",
             f"- RSS growth from minute 5 to the end: **{growth:.1f}%** (target < 5%)", "",
             "| minute | RSS MB | open fds | asyncio tasks | values read |", "|---:|---:|---:|---:|---:|"]
    lines += [f"| {m} | {rss:.1f} | {fds} | {tasks:.0f} | {vals:,.0f} |" for m, rss, fds, tasks, vals in rows]
    lines += ["", "Faults: " + "; ".join(faults)]
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
