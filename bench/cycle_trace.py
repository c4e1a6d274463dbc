"""Where a cycle's lateness goes: kernel tracepoints (perf, CLOCK_MONOTONIC) split each wake-up of the cycle thread.

For every cycle of a `edged-cycle` thread it takes, from one `perf record` of the whole system:
  D  the deadline: `expires` of the thread's hrtimer_start (clock_nanosleep TIMER_ABSTIME)
  E  hrtimer_expire_entry of that timer (the timer interrupt ran)
  W  sched_wakeup of the thread
  S  sched_switch to the thread (it runs)
and whether the CPU that took the interrupt was in an idle state then (power:cpu_idle: the exit is traced
after the interrupt handler).
It prints quantiles of E-D (interrupt delivery, including idle-state exit), W-E, S-W and S-D, with and
without a CPU wake-up latency request (/dev/cpu_dma_latency = 0), under the same Python CPU burner
as bench/cycle_jitter.py. Needs root and perf.

    .venv/bin/python bench/cycle_trace.py --seconds 5 --priority 80
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from typing import Any

EVENTS = "timer:hrtimer_start,timer:hrtimer_expire_entry,sched:sched_wakeup,sched:sched_switch,power:cpu_idle"
CHILD = """
import sys, time
from edged.commands.latency_test import measure
from edged.control.pmqos import CpuLatencyRequest
req = CpuLatencyRequest()
if int(sys.argv[5]) >= 0:
    assert req.acquire(int(sys.argv[5])) == 0, "cpu_dma_latency refused"
import json
print(json.dumps(measure(int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), True, int(sys.argv[4]), -1, True)))
"""
LINE = re.compile(r"^\s*(?P<comm>.+?)\s+(?P<tid>\d+)\s+\[(?P<cpu>\d+)\]\s+(?P<t>\d+\.\d+):\s+(?P<ev>[\w:]+):\s*(?P<rest>.*)$")


def _q(v: list[float], p: float) -> float:
    if not v:
        return float("nan")
    v = sorted(v)
    return v[min(len(v) - 1, int(p * len(v)))]


def analyse(script: str) -> dict[str, Any]:
    """Per-cycle split of the cycle thread's wake-ups from `perf script` text."""
    timers: dict[str, int] = {}          # hrtimer ptr -> expires (ns) of the cycle thread's pending sleep
    cyc_tid = None
    pending: dict[int, dict[str, Any]] = {}   # tid -> current cycle record
    in_idle: dict[int, bool] = {}             # cpu -> inside an idle state (the exit is traced after the interrupt)
    cycles: list[dict[str, Any]] = []
    for line in script.splitlines():
        m = LINE.match(line)
        if not m:
            continue
        t = int(m["t"].replace(".", ""))        # --ns: seconds.nanoseconds
        ev, rest, cpu, tid = m["ev"], m["rest"], int(m["cpu"]), int(m["tid"])
        if ev == "power:cpu_idle":
            in_idle[cpu] = "state=4294967295" not in rest
        elif ev == "timer:hrtimer_start" and m["comm"].strip() == "edged-cycle" and "hrtimer_wakeup" in rest:
            cyc_tid = tid
            ptr = re.search(r"hrtimer=(0x[0-9a-f]+)", rest)[1]
            exp = int(re.search(r"expires=(\d+)", rest)[1])
            timers[ptr] = exp
            pending[tid] = {"D": exp, "ptr": ptr}
        elif ev == "timer:hrtimer_expire_entry":
            ptr = re.search(r"hrtimer=(0x[0-9a-f]+)", rest)[1]
            if ptr in timers and cyc_tid in pending and pending[cyc_tid].get("ptr") == ptr and "E" not in pending[cyc_tid]:
                pending[cyc_tid]["E"] = t
                pending[cyc_tid]["idle"] = in_idle.get(cpu, False)
        elif ev == "sched:sched_wakeup" and cyc_tid is not None and f"pid={cyc_tid} " in rest + " ":
            rec = pending.get(cyc_tid)
            if rec is not None and "E" in rec and "W" not in rec:
                rec["W"] = t
        elif ev == "sched:sched_switch" and cyc_tid is not None and f"next_pid={cyc_tid} " in rest + " ":
            rec = pending.pop(cyc_tid, None)
            if rec is not None and "W" in rec:
                rec["S"] = t
                cycles.append(rec)
    ed = [(c["E"] - c["D"]) / 1000 for c in cycles]
    we = [(c["W"] - c["E"]) / 1000 for c in cycles]
    sw = [(c["S"] - c["W"]) / 1000 for c in cycles]
    sd = [(c["S"] - c["D"]) / 1000 for c in cycles]
    idle = [c for c in cycles if c["idle"]]
    busy = [c for c in cycles if not c["idle"]]
    return {
        "cycles": len(cycles),
        "from_idle_fraction": len(idle) / len(cycles) if cycles else float("nan"),
        "interrupt_E_minus_D_us": {"p50": _q(ed, 0.5), "p99": _q(ed, 0.99)},
        "wakeup_W_minus_E_us": {"p50": _q(we, 0.5), "p99": _q(we, 0.99)},
        "switch_S_minus_W_us": {"p50": _q(sw, 0.5), "p99": _q(sw, 0.99)},
        "total_S_minus_D_us": {"p50": _q(sd, 0.5), "p99": _q(sd, 0.99)},
        "E_minus_D_from_idle_p50_us": _q([(c["E"] - c["D"]) / 1000 for c in idle], 0.5),
        "E_minus_D_from_busy_p50_us": _q([(c["E"] - c["D"]) / 1000 for c in busy], 0.5),
        "S_minus_W_from_idle_p50_us": _q([(c["S"] - c["W"]) / 1000 for c in idle], 0.5),
        "S_minus_W_from_busy_p50_us": _q([(c["S"] - c["W"]) / 1000 for c in busy], 0.5),
        "S_minus_D_from_idle_us": {"p50": _q([(c["S"] - c["D"]) / 1000 for c in idle], 0.5),
                                   "p99": _q([(c["S"] - c["D"]) / 1000 for c in idle], 0.99)},
        "S_minus_D_from_busy_us": {"p50": _q([(c["S"] - c["D"]) / 1000 for c in busy], 0.5),
                                   "p99": _q([(c["S"] - c["D"]) / 1000 for c in busy], 0.99)},
    }


