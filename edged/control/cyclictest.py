"""Run cyclictest (rt-tests) with given settings and read its histogram: the operating system's own wake-up floor."""
from __future__ import annotations

import shutil
import subprocess
from typing import Any

HIST_MAX_US = 100_000   # 1 us buckets up to 100 ms; later wake-ups are counted as overflows (max is exact)


def available() -> str | None:
    """Path of cyclictest, or None when rt-tests is not installed."""
    return shutil.which("cyclictest")


def command(exe: str, period_us: int, seconds: float, priority: int = 0, cpu: int = -1, mlock: bool = True,
            hold_dma_latency: bool = True) -> list[str]:
    """The cyclictest command line for one thread at this period, priority and affinity."""
    loops = max(1, int(seconds * 1e6 / period_us))
    hist = min(HIST_MAX_US, max(1000, 2 * period_us))
    cmd = [exe, "-i", str(period_us), "-l", str(loops), "-q", "-h", str(hist)]
    if mlock:
        cmd.append("-m")
    if priority > 0:
        cmd += ["-p", str(priority)]
    if cpu >= 0:
        cmd += ["-a", str(cpu)]
    if not hold_dma_latency:
        cmd.append("--laptop")    # do not hold /dev/cpu_dma_latency at 0 (cyclictest's default)
    return cmd


def parse(stdout: str) -> dict[str, Any]:
    """Quantiles (us) from cyclictest's -h histogram output: p50, p99, p99.9, max, the sample count and
    the histogram itself as (us, count) rows (bucket us holds wake-ups of us to us + 1 microseconds)."""
    hist: list[tuple[int, int]] = []
    maxv, overflows = 0, 0
    for line in stdout.splitlines():
        if line.startswith("# Max Latencies:"):
            maxv = int(line.split(":")[1].split()[0])
        elif line.startswith("# Histogram Overflows:"):
            overflows = int(line.split(":")[1].split()[0])
        elif line and line[0].isdigit():
            parts = line.split()
            if len(parts) >= 2:
                hist.append((int(parts[0]), int(parts[1])))
    total = sum(c for _, c in hist) + overflows

    def q(p: float) -> float:
        if total == 0:
            return float("nan")
        rank, acc = min(total - 1, int(p * total)), 0
        for us, c in hist:
            acc += c
            if acc > rank:
                return float(us)
        return float(maxv)

    return {"p50_us": q(0.5), "p99_us": q(0.99), "p999_us": q(0.999), "max_us": float(maxv), "n": total,
            "hist": hist}


def run(period_us: int, seconds: float, priority: int = 0, cpu: int = -1, mlock: bool = True,
        hold_dma_latency: bool = True) -> dict[str, Any] | None:
    """Run cyclictest once; its quantiles and command, {"error": ...} if it failed, None if not installed."""
    exe = available()
    if exe is None:
        return None
    cmd = command(exe, period_us, seconds, priority, cpu, mlock, hold_dma_latency)
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds * 3 + 60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"error": str(exc), "cmd": " ".join(cmd)}
    if res.returncode != 0:
        lines = (res.stderr or res.stdout).strip().splitlines()
        return {"error": lines[-1] if lines else f"exit {res.returncode}", "cmd": " ".join(cmd)}
    out = parse(res.stdout)
    if out["n"] == 0:
        return {"error": "no histogram in cyclictest's output", "cmd": " ".join(cmd)}
    return {**out, "cmd": " ".join(cmd)}
