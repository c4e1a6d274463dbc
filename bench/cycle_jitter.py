"""Cycle jitter: CycleThread (200 blocks) vs asyncio vs a Python thread vs cyclictest, all under a GIL-holding CPU load.

Every run happens in this one process, on this machine, back to back, each for --seconds at the same
period, each with the same Python thread burning CPU (holding the GIL most of the time). Lateness is
wake-up time minus the absolute deadline. Prints p50/p99/max per contender and the ratios the
project targets; then the cost of one block step (200 blocks in a tight loop, simulated clock)
against the same arithmetic done by Python functions.

Like for like with cyclictest: cyclictest locks its memory (-m) and, by default, holds
/dev/cpu_dma_latency at 0 so that idle CPUs poll instead of entering an idle state. This bench does
the same for (a)-(c) (--cpu-dma-latency 0, mlockall) unless told otherwise; with
--cpu-dma-latency -1 cyclictest runs with --laptop (no request either). See BENCHMARKS.md for why
this decides the comparison on virtual machines (bench/cycle_trace.py shows where the time goes).

    .venv/bin/python bench/cycle_jitter.py                # 10 s each, priorities 0 and 80
    .venv/bin/python bench/cycle_jitter.py --seconds 2 --priorities 0 --json
    .venv/bin/python bench/cycle_jitter.py --cpu-dma-latency -1   # no wake-up latency request anywhere
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import threading
import time
from typing import Any

from edged.cext.control import CycleThread, SampleRing, lock_memory
from edged.control import cyclictest
from edged.control.pmqos import CpuLatencyRequest
from edged.control.sim import synthetic_program


class Burner:
    """A Python thread that keeps one core busy and holds the GIL (the load of every run)."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        x = 0
        while not self._stop.is_set():
            for i in range(10_000):
                x += i * i

    def __enter__(self) -> "Burner":
        self._t.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._t.join()


def quantiles_us(values_ns: list[int]) -> dict[str, float]:
    """p50/p99/max of lateness samples, in microseconds."""
    v = sorted(values_ns)
    if not v:
        return {"p50_us": float("nan"), "p99_us": float("nan"), "max_us": float("nan"), "n": 0}

    def q(p: float) -> float:
        return v[min(len(v) - 1, int(p * len(v)))] / 1000

    return {"p50_us": q(0.5), "p99_us": q(0.99), "max_us": v[-1] / 1000, "n": len(v)}


def set_fifo(priority: int) -> bool:
    """SCHED_FIFO for the calling thread (Linux: pid 0 is the calling thread); False if refused."""
    if priority <= 0:
        return True
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
        return True
    except OSError:
        return False


def reset_sched() -> None:
    """Back to normal scheduling for the calling thread (after a SCHED_FIFO run)."""
    try:
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    except OSError:
        pass


def run_cycle_thread(period_us: int, seconds: float, priority: int, nblocks: int) -> dict[str, Any]:
    """(a) The CycleThread running nblocks blocks, samples drained from its ring by this thread."""
    program, _ = synthetic_program(nblocks, period_us)
    ring = SampleRing(1 << 16)
    th = CycleThread(program, None, None, ring, period_us * 1000, priority, -1, "skip")
    drained = 0
    with Burner():
        th.start()
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            time.sleep(0.05)
            drained += len(ring.drain())
        th.stop()
    drained += len(ring.drain())
    p50, p99 = th.quantiles("lateness", [0.5, 0.99])
    return {"p50_us": p50 / 1000, "p99_us": p99 / 1000, "max_us": th.max_ns("lateness") / 1000, "n": th.cycles,
            "overruns": th.overruns, "rt": priority > 0 and th.prio_errno == 0, "samples": drained,
            "dropped": ring.dropped, "exec_p99_us": th.quantiles("execution", [0.99])[0] / 1000}


def run_asyncio(period_us: int, seconds: float, priority: int) -> dict[str, Any]:
    """(b) An asyncio loop sleeping to the same absolute deadlines."""
    period = period_us * 1000
    late: list[int] = []

    async def main() -> None:
        nxt = time.monotonic_ns() + period
        end = nxt + int(seconds * 1e9)
        while nxt < end:
            await asyncio.sleep(max(0.0, (nxt - time.monotonic_ns()) / 1e9))
            now = time.monotonic_ns()
            late.append(now - nxt)
            nxt += period
            while nxt <= now:           # skip missed deadlines, like the cycle thread
                nxt += period

    rt = set_fifo(priority)
    try:
        with Burner():
            asyncio.run(main())
    finally:
        reset_sched()
    return {**quantiles_us(late), "rt": priority > 0 and rt}


def run_python_thread(period_us: int, seconds: float, priority: int) -> dict[str, Any]:
    """(c) A Python thread sleeping to absolute deadlines."""
    period = period_us * 1000
    late: list[int] = []
    granted = [False]

    def body() -> None:
        granted[0] = set_fifo(priority)
        nxt = time.monotonic_ns() + period
        end = nxt + int(seconds * 1e9)
        while nxt < end:
            d = nxt - time.monotonic_ns()
            if d > 0:
                time.sleep(d / 1e9)
            now = time.monotonic_ns()
            late.append(now - nxt)
            nxt += period
            while nxt <= now:
                nxt += period

    with Burner():
        t = threading.Thread(target=body)
        t.start()
        t.join()
    return {**quantiles_us(late), "rt": priority > 0 and granted[0]}