def run(period_us: int, seconds: float, blocks: int, priority: int, dma: int) -> dict[str, Any]:
    """One traced latency-test run (CPU burner on) with or without the cpu_dma_latency request."""
    with tempfile.TemporaryDirectory() as d:
        data = os.path.join(d, "perf.data")
        cmd = ["perf", "record", "-q", "-k", "CLOCK_MONOTONIC", "-a", "-e", EVENTS, "-o", data, "--",
               sys.executable, "-c", CHILD, str(period_us), str(seconds), str(blocks), str(priority), str(dma)]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds * 4 + 120)
        if res.returncode != 0:
            raise SystemExit(f"perf record failed: {res.stderr.strip()}")
        measured = json.loads(res.stdout.strip().splitlines()[-1])
        script = subprocess.run(["perf", "script", "--ns", "-i", data, "-F", "comm,tid,cpu,time,event,trace"],
                                capture_output=True, text=True, timeout=600).stdout
    out = analyse(script)
    out["thread_lateness_us"] = {"p50": measured["p50_us"], "p99": measured["p99_us"], "max": measured["max_us"]}
    return out


def main() -> int:
    """Trace both conditions and print the split."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--period-us", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--blocks", type=int, default=200)
    ap.add_argument("--priority", type=int, default=80)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if shutil.which("perf") is None:
        print("perf is not installed (apt-get install linux-perf)", file=sys.stderr)
        return 2
    report = {f"cpu_dma_latency_{'held_0' if dma == 0 else 'none'}":
              run(args.period_us, args.seconds, args.blocks, args.priority, dma) for dma in (-1, 0)}
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"cycle trace: period {args.period_us} us, {args.seconds:g} s, {args.blocks} blocks, priority "
          f"{args.priority}, Python CPU burner, mlock")
    for name, r in report.items():
        print(f"\n{name}: {r['cycles']} cycles traced, {100 * r['from_idle_fraction']:.0f} % woke an idle CPU")
        for k in ("interrupt_E_minus_D_us", "wakeup_W_minus_E_us", "switch_S_minus_W_us", "total_S_minus_D_us",
                  "thread_lateness_us"):
            print(f"  {k:<26} p50 {r[k]['p50']:8.1f}  p99 {r[k]['p99']:8.1f}")
        print(f"  CPU idle at expiry: E-D p50 {r['E_minus_D_from_idle_p50_us']:.1f}, S-W p50 "
              f"{r['S_minus_W_from_idle_p50_us']:.1f}, S-D p50/p99 {r['S_minus_D_from_idle_us']['p50']:.1f} / "
              f"{r['S_minus_D_from_idle_us']['p99']:.1f} us")
        print(f"  CPU busy at expiry: E-D p50 {r['E_minus_D_from_busy_p50_us']:.1f}, S-W p50 "
              f"{r['S_minus_W_from_busy_p50_us']:.1f}, S-D p50/p99 {r['S_minus_D_from_busy_us']['p50']:.1f} / "
              f"{r['S_minus_D_from_busy_us']['p99']:.1f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
