"""Measure how late the cycle thread wakes on this machine, against cyclictest, and say whether a task fits (commissioning)."""
from __future__ import annotations

import argparse
import errno
import json
import math
import os
import platform
import sys
import threading
import time
from typing import Any

NAME = "latency-test"
HIST_LE_US = (5, 10, 20, 30, 50, 75, 100, 150, 200, 300, 500, 1000, 2000, 5000, 10_000, 100_000)
"""Upper bounds (us) of the coarse lateness distribution printed with --json (cumulative counts)."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of `edged latency-test`."""
    p.add_argument("--period-us", type=int, default=1000, metavar="US", help="cycle period (100..10000000, default 1000)")
    p.add_argument("--seconds", type=float, default=10.0, help="duration of each run (default 10)")
    p.add_argument("--blocks", type=int, default=0, metavar="N",
                   help="run N blocks per cycle (a realistic mix) instead of an empty cycle")
    p.add_argument("--load", action="store_true", help="burn CPU in a Python thread meanwhile (holds the GIL)")
    p.add_argument("--priority", type=int, default=0, metavar="P", help="SCHED_FIFO priority 1..99 (0: normal)")
    p.add_argument("--cpu", type=int, default=-1, help="pin the cycle thread to this CPU (-1: any)")
    p.add_argument("--mlock", action="store_true", help="lock the process memory (mlockall)")
    p.add_argument("--cpu-dma-latency", type=int, default=-1, metavar="US",
                   help="hold a CPU wake-up latency request (/dev/cpu_dma_latency; 0 keeps idle CPUs polling); "
                        "-1: none (default)")
    p.add_argument("--compare", action="store_true",
                   help="also run cyclictest with the same period, priority, CPU and duration, with and without "
                        "a CPU burner, and give a verdict for --budget-us")
    p.add_argument("--budget-us", type=float, default=None, metavar="US",
                   help="lateness budget of the verdict (default: a tenth of the period)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def _burn(stop: threading.Event) -> None:
    x = 0
    while not stop.is_set():
        for i in range(10_000):
            x += i * i


class _Burner:
    """A Python thread burning CPU and holding the GIL, while the block runs (or nothing when off)."""

    def __init__(self, on: bool) -> None:
        self.stop = threading.Event()
        self.t = threading.Thread(target=_burn, args=(self.stop,), daemon=True) if on else None

    def __enter__(self) -> "_Burner":
        if self.t:
            self.t.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        if self.t:
            self.t.join()


def cycle_thread_faults() -> tuple[int, int] | None:
    """(minor, major) page faults of this process's edged-cycle thread so far (None if there is none, or several)."""
    found = []
    try:
        for tid in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{tid}/comm") as f:
                if f.read().strip() == "edged-cycle":
                    with open(f"/proc/self/task/{tid}/stat") as g:
                        fields = g.read().rsplit(")", 1)[1].split()
                    found.append((int(fields[7]), int(fields[9])))
    except (OSError, ValueError, IndexError):
        return None
    return found[0] if len(found) == 1 else None


def measure(period_us: int, seconds: float, blocks: int = 0, load: bool = False, priority: int = 0,
            cpu: int = -1, mlock: bool = False, budget_us: float | None = None) -> dict[str, Any]:
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
    with _Burner(load):
        thread.start()
        try:
            f0 = cycle_thread_faults()
            time.sleep(seconds)
            f1 = cycle_thread_faults()
        finally:
            thread.stop()
    p50, p99, p999 = thread.quantiles("lateness", [0.5, 0.99, 0.999])
    e50, e99 = thread.quantiles("execution", [0.5, 0.99])
    res = {
        "period_us": period_us, "seconds": seconds, "blocks": blocks, "load": load,
        "cycles": thread.cycles, "overruns": thread.overruns, "skipped": thread.skipped,
        "p50_us": p50 / 1000, "p99_us": p99 / 1000, "p999_us": p999 / 1000,
        "max_us": thread.max_ns("lateness") / 1000,
        "exec_p50_us": e50 / 1000, "exec_p99_us": e99 / 1000, "exec_max_us": thread.max_ns("execution") / 1000,
        "page_faults": ({"minor": f1[0] - f0[0], "major": f1[1] - f0[1]} if f0 and f1 else None),
        "priority": {"requested": priority, "granted": priority > 0 and thread.prio_errno == 0,
                     "error": _err(thread.prio_errno)},
        "affinity": {"requested": cpu, "granted": cpu >= 0 and thread.cpu_errno == 0, "error": _err(thread.cpu_errno)},
        "mlock": {"requested": mlock, "granted": mlock and mlock_rc == 0, "error": _err(mlock_rc)},
    }
    if budget_us is not None:
        counts, total, _ = thread.histogram("lateness", [int(budget_us * 1000)])
        res["over_budget"] = total - counts[0]
    counts, total, _ = thread.histogram("lateness", [le * 1000 for le in HIST_LE_US])
    res["distribution"] = {"le_us": list(HIST_LE_US), "cumulative": counts, "total": total}
    return res


def _err(rc: int) -> str | None:
    return None if rc <= 0 else errno.errorcode.get(rc, str(rc))


def _cyclictest(args: argparse.Namespace, load: bool, held: bool) -> dict[str, Any] | None:
    from edged.control import cyclictest

    with _Burner(load):
        res = cyclictest.run(args.period_us, args.seconds, args.priority, args.cpu, mlock=True,
                             hold_dma_latency=held)
    if res is not None and "hist" in res:
        hist = res.pop("hist")
        res["distribution"] = {"le_us": list(HIST_LE_US), "total": res["n"],
                               "cumulative": [sum(c for us, c in hist if us < le) for le in HIST_LE_US]}
    return res


def machine_facts() -> dict[str, Any]:
    """What the kernel and firmware settings of this machine say about wake-up latency."""
    from edged.control.pmqos import idle_driver, idle_states

    try:
        with open("/proc/cmdline") as f:
            cmdline = f.read().split()
    except OSError:
        cmdline = []
    params = {k: v for k, _, v in (w.partition("=") for w in cmdline)}
    try:
        with open("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor") as f:
            governor = f.read().strip()
    except OSError:
        governor = ""
    rt = os.path.exists("/sys/kernel/realtime") or "PREEMPT_RT" in platform.version()
    return {"kernel": platform.release(), "preempt_rt": rt, "cpus": os.cpu_count(),
            "isolcpus": params.get("isolcpus", ""), "nohz_full": params.get("nohz_full", ""),
            "rcu_nocbs": params.get("rcu_nocbs", ""), "idle_driver": idle_driver(),
            "idle_states": [{"name": n, "exit_latency_us": lat} for n, lat in idle_states()],
            "cpufreq_governor": governor}


def _first_cpu(cpulist: str) -> int | None:
    """The first CPU of a kernel cpu list such as "2-3,6" or "domain,managed_irq,2-3"."""
    for part in cpulist.split(","):
        head = part.split("-")[0]
        if head.isdigit():
            return int(head)
    return None


def suggestions(args: argparse.Namespace, res: dict[str, Any], facts: dict[str, Any]) -> list[str]:
    """Settings that lower lateness on this machine, from what was granted and what the kernel shows."""
    out: list[str] = []
    if args.priority == 0:
        out.append("priority = 80 (SCHED_FIFO): the cycle thread then preempts every normal thread at once")
    elif not res["priority"]["granted"]:
        out.append(f"priority {args.priority} was refused ({res['priority']['error']}): run edged as root or give "
                   f"it CAP_SYS_NICE / LimitRTPRIO=99 (systemd) so that SCHED_FIFO is granted")
    if not args.mlock:
        out.append("mlock = true: no page fault can delay a cycle (systemd: LimitMEMLOCK=infinity)")
    elif not res["mlock"]["granted"]:
        out.append(f"mlock was refused ({res['mlock']['error']}): set LimitMEMLOCK=infinity (systemd) or run as root")
    iso = _first_cpu(facts["isolcpus"]) if facts["isolcpus"] else None
    if iso is not None:
        if args.cpu != iso:
            out.append(f"cpu = {iso}: the kernel isolates it (isolcpus={facts['isolcpus']}"
                       f"{', nohz_full=' + facts['nohz_full'] if facts['nohz_full'] else ''})")
    else:
        if args.cpu < 0 and (facts["cpus"] or 1) > 1:
            out.append(f"cpu = {(facts['cpus'] or 2) - 1}: pin the task to one CPU")
        if (facts["cpus"] or 1) > 1:
            last = (facts["cpus"] or 2) - 1
            out.append(f"isolate a CPU for the task on the kernel command line: isolcpus={last} nohz_full={last} "
                       f"rcu_nocbs={last}, then cpu = {last}")
    deep = [s for s in facts["idle_states"] if s["exit_latency_us"] > 0]
    if deep and args.cpu_dma_latency < 0:
        names = ", ".join(f"{s['name']} ({s['exit_latency_us']} us)" for s in deep)
        out.append(f"cpu_dma_latency_us = 0: idle CPUs enter {names} and pay its exit latency on every wake-up "
                   f"(cyclictest holds this request by default); it costs power, a CPU stays busy polling; "
                   f"system-wide instead: cpupower idle-set -D 0")
    if facts["idle_driver"] == "haltpoll":
        out.append("this is a virtual machine (cpuidle haltpoll): an idle vCPU wakes through the hypervisor"
                   f"{'' if args.cpu_dma_latency >= 0 else '; cpu_dma_latency_us = 0 avoids it'}; "
                   "dedicated (pinned) vCPUs on the host help more")
    elif deep:
        out.append("BIOS: disable deep C-states (C6/C7/package C-states) or choose a performance/low-latency profile")
    if facts["cpufreq_governor"] and facts["cpufreq_governor"] != "performance":
        out.append(f"cpufreq governor is {facts['cpufreq_governor']!r}: 'performance' avoids frequency ramp-up "
                   f"delays (cpupower frequency-set -g performance)")
    if not facts["preempt_rt"]:
        out.append("a PREEMPT_RT kernel bounds the worst case (the max); a standard kernel bounds only the typical case")
    return out


def verdict(res: dict[str, Any], budget_us: float, period_us: int) -> dict[str, Any]:
    """Whether a task of this period keeps within the lateness budget on this machine, in plain words."""
    over = res.get("over_budget", 0)
    cycles = max(1, res["cycles"])
    if res["max_us"] <= budget_us:
        ok, word = True, "yes"
        text = (f"yes: this machine can run a {period_us} us task within a {budget_us:g} us lateness budget "
                f"(worst wake-up {res['max_us']:.1f} us under load, p99.9 {res['p999_us']:.1f} us)")
    elif res["p999_us"] <= budget_us:
        ok, word = False, "mostly"
        text = (f"mostly: {over} of {res['cycles']} cycles ({100 * over / cycles:.3f} %) woke later than "
                f"{budget_us:g} us (worst {res['max_us']:.1f} us); p99.9 {res['p999_us']:.1f} us is within the "
                f"budget. Acceptable only if the process tolerates a rare late cycle")
    else:
        ok, word = False, "no"
        text = (f"no: p99.9 lateness {res['p999_us']:.1f} us under load exceeds the {budget_us:g} us budget "
                f"({over} of {res['cycles']} cycles late); try the suggestions, a longer period or another IPC")
    if res["overruns"]:
        text += f"; {res['overruns']} cycle(s) overran the period"
    return {"ok": ok, "answer": word, "text": text, "budget_us": budget_us, "cycles_over_budget": over}


def compare(args: argparse.Namespace, budget_us: float) -> dict[str, Any]:
    """edged's cycle thread and cyclictest, same settings, each without and with a CPU burner."""
    from edged.control import cyclictest
    from edged.control.pmqos import CpuLatencyRequest

    req = CpuLatencyRequest()
    dma_rc = req.acquire(args.cpu_dma_latency) if args.cpu_dma_latency >= 0 else -1
    held = dma_rc == 0
    try:
        idle = measure(args.period_us, args.seconds, args.blocks, False, args.priority, args.cpu, args.mlock, budget_us)
        loaded = measure(args.period_us, args.seconds, args.blocks, True, args.priority, args.cpu, args.mlock,
                         budget_us)
        ct_idle = _cyclictest(args, False, held)
        ct_loaded = _cyclictest(args, True, held) if ct_idle is not None else None
    finally:
        req.release()
    ratios: dict[str, float | None] = {}
    for key, a, d in (("idle", idle, ct_idle), ("load", loaded, ct_loaded)):
        good = d is not None and "error" not in d and d["p99_us"] > 0
        ratios[f"p99_over_cyclictest_{key}"] = a["p99_us"] / d["p99_us"] if good else None  # type: ignore[index]
    facts = machine_facts()
    return {
        "period_us": args.period_us, "seconds": args.seconds, "blocks": args.blocks,
        "settings": {"priority": args.priority, "cpu": args.cpu, "mlock": args.mlock,
                     "cpu_dma_latency_us": args.cpu_dma_latency,
                     "cpu_dma_latency_held": held, "cpu_dma_latency_error": _err(dma_rc)},
        "edged": {"idle": idle, "load": loaded},
        "cyclictest": ({"installed": False} if ct_idle is None
                       else {"installed": True, "idle": ct_idle, "load": ct_loaded,
                             "held_cpu_dma_latency": held, "note": "same period, priority, CPU, duration; mlock; "
                             "cpu_dma_latency as edged (held only when edged holds it)"}),
        "ratios": ratios,
        "verdict": verdict(loaded, budget_us, args.period_us),
        "machine": facts,
        "suggestions": suggestions(args, loaded, facts),
        "cyclictest_installed": cyclictest.available() is not None,
    }


def _row(name: str, x: dict[str, Any] | None) -> str:
    if x is None:
        return f"  {name:<22} (not run: cyclictest is not installed; apt-get install rt-tests)"
    if "error" in x:
        return f"  {name:<22} (failed: {x['error']})"
    return f"  {name:<22} {x['p50_us']:>9.1f} {x['p99_us']:>9.1f} {x['p999_us']:>9.1f} {x['max_us']:>9.1f}"


def _print_compare(r: dict[str, Any]) -> None:
    s = r["settings"]
    print(f"period {r['period_us']} us, {r['seconds']:g} s per run, {r['blocks']} block(s); priority {s['priority']}, "
          f"cpu {s['cpu']}, mlock {'on' if s['mlock'] else 'off'}, cpu_dma_latency "
          f"{'held at ' + str(s['cpu_dma_latency_us']) + ' us' if s['cpu_dma_latency_held'] else 'not held'}"
          f"{' (refused: ' + str(s['cpu_dma_latency_error']) + ')' if s['cpu_dma_latency_error'] else ''}")
    print(f"  {'lateness (us)':<22} {'p50':>9} {'p99':>9} {'p99.9':>9} {'max':>9}")
    print(_row("edged, idle", r["edged"]["idle"]))
    print(_row("edged, CPU burner", r["edged"]["load"]))
    ct = r["cyclictest"]
    print(_row("cyclictest, idle", ct.get("idle") if ct["installed"] else None))
    print(_row("cyclictest, CPU burner", ct.get("load") if ct["installed"] else None))
    for k, v in r["ratios"].items():
        print(f"  {k} = {'n/a' if v is None else f'{v:.2f}'}")
    print(f"verdict: {r['verdict']['text']}")
    if r["suggestions"]:
        print("suggestions:")
        for line in r["suggestions"]:
            print(f"  - {line}")


def run(args: argparse.Namespace) -> int:
    """Measure and print; exit 2 on bad options."""
    if not 100 <= args.period_us <= 10_000_000:
        print(f"edged latency-test: --period-us: expected 100..10000000, found {args.period_us}", file=sys.stderr)
        return 2
    if not 0 < args.seconds <= 86_400 or args.blocks < 0 or not 0 <= args.priority <= 99:
        print("edged latency-test: expected 0 < --seconds <= 86400, --blocks >= 0 and --priority 0..99", file=sys.stderr)
        return 2
    budget = args.budget_us if args.budget_us is not None else args.period_us / 10
    if not (math.isfinite(budget) and budget > 0) or args.cpu_dma_latency < -1:
        print("edged latency-test: expected --budget-us > 0 and --cpu-dma-latency >= -1", file=sys.stderr)
        return 2
    if args.compare:
        r = compare(args, budget)
        if args.json:
            print(json.dumps(r))
        else:
            _print_compare(r)
        return 0
    from edged.control.pmqos import CpuLatencyRequest

    req = CpuLatencyRequest()
    dma_rc = req.acquire(args.cpu_dma_latency) if args.cpu_dma_latency >= 0 else -1
    try:
        res = measure(args.period_us, args.seconds, args.blocks, args.load, args.priority, args.cpu, args.mlock,
                      budget)
    finally:
        req.release()
    res["cpu_dma_latency"] = {"requested": args.cpu_dma_latency, "granted": dma_rc == 0, "error": _err(dma_rc)}
    res["verdict"] = verdict(res, budget, args.period_us)
    if args.json:
        print(json.dumps(res))
        return 0
    print(f"period {res['period_us']} us, {res['cycles']} cycles in {res['seconds']:g} s, "
          f"{res['blocks']} block(s){', with CPU load' if res['load'] else ''}")
    print(f"lateness: p50 {res['p50_us']:.1f} us  p99 {res['p99_us']:.1f} us  "
          f"p99.9 {res['p999_us']:.1f} us  max {res['max_us']:.1f} us")
    print(f"execution: p50 {res['exec_p50_us']:.1f} us  p99 {res['exec_p99_us']:.1f} us  max {res['exec_max_us']:.1f} us")
    print(f"overruns: {res['overruns']} (skipped cycles {res['skipped']})")
    if res["page_faults"] is not None:
        print(f"page faults of the cycle thread while running: {res['page_faults']['minor']} minor, "
              f"{res['page_faults']['major']} major")
    for what in ("priority", "affinity", "mlock", "cpu_dma_latency"):
        r = res[what]
        if r["requested"] not in (0, -1, False):
            print(f"{what}: {'granted' if r['granted'] else 'refused (' + str(r['error']) + ')'}")
    print(f"verdict: {res['verdict']['text']}")
    return 0