def run_cyclictest(period_us: int, seconds: float, priority: int, hold_dma_latency: bool) -> dict[str, Any] | None:
    """(d) cyclictest (rt-tests) as the operating system's own floor; None when not installed."""
    with Burner():
        res = cyclictest.run(period_us, seconds, priority, -1, mlock=True, hold_dma_latency=hold_dma_latency)
    if res is not None and "error" not in res:
        res["rt"] = priority > 0
        res.pop("hist", None)
    return res


def block_step_cost(nblocks: int = 200, iterations: int = 100_000) -> dict[str, float]:
    """ns per block step of the C interpreter vs the same number of Python function-call blocks."""
    program, _ = synthetic_program(nblocks, report=False)
    program.bench(1000)                               # warm up
    c_ns = program.bench(iterations) / (iterations * nblocks)

    def py_add(ws: list[float], a: int, b: int, o: int) -> None:
        ws[o] = ws[a] + ws[b]

    ws = [1.0] * (nblocks + 2)
    py_iter = max(1, iterations // 100)
    t0 = time.perf_counter_ns()
    for _ in range(py_iter):
        for i in range(nblocks):
            py_add(ws, i, i + 1, i + 2)
    py_ns = (time.perf_counter_ns() - t0) / (py_iter * nblocks)
    return {"c_ns_per_block": c_ns, "python_ns_per_block": py_ns, "speedup": py_ns / c_ns}


def main() -> int:
    """Run every contender at each priority and print the table and ratios."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--period-us", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--blocks", type=int, default=200)
    ap.add_argument("--priorities", default="0,80", help="comma-separated SCHED_FIFO priorities (0: normal)")
    ap.add_argument("--cpu-dma-latency", type=int, default=0, metavar="US",
                    help="hold /dev/cpu_dma_latency at this many us during (a)-(c), as cyclictest does at 0 "
                         "(default 0); -1: no request, and cyclictest runs with --laptop")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    req = CpuLatencyRequest()
    dma_rc = req.acquire(args.cpu_dma_latency) if args.cpu_dma_latency >= 0 else -1
    mlock_rc = lock_memory()
    report: dict[str, Any] = {"period_us": args.period_us, "seconds": args.seconds, "blocks": args.blocks,
                              "cpus": os.cpu_count(), "cpu_dma_latency_us": args.cpu_dma_latency,
                              "cpu_dma_latency_held": dma_rc == 0, "mlock": mlock_rc == 0,
                              "loadavg_before": os.getloadavg(), "runs": {}}
    for prio in [int(p) for p in args.priorities.split(",") if p.strip()]:
        runs = {
            "a_cycle_thread": run_cycle_thread(args.period_us, args.seconds, prio, args.blocks),
            "b_asyncio": run_asyncio(args.period_us, args.seconds, prio),
            "c_python_thread": run_python_thread(args.period_us, args.seconds, prio),
            "d_cyclictest": run_cyclictest(args.period_us, args.seconds, prio, dma_rc == 0),
        }
        a, b, d = runs["a_cycle_thread"], runs["b_asyncio"], runs["d_cyclictest"]
        ratios = {"a_p99_over_cyclictest_p99": a["p99_us"] / d["p99_us"] if d and d.get("p99_us") else None,
                  "asyncio_p99_over_a_p99": b["p99_us"] / a["p99_us"] if a["p99_us"] else None,
                  "python_thread_p99_over_a_p99": runs["c_python_thread"]["p99_us"] / a["p99_us"] if a["p99_us"] else None}
        report["runs"][f"priority_{prio}"] = {"runs": runs, "ratios": ratios}
    report["block_step"] = block_step_cost(args.blocks)
    report["loadavg_after"] = os.getloadavg()
    req.release()
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"cycle jitter, period {args.period_us} us, {args.seconds:g} s each, Python thread burning CPU, "
          f"{os.cpu_count()} CPU(s), mlock {'on' if report['mlock'] else 'off'}, cpu_dma_latency "
          f"{'held at ' + str(args.cpu_dma_latency) + ' us' if report['cpu_dma_latency_held'] else 'not held'}; "
          f"load average {report['loadavg_before'][0]:.2f} before, {report['loadavg_after'][0]:.2f} after")
    for key, r in report["runs"].items():
        print(f"\n{key}:")
        print(f"  {'contender':<18} {'p50 us':>10} {'p99 us':>10} {'max us':>10} {'n':>8}  rt")
        for name, x in r["runs"].items():
            if x is None or "error" in x:
                print(f"  {name:<18} {'(not run: ' + str(x and x.get('error')) + ')'}")
                continue
            print(f"  {name:<18} {x['p50_us']:>10.1f} {x['p99_us']:>10.1f} {x['max_us']:>10.1f} {x['n']:>8}  "
                  f"{'yes' if x.get('rt') else 'no'}")
        for name, v in r["ratios"].items():
            print(f"  {name} = {'n/a' if v is None else f'{v:.2f}'}")
    bs = report["block_step"]
    print(f"\nblock step ({args.blocks} blocks, tight loop): {bs['c_ns_per_block']:.1f} ns per block; "
          f"Python function-call blocks {bs['python_ns_per_block']:.1f} ns; ratio {bs['speedup']:.0f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
