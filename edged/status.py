"""The status board: a JSON snapshot of devices, cycle tasks, spool, sinks, config and reloads (GET /status),
and the one-line summary sent to systemd as STATUS=."""
from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as dt
import hashlib
import logging
import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import edged
from edged import sdnotify

if TYPE_CHECKING:
    from edged.runtime import Runtime

log = logging.getLogger(__name__)

TICK_S = 1.0  # how often errors, acks and the commit rate are sampled and STATUS= refreshed
UP_STATES = ("up", "degraded")
LATENESS_P = 0.99


def iso(ts: float | None) -> str | None:
    """A wall-clock time as RFC 3339 UTC (None stays None)."""
    if not ts:
        return None
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def file_hash(path: str) -> str:
    """sha256 of a file's bytes ("" when it cannot be read)."""
    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except OSError:
        return ""


@dataclass(slots=True)
class ReloadRecord:
    """The outcome of the last reload, for /status and metrics."""

    count: int = 0
    failures: int = 0
    result: str = ""           # "ok", "unchanged" or "failed" ("" before the first reload)
    at: float = 0.0            # wall-clock time
    errors: list[str] = field(default_factory=list)
    changes: dict[str, list[str]] = field(default_factory=dict)


class ReloadCollector:
    """Reload metrics: attempts, failures, and the last reload's result and time."""

    def __init__(self, board: "StatusBoard") -> None:
        self.board = board

    def collect(self) -> Any:
        """Yield the reload metric families (at scrape time)."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        r = self.board.reload
        yield CounterMetricFamily("edged_config_reloads", "Config reloads asked for (SIGHUP, systemctl reload, "
                                                          "edged reload).", value=r.count)
        yield CounterMetricFamily("edged_config_reload_failures", "Reloads refused because the new config is "
                                                                  "invalid (the old one keeps running).",
                                  value=r.failures)
        yield GaugeMetricFamily("edged_config_last_reload_success", "1 when the last reload was applied (or there "
                                                                    "was none), 0 when it failed.",
                                value=0.0 if r.result == "failed" else 1.0)
        yield GaugeMetricFamily("edged_config_last_reload_timestamp_seconds", "Unix time of the last reload "
                                                                              "(0: none yet).", value=r.at)
        yield GaugeMetricFamily("edged_config_loaded_timestamp_seconds", "Unix time the running config was loaded.",
                                value=self.board.config_loaded_at)


class StatusBoard:
    """Collects what the daemon is doing; snapshot() runs on the event loop, the HTTP thread asks for it."""

    def __init__(self, runtime: "Runtime") -> None:
        self.rt = runtime
        self.started = time.time()
        try:
            self.loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            self.loop = None
        self.reload = ReloadRecord()
        self.config_loaded(runtime.cell.file)
        self._errors: dict[str, tuple[str, float]] = {}    # device -> (last error, first seen)
        self._acks: dict[str, tuple[int, float]] = {}      # sink -> (acked total, time it last grew)
        self._appended: tuple[int, float] | None = None
        self.commit_rate = 0.0
        self._summary = ""
        runtime.registry.register(ReloadCollector(self))

    def config_loaded(self, path: str) -> None:
        """Record the config file, its hash and the load time (at start and after each applied reload)."""
        self.config_file = os.path.abspath(path) if os.path.exists(path) else path
        self.config_hash = file_hash(path)
        self.config_loaded_at = time.time()

    # -- sampling ---------------------------------------------------------------------------
    def tick(self) -> None:
        """Sample error changes, ack progress and the spool commit rate; send STATUS= when the summary changed."""
        now = time.time()
        for name, runner in self.rt.runners.items():
            err = runner.last_error
            if err and self._errors.get(name, ("", 0.0))[0] != err:
                self._errors[name] = (err, now)
        spool = self.rt.spool
        if spool is not None:
            st = spool.stats()
            for sink, total in st.acked_total.items():
                old = self._acks.get(sink)
                if old is None or total > old[0]:
                    self._acks[sink] = (total, now if old is not None or total else 0.0)
            if self._appended is not None and now > self._appended[1]:
                self.commit_rate = (st.appended_total - self._appended[0]) / (now - self._appended[1])
            self._appended = (st.appended_total, now)
        line = self.summary()
        if line != self._summary:
            self._summary = line
            sdnotify.notify(f"STATUS={line}")

    async def run(self) -> None:
        """Tick until cancelled."""
        self.loop = asyncio.get_running_loop()
        while True:
            self.tick()
            await asyncio.sleep(TICK_S)

    def summary(self) -> str:
        """One line for systemd: ``3/4 devices up, spool 0, mqtt connected``."""
        runners = self.rt.runners
        up = sum(r.state.value in UP_STATES for r in runners.values())
        parts = [f"{up}/{len(runners)} devices up"]
        if self.rt.spool is not None:
            parts.append(f"spool {self.rt.spool.stats().depth_samples}")
        parts += [f"{s.name} {_sink_state(s)}" for s in self.rt.sinks]
        if self.reload.result == "failed":
            parts.append("last reload failed")
        return ", ".join(parts)

    # -- the snapshot ---------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """Everything /status shows (call on the event loop thread)."""
        rt = self.rt
        now = time.time()
        loop_now = asyncio.get_running_loop().time() if self.loop is None else self.loop.time()
        out: dict[str, Any] = {
            "cell": rt.cell.name, "version": edged.__version__, "pid": os.getpid(), "time": iso(now),
            "uptime_s": round(now - self.started, 3), "summary": self.summary(),
            "config": {"file": self.config_file, "sha256": self.config_hash, "loaded_at": iso(self.config_loaded_at)},
            "reload": {"count": self.reload.count, "failures": self.reload.failures,
                       "last_result": self.reload.result or None, "last_at": iso(self.reload.at),
                       "errors": self.reload.errors, "changes": self.reload.changes},
        }
        devices = {}
        for name, r in rt.runners.items():
            st = r.driver.stats
            last_done = max([g.last_done for g in r.groups] + ([max(r.push_sink.seen.values(), default=0.0)]
                                                                 if r.push_sink is not None else []), default=0.0)
            err, err_at = self._errors.get(name, (r.last_error, 0.0))
            try:
                facts = r.driver.status()
            except Exception as exc:  # a driver's status() must never break /status
                facts = {"error": repr(exc)}
            devices[name] = {
                "driver": r.device.spec.driver, "state": r.state.value, "since": iso(r.state_since),
                "last_error": err or None, "last_error_at": iso(err_at) if err else None,
                "last_good_read": iso(now - (loop_now - last_done)) if last_done else None,
                "tags": len(r.device.tags), "connects": r.connects,
                "units": dict(st.unit_state), "driver_status": facts,
                "scans": {g.name: {"interval_s": g.interval_s, "scans": g.scans, "overruns": g.overruns}
                          for g in r.groups},
            }
        out["devices"] = devices
        out["cycle_tasks"] = self._cycle_tasks()
        spool = rt.spool
        if spool is not None:
            st = spool.stats()
            out["spool"] = {"depth_samples": st.depth_samples, "depth_bytes": st.depth_bytes,
                            "oldest_age_s": round(st.oldest_age_s, 3), "commit_rate_per_s": round(self.commit_rate, 1),
                            "dropped_total": st.dropped_total}
            lag = st.lag_samples
        else:
            out["spool"] = None
            lag = {}
        out["sinks"] = {s.name: {"type": type(s).__name__, "state": _sink_state(s), "lag_samples": lag.get(s.name),
                                 "last_ack": iso(self._acks.get(s.name, (0, 0.0))[1])} for s in rt.sinks}
        return out

    def _cycle_tasks(self) -> dict[str, Any]:
        plane = self.rt.control
        if plane is None:
            return {}
        out = {}
        for run in getattr(plane, "tasks", []):
            th, spec = run.thread, run.spec
            out[spec.name] = {"period_s": spec.period_us / 1e6, "cycles": th.cycles, "overruns": th.overruns,
                              "skipped": th.skipped, "running": bool(th.running),
                              "lateness_p99_s": _lateness_p99(th)}
        return out

    def snapshot_threadsafe(self, timeout_s: float = 2.0) -> dict[str, Any]:
        """The snapshot, computed on the event loop from another thread (the HTTP server's).

        Raises TimeoutError when the loop does not answer in time (it is blocked: the watchdog will fire).
        """
        loop = self.loop
        if loop is None or loop.is_closed():
            raise TimeoutError("the event loop is not running")
        fut: concurrent.futures.Future[dict[str, Any]] = concurrent.futures.Future()

        def compute() -> None:
            try:
                fut.set_result(self.snapshot())
            except BaseException as exc:  # reported to the HTTP thread as a 500
                fut.set_exception(exc)

        loop.call_soon_threadsafe(compute)
        try:
            return fut.result(timeout_s)
        except concurrent.futures.TimeoutError:
            raise TimeoutError(f"the event loop did not answer within {timeout_s:.0f} s") from None


def _sink_state(sink: Any) -> str:
    """connected / disconnected for sinks with a connection, "ready" for local ones (JSON lines file)."""
    ev = getattr(sink, "connected", None)
    if ev is None:
        return "ready"
    is_set = getattr(ev, "is_set", None)
    return "connected" if (is_set() if is_set else bool(ev)) else "disconnected"


def _lateness_p99(thread: Any) -> float | str | None:
    """The 99th percentile of a cycle thread's lateness (upper bound of its histogram bucket), in seconds."""
    from edged.control.metrics import LATENESS_BUCKETS_S

    try:
        counts, total, _ = thread.histogram("lateness", [round(b * 1e9) for b in LATENESS_BUCKETS_S])
    except Exception:
        return None
    if not total:
        return None
    need = LATENESS_P * total
    for bound, c in zip(LATENESS_BUCKETS_S, counts):
        if c >= need:
            return bound
    return "+Inf"  # beyond the last bucket (JSON has no infinity)
