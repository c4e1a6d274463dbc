"""Forwarding benchmark: edged's spool + MQTT sink vs a hand-written paho loop, spool writes, command round trip,
and scans against a slow disk.

Run from the repository root:  .venv/bin/python bench/forward.py
Starts its own mosquitto on a free loopback port (under a temporary folder) and, for the command
round trip, its own pymodbus server and an `edged run` subprocess. Prints each result and the
ratios against the baseline measured in the same run.

Slow disk only:  .venv/bin/python bench/forward.py --slow-fsync-only [--fsync-delays 0,20,50,200] [--src DIR]
runs `edged run` (a sim device with 50 counters scanned every 10 ms, the default spool, a JSON-lines sink)
with fsync/fdatasync made slower by an LD_PRELOAD shim (built with gcc), and prints scan overruns, commits
and time spent in Spool.append. `--src DIR` runs the edged package found in DIR (e.g. an export of an older
commit, for a before/after comparison; drivers and Cython extensions still come from this checkout).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from prometheus_client import CollectorRegistry

from edged.sinks.base import SinkContext, WriteResult
from edged.sinks.mqtt import MqttSink, MqttSpec
from edged.sinks.mqtt_conn import MqttConnection
from edged.spool.config import SpoolSpec
from edged.spool.spool import Spool
from edged.tag import Sample

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from slow_fsync_support import build_shim, slow_fsync_env  # noqa: E402  (the shim shared with the tests)


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_broker(directory: Path) -> tuple[subprocess.Popen[bytes], int]:
    """mosquitto on a free loopback port, no persistence (the same broker for every measurement)."""
    port = free_port()
    conf = directory / "mosquitto.conf"
    # set_tcp_nodelay: without it mosquitto holds small packets for the peer's delayed ACK (~40 ms)
    lines = [f"listener {port} 127.0.0.1", "allow_anonymous true", "max_inflight_messages 0",
             "max_queued_messages 1000000", "set_tcp_nodelay true"]
    if os.geteuid() == 0:
        lines.append("user root")
    conf.write_text("\n".join(lines) + "\n")
    proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("mosquitto did not start")


def make_samples(n: int, start: int = 0) -> list[Sample]:
    """n samples spread over 4 devices x 25 tags (like one scan of a busy cell)."""
    now = time.time_ns()
    return [Sample(now + i, f"dev{i % 4}", f"tag{i % 100 // 4}", float(start + i), 0) for i in range(n)]


async def _no_write(key: str, value: object, source: str) -> WriteResult:
    return WriteResult(False, key, error="bench")


# -- (a) edged: spool + MQTT sink ----------------------------------------------------------------------------
async def bench_edged(port: int, total: int, batch: int, workdir: Path, durability: str) -> float:
    """Samples/s from the first append until the spool is empty (every message PUBACKed and acked)."""
    spool = Spool.open(workdir / f"spool-{durability}", SpoolSpec(durability=durability), ["up"])
    conn = MqttConnection(host="127.0.0.1", port=port, client_id=f"bench-edged-{durability}")
    spec = MqttSpec(name="up", conn=conn, commands=False)
    ctx = SinkContext(cell_name="bench", tags={}, write=_no_write, registry=CollectorRegistry(), state_dir=workdir)
    sink = MqttSink(spec, spool, ctx)
    task = asyncio.create_task(sink.run())
    await asyncio.wait_for(sink.connected.wait(), 20)
    chunks = [make_samples(batch, i) for i in range(0, total, batch)]
    t0 = time.perf_counter()
    for chunk in chunks:
        while getattr(spool.stats(), "queue_samples", 0) > 100_000:  # faster than any cell: wait for the writer
            await asyncio.sleep(0.001)
        spool.append(chunk)
        await asyncio.sleep(0)  # acquisition and forwarding share the loop, as in the daemon
    while spool.stats().depth_samples:  # includes samples waiting for the writer thread's commit (do not drop)
        await asyncio.sleep(0.001)
    elapsed = time.perf_counter() - t0
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    spool.close()
    return total / elapsed


# -- (b) baseline: hand-written paho loop -----------------------------------------------------------------------
def bench_paho(port: int, total: int, batch: int, inflight: int, message_samples: int, pre_encoded: bool) -> float:
    """Samples/s of a plain paho loop publishing the same payloads at QoS 1 with the same window, no spool.

    With pre_encoded the payloads are built before the clock starts (the transport's ceiling);
    otherwise the loop encodes each message itself, as any forwarder must.
    """
    batches = [make_samples(batch, i) for i in range(0, total, batch)]
    columns = ["ts_ns", "device", "tag", "value", "quality"]

    def messages(samples: list[Sample]):  # noqa: ANN202
        by_device: dict[str, list[Sample]] = {}
        for smp in samples:
            by_device.setdefault(smp.device, []).append(smp)
        for device, rows in by_device.items():
            for i in range(0, len(rows), message_samples):
                body = {"cell": "bench", "device": device, "columns": columns, "samples": rows[i:i + message_samples]}
                yield f"bench/{device}", json.dumps(body, separators=(",", ":")).encode()

    prebuilt = [m for b in batches for m in messages(b)] if pre_encoded else None
    done = threading.Semaphore(0)
    window = threading.Semaphore(inflight)

    def on_publish(client, userdata, mid, rc, props) -> None:  # noqa: ANN001
        window.release()
        done.release()

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-paho", protocol=mqtt.MQTTv311,
                         clean_session=False)
    client.max_inflight_messages_set(65535)
    client.on_publish = on_publish
    client.connect("127.0.0.1", port)
    client.loop_start()
    sent = 0
    t0 = time.perf_counter()
    for topic, payload in (prebuilt if prebuilt is not None else (m for b in batches for m in messages(b))):
        window.acquire()
        client.publish(topic, payload, qos=1)
        sent += 1
    for _ in range(sent):
        done.acquire()
    elapsed = time.perf_counter() - t0
    client.disconnect()
    client.loop_stop()
    return total / elapsed


# -- spool writes alone --------------------------------------------------------------------------------------------
def bench_spool(workdir: Path, total: int, batch: int, durability: str) -> tuple[float, float]:
    """(appends/s, samples/s) of Spool.append alone."""
    spool = Spool.open(workdir / f"spool-only-{durability}", SpoolSpec(durability=durability), ["a"])
    chunks = [make_samples(batch, i) for i in range(0, total, batch)]
    t0 = time.perf_counter()
    for chunk in chunks:
        if getattr(spool.stats(), "queue_samples", 0) > 100_000:  # faster than any cell: wait for the writer
            spool.flush()
        spool.append(chunk)
    if hasattr(spool, "flush"):  # until the writer thread committed everything (a spool before it: synchronous)
        spool.flush()
    elapsed = time.perf_counter() - t0
    spool.close()
    return len(chunks) / elapsed, total / elapsed


def fsync_latency_ms(workdir: Path, n: int = 50) -> float:
    """Median time of a 4 KiB write + fdatasync on the spool's disk right now (context for durability=batch)."""
    path = workdir / "fsync-probe"
    times = []
    with open(path, "wb") as f:
        for _ in range(n):
            t0 = time.perf_counter()
            f.write(b"x" * 4096)
            f.flush()
            os.fdatasync(f.fileno())
            times.append(time.perf_counter() - t0)
    path.unlink()
    return statistics.median(times) * 1000


# -- command round trip through the daemon ------------------------------------------------------------------------
class _Registers:
    """Holding registers of a plain pymodbus server (unit 1)."""

    def __init__(self) -> None:
        self.hr = [0] * 4

    def device_ids(self) -> list[int]:
        """Unit ids served."""
        return [1]

    async def async_getValues(self, device_id: int, func_code: int, address: int, count: int = 1):  # noqa: N802
        """Read registers (called by pymodbus)."""
        return self.hr[address:address + count]

    async def async_setValues(self, device_id: int, func_code: int, address: int, values: list[int]):  # noqa: N802
        """Write registers (called by pymodbus)."""
        self.hr[address:address + len(values)] = [int(v) for v in values]


def bench_commands(port: int, n: int, workdir: Path) -> list[float]:
    """Round-trip times (s): command published -> written to the Modbus server -> response received."""
    from pymodbus.server import ModbusTcpServer
    from pymodbus.simulator import SimData, SimDevice

    regs = _Registers()
    mb_port = free_port()
    loop = asyncio.new_event_loop()
    started = threading.Event()

    async def serve() -> None:
        server = ModbusTcpServer(SimDevice(0, simdata=SimData(0)), address=("127.0.0.1", mb_port),
                                 ignore_missing_devices=True)
        server.context = regs
        await server.serve_forever(background=True)
        started.set()

    def run_server() -> None:
        loop.create_task(serve())
        loop.run_forever()

    threading.Thread(target=run_server, daemon=True).start()
    started.wait(20)
    cell = workdir / "cmd-cell.toml"
    cell.write_text(f"""
[cell]
name = "bench"
state_dir = "{workdir / 'cmd-state'}"
log_level = "warning"
[metrics]
enabled = false
[device.press1]
driver = "modbus"
host = "127.0.0.1"
port = {mb_port}
unit_id = 1
[device.press1.tag.setpoint]
address = "hr:0"
type = "uint16"
access = "write"
[sink.up]
type = "mqtt"
port = {port}
client_id = "bench-cmd"
command_rate_per_s = 1000
command_burst = 1000
""")
    proc = subprocess.Popen([sys.executable, "-m", "edged", "run", "-c", str(cell)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    answers: dict[str, float] = {}
    got = threading.Condition()

    def on_message(client, userdata, msg) -> None:  # noqa: ANN001
        if msg.topic.startswith("bench/cmd_result/"):
            body = json.loads(msg.payload)
            with got:
                answers[body["id"]] = time.perf_counter()
                got.notify_all()
        elif msg.topic == "bench/status" and msg.payload == b"online":
            with got:
                answers["online"] = 0.0
                got.notify_all()

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-operator", protocol=mqtt.MQTTv311)
    client.on_message = on_message
    client.connect("127.0.0.1", port)
    client.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # an operator UI would do the same
    client.subscribe([("bench/cmd_result/#", 1), ("bench/status", 1)])
    client.loop_start()
    rtts: list[float] = []
    try:
        with got:
            if not got.wait_for(lambda: "online" in answers, 60):
                raise SystemExit("edged did not come online")
        time.sleep(1.0)  # let the device connect
        for i in range(n + 10):
            rid = f"c{i}"
            t0 = time.perf_counter()
            client.publish("bench/cmd/press1/setpoint", json.dumps({"value": i % 1000, "id": rid}), qos=1)
            with got:
                if not got.wait_for(lambda: rid in answers, 10):
                    raise SystemExit(f"no answer to command {rid}")
            if i >= 10:  # the first ones warm up connections and caches
                rtts.append(answers[rid] - t0)
            if regs.hr[0] != i % 1000:
                raise SystemExit(f"command {rid} answered but the register holds {regs.hr[0]}")
    finally:
        client.loop_stop()
        client.disconnect()
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        loop.call_soon_threadsafe(loop.stop)
    return rtts


# -- scans against a slow disk ---------------------------------------------------------------------------------
def _metric_sum(text: str, name: str) -> float | None:
    """Sum of every sample of one metric name in an exposition (None if absent)."""
    total, seen = 0.0, False
    for line in text.splitlines():
        if line.startswith(name) and (line[len(name)] in " {"):
            total += float(line.rsplit(" ", 1)[1])
            seen = True
    return total if seen else None


def bench_slow_fsync(workdir: Path, shim: Path, delay_ms: int, seconds: float, src: str | None) -> dict[str, float]:
    """Run the daemon with fsync delay_ms slower; overruns, scans, commits and append time over `seconds`."""
    import urllib.request

    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    tags = "".join(f'\n[device.sim1.tag.c{i}]\naddress = "counter:0"\nscan_ms = 10\n' for i in range(50))
    cell = workdir / "cell.toml"
    cell.write_text(f"""
[cell]
name = "bench"
state_dir = "{workdir / 'state'}"
log_level = "warning"
[metrics]
listen = "127.0.0.1:{port}"
[device.sim1]
driver = "sim"
{tags}
[sink.local]
type = "jsonl"
path = "samples.jsonl"
""")
    env = dict(os.environ, **slow_fsync_env(shim, delay_ms))
    if src:
        env["PYTHONPATH"] = src
    # cwd: `python -m` puts it first on sys.path, so it must not be a checkout other than --src
    proc = subprocess.Popen([sys.executable, "-m", "edged", "run", "-c", str(cell)], env=env, cwd=workdir,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def scrape() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
            return r.read().decode()

    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                scrape()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit("edged did not start")
                time.sleep(0.2)
        time.sleep(2.0)  # warm up: connect, first commits
        a, t0 = scrape(), time.monotonic()
        time.sleep(seconds)
        b, t1 = scrape(), time.monotonic()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)

    def delta(name: str) -> float:
        x, y = _metric_sum(a, name), _metric_sum(b, name)
        return (y - x) if x is not None and y is not None else float("nan")

    return {"seconds": t1 - t0, "scans": delta("edged_scans_total"), "overruns": delta("edged_scan_overruns_total"),
            "commits": delta("edged_spool_commits_total"), "append_s": delta("edged_spool_append_duration_seconds_sum"),
            "appends": delta("edged_spool_append_duration_seconds_count"),
            "commit_s": delta("edged_spool_commit_duration_seconds_sum"), "exit": proc.returncode}


def slow_fsync_report(work: Path, delays: list[int], seconds: float, src: str | None) -> None:
    """Print one line per fsync delay."""
    if not delays:
        return
    shim = build_shim(work / "shim")
    if shim is None:
        print("slow fsync: skipped (no gcc to build the LD_PRELOAD shim)")
        return
    print(f"slow disk: `edged run` from {src or 'this checkout'}, sim device with 50 counters every 10 ms, default "
          f"spool, JSON-lines sink, {seconds:.0f} s per delay")
    for delay in delays:
        r = bench_slow_fsync(work / f"slow-{delay}", shim, delay, seconds, src)
        if r["commits"] == r["commits"]:
            commits = f"{r['commits'] / r['seconds']:5.1f} commits/s"
        else:  # a spool before the writer thread: one commit per append
            commits = f"{r['appends'] / r['seconds']:5.1f} commits/s (one per append)"
        print(f"fsync +{delay:3d} ms: {r['scans']:6.0f} scans, {r['overruns']:5.0f} overruns, {commits}, "
              f"Spool.append {r['append_s']:6.3f} s of {r['seconds']:.1f} s, commit time {r['commit_s']:6.2f} s, "
              f"exit {r['exit']}")


def main() -> int:
    """Run every measurement and print results and ratios."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--samples", type=int, default=500_000, help="samples per forwarding run")
    ap.add_argument("--batch", type=int, default=1000, help="samples per spool append")
    ap.add_argument("--commands", type=int, default=200, help="commands for the round-trip measurement")
    ap.add_argument("--rounds", type=int, default=3, help="forwarding runs (best is reported)")
    ap.add_argument("--slow-fsync-only", action="store_true", help="only the slow-disk scan measurement")
    ap.add_argument("--fsync-delays", default="0,20,50,200", help="extra ms per fsync, comma-separated")
    ap.add_argument("--slow-seconds", type=float, default=12.0, help="measured seconds per fsync delay")
    ap.add_argument("--src", default=None, help="run the edged package from this folder (slow-disk case)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="edged-bench-"))
    delays = [int(x) for x in args.fsync_delays.split(",") if x.strip()]
    if args.slow_fsync_only:
        try:
            slow_fsync_report(work, delays, args.slow_seconds, args.src)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return 0
    broker, port = start_broker(work)
    try:
        spec = MqttSpec(name="up", conn=MqttConnection(host="127.0.0.1", port=port, client_id="x"))
        print(f"forwarding {args.samples} samples, {args.batch} per append, {spec.max_message_samples} per message, "
              f"{spec.max_inflight} messages in flight, QoS 1, mosquitto on 127.0.0.1:{port}")
        a_batch = max(asyncio.run(bench_edged(port, args.samples, args.batch, work / f"r{r}", "batch"))
                      for r in range(args.rounds))
        a_os = max(asyncio.run(bench_edged(port, args.samples, args.batch, work / f"o{r}", "os"))
                   for r in range(args.rounds))
        b = max(bench_paho(port, args.samples, args.batch, spec.max_inflight, spec.max_message_samples, False)
                for _ in range(args.rounds))
        b0 = max(bench_paho(port, args.samples, args.batch, spec.max_inflight, spec.max_message_samples, True)
                 for _ in range(args.rounds))
        print(f"(a) edged spool+MQTT sink, durability=batch (default): {a_batch:12,.0f} samples/s   "
              f"{a_batch / b:5.1%} of (b), {a_batch / b0:5.1%} of (b0)   target >= 200,000/s and >= 30% of (b)")
        print(f"(a') edged spool+MQTT sink, durability=os:             {a_os:12,.0f} samples/s   "
              f"{a_os / b:5.1%} of (b), {a_os / b0:5.1%} of (b0)")
        print(f"(b) hand-written paho loop, encodes the same payloads: {b:12,.0f} samples/s")
        print(f"(b0) same, payloads encoded before the clock starts:  {b0:12,.0f} samples/s")
        print(f"fsync latency of this disk during the run: median {fsync_latency_ms(work):.2f} ms "
              "(each durability=batch commit waits for one)")
        for durability in ("batch", "os"):
            appends, sps = bench_spool(work, args.samples, args.batch, durability)
            print(f"spool append alone, durability={durability:5}: {appends:9,.0f} appends/s  {sps:12,.0f} samples/s")
        small_appends, small_sps = bench_spool(work, 20_000, 10, "batch")
        print(f"spool append alone, durability=batch, 10-sample appends: {small_appends:9,.0f} appends/s  "
              f"{small_sps:12,.0f} samples/s")
        rtts = bench_commands(port, args.commands, work)
        rtts.sort()
        p50 = statistics.median(rtts) * 1000
        p99 = rtts[min(len(rtts) - 1, int(len(rtts) * 0.99))] * 1000
        print(f"command round trip (MQTT -> edged -> Modbus write -> response), {len(rtts)} commands: "
              f"p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {rtts[-1] * 1000:.1f} ms   target p99 < 50 ms")
        slow_fsync_report(work, delays, args.slow_seconds, args.src)
    finally:
        broker.terminate()
        broker.wait(10)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
