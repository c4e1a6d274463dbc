"""Sparkplug B sink benchmark: DDATA encoding against a JSON baseline, and end-to-end spool -> broker throughput.

Run: ``.venv/bin/python bench/sparkplug.py`` (needs mosquitto for the end-to-end part; skipped without it).
Every figure is compared with a baseline measured in the same run, and printed as a ratio.
"""
from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from prometheus_client import CollectorRegistry

from edged.schema import Issues, Section
from edged.sinks.base import SinkContext, WriteResult
from edged.sinks.sparkplug import SparkplugSink, parse_spec
from edged.sinks.sparkplug_node import EdgeNode
from edged.spool.config import SpoolSpec
from edged.spool.spool import Spool
from edged.tag import DataType, Sample, Tag

N_TAGS = 50
N_SAMPLES = 100_000


def make_tags() -> list[Tag]:
    """50 tags on 5 devices, mixed types."""
    types = [DataType.FLOAT64, DataType.INT32, DataType.BOOL, DataType.FLOAT32, DataType.UINT16]
    return [Tag(f"dev{i % 5}", f"tag{i}", "x", types[i % len(types)], "default", None, slot=i) for i in range(N_TAGS)]


def make_samples(tags: list[Tag], n: int, t0: int) -> list[Sample]:
    """n samples cycling over the tags with plausible values."""
    out = []
    for i in range(n):
        t = tags[i % len(tags)]
        v: object = (i * 0.5 if t.dtype.is_float else bool(i & 1) if t.dtype is DataType.BOOL else i % 60000)
        out.append(Sample(t0 + i * 1000, t.device, t.name, v, 0))
    return out


def bench_encode() -> None:
    """Samples per second: EdgeNode.data (protobuf DDATA) vs json.dumps of the same samples (the baseline)."""
    tags = make_tags()
    node = EdgeNode("g", "n", tags, max_metrics_per_message=500)
    t0 = time.time_ns()
    node.births(0, {}, now_ns=t0)
    samples = make_samples(tags, N_SAMPLES, t0 + 1)
    batches = [samples[i:i + 1000] for i in range(0, len(samples), 1000)]

    def run_json() -> int:
        size = 0
        for b in batches:
            size += len(json.dumps([{"ts_ns": s.ts_ns, "device": s.device, "tag": s.tag, "value": s.value,
                                     "quality": s.quality} for s in b]).encode())
        return size

    def run_sparkplug() -> int:
        size = 0
        for b in batches:
            out, _ = node.data(b)
            size += sum(len(o.payload) for o in out)
        return size

    results = {}
    for name, fn in (("json baseline", run_json), ("sparkplug DDATA", run_sparkplug)):
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            size = fn()
            best = min(best, time.perf_counter() - start)
        results[name] = (N_SAMPLES / best, size / N_SAMPLES)
    base_rate, base_size = results["json baseline"]
    print(f"encode ({N_SAMPLES} samples, {N_TAGS} tags, batches of 1000, best of 3):")
    for name, (rate, size) in results.items():
        print(f"  {name:16s} {rate:12,.0f} samples/s  {size:6.1f} bytes/sample  "
              f"speed x{rate / base_rate:.2f}  size x{size / base_size:.2f}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _drain(directory: Path, port: int, max_metrics: int, n: int) -> float:
    """Seconds for the sink to publish and ack n spooled samples (historical replay)."""
    tags = make_tags()
    spool = Spool.open(directory / f"spool-{max_metrics}", SpoolSpec(), ["sp"])
    t0 = time.time_ns() - 10**9
    spool.append(make_samples(tags, n, t0))

    async def write(key: str, value: object, source: str) -> WriteResult:
        return WriteResult(False, key, error="read-only benchmark")

    ctx = SinkContext("bench", {t.key: t for t in tags}, write, CollectorRegistry(), state_dir=directory)
    issues = Issues("bench")
    sec = Section({"host": "127.0.0.1", "port": port, "group_id": "bench", "max_metrics_per_message": max_metrics,
                   "batch_max": 5000, "birth_wait_s": 0, "client_id": f"bench-{max_metrics}"}, "sink.sp", issues)
    spec = parse_spec("sp", sec, ctx.tags)
    issues.raise_if_any()
    sink = SparkplugSink(spec, spool, ctx)
    start = time.perf_counter()
    task = asyncio.create_task(sink.run())
    try:
        while spool.stats().lag_samples.get("sp", 1):
            await asyncio.sleep(0.01)
        return time.perf_counter() - start
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        spool.close()


def bench_end_to_end() -> None:
    """Spool -> sink -> mosquitto, acked: 500 metrics per DDATA vs one metric per DDATA (the baseline)."""
    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(mosquitto).exists():
        print("end-to-end: skipped (mosquitto not installed)")
        return
    with tempfile.TemporaryDirectory() as tmp:
        port = _free_port()
        conf = Path(tmp) / "m.conf"
        conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n")
        broker = subprocess.Popen([mosquitto, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for _ in range(200):
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    time.sleep(0.05)
            n = 20_000
            single = asyncio.run(_drain(Path(tmp), port, 1, n))
            batched = asyncio.run(_drain(Path(tmp), port, 500, n))
        finally:
            broker.terminate()
            broker.wait(10)
    print(f"end-to-end ({n} spooled samples replayed through mosquitto, acked):")
    print(f"  1 metric per DDATA (baseline) {n / single:12,.0f} samples/s")
    print(f"  500 metrics per DDATA         {n / batched:12,.0f} samples/s  x{single / batched:.1f}")


if __name__ == "__main__":
    bench_encode()
    if "--encode-only" not in sys.argv:
        bench_end_to_end()
