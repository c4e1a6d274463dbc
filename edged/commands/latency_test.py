"""Measure how late the cycle thread wakes on this machine (run it before trusting a cell's control task)."""
from __future__ import annotations

import argparse
import errno
import json
import sys
import threading
import time
from typing import Any

NAME = "latency-test"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of `edged latency-test`."""
    p.add_argument("--period-us", type=int, default=1000, metavar="US", help="cycle period (100..10000000, default 1000)")
    p.add_argument("--seconds", type=float, default=10.0, help="duration (default 10)")
    p.add_argument("--blocks", type=int, default=0, metavar="N",
                   help="run N blocks per cycle (a realistic mix) instead of an empty cycle")
    p.add_argument("--load", action="store_true", help="burn CPU in a Python thread meanwhile (holds the GIL)")
    p.add_argument("--priority", type=int, default=0, metavar="P", help="SCHED_FIFO priority 1..99 (0: normal)")
    p.add_argument("--cpu", type=int, default=-1, help="pin the cycle thread to this CPU (-1: any)")
    p.add_argument("--mlock", action="store_true", help="lock the process memory (mlockall)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def _burn(stop: threading.Event) -> None:
    x = 0
    while not stop.is_set():
        for i in range(10_000):
            x += i * i


def measure(period_us: int, seconds: float, blocks: int = 0, load: bool = False, priority: int = 0,
            cpu: int = -1, mlock: bool = False) -> dict[str, Any]:
    """Run a cycle thread for a while and return lateness quantiles (us), overruns and grants."""
    from edged.cext.control import CycleThread, Program
    from edged.control.plane import lock_process_memory

    if blocks:
        from edged.control.sim import synthetic_program

        program, _ = synthetic_program(blocks, period_us, report=False)
    else:
        program = Program(0, [], [], [], [], [])
    mlock_rc = lock_process_memory() if mlock else -1
    thread = CycleThread(program, None, None, None, period_us * 1000, priority, cpu, "skip")
    stop = threading.Event()
    burner = threading.Thread(target=_burn, args=(stop,), daemon=True) if load else None
    if burner:
        burner.start()
    thread.start()
    try:
        time.sleep(seconds)
    finally:
        thread.stop()
        stop.set()
        if burner:
            burner.join()
    p50, p99, p999 = thread.quantiles("lateness", [0.5, 0.99, 0.999])
    e50, e99 = thread.quantiles("execution", [0.5, 0.99])
    return {
        "period_us": period_us, "seconds": seconds, "blocks": blocks, "load": load,
        "cycles": thread.cycles, "overruns": thread.overruns, "skipped": thread.skipped,
        "p50_us": p50 / 1000, "p99_us": p99 / 1000, "p999_us": p999 / 1000,
        "max_us": thread.max_ns("lateness") / 1000,
        "exec_p50_us": e50 / 1000, "exec_p99_us": e99 / 1000, "exec_max_us": thread.max_ns("execution") / 1000,
        "priority": {"requested": priority, "granted": priority > 0 and thread.prio_errno == 0,
                     "error": _err(thread.prio_errno)},
        "affinity": {"requested": cpu, "granted": cpu >= 0 and thread.cpu_errno == 0, "error": _err(thread.cpu_errno)},
        "mlock": {"requested": mlock, "granted": mlock and mlock_rc == 0, "error": _err(mlock_rc)},
    }


def _err(rc: int) -> str | None:
    return None if rc <= 0 else errno.errorcode.get(rc, str(rc))


def run(args: argparse.Namespace) -> int:
    """Measure and print; exit 2 on bad options."""
    if not 100 <= args.period_us <= 10_000_000:
        print(f"edged latency-test: --period-us: expected 100..10000000, found {args.period_us}", file=sys.stderr)
        return 2
    if not 0 < args.seconds <= 86_400 or args.blocks < 0 or not 0 <= args.priority <= 99:
        print("edged latency-test: expected 0 < --seconds <= 86400, --blocks >= 0 and --priority 0..99", file=sys.stderr)
        return 2
    res = measure(args.period_us, args.seconds, args.blocks, args.load, args.priority, args.cpu, args.mlock)
    if args.json:
        print(json.dumps(res))
        return 0
    print(f"period {res['period_us']} us, {res['cycles']} cycles in {res['seconds']:g} s, "
          f"{res['blocks']} block(s){', with CPU load' if res['load'] else ''}")
    print(f"lateness: p50 {res['p50_us']:.1f} us  p99 {res['p99_us']:.1f} us  "
          f"p99.9 {res['p999_us']:.1f} us  max {res['max_us']:.1f} us")
    print(f"execution: p50 {res['exec_p50_us']:.1f} us  p99 {res['exec_p99_us']:.1f} us  max {res['exec_max_us']:.1f} us")
    print(f"overruns: {res['overruns']} (skipped cycles {res['skipped']})")
    for what in ("priority", "affinity", "mlock"):
        r = res[what]
        if r["requested"] not in (0, -1, False):
            print(f"{what}: {'granted' if r['granted'] else 'refused (' + str(r['error']) + ')'}")
    return 0
