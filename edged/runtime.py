"""Runtime: owns devices, scan groups, the control plane, the spool, the sinks and metrics; start-up and shutdown order."""
from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry

from edged import sdnotify
from edged.cell import Cell
from edged.change import ChangeFilter
from edged.device import DeviceRunner, DeviceState
from edged.echo import echo, message, token
from edged.errors import DeviceUnavailable, ReadFailed, WriteFailed, WriteRefused
from edged.metrics import RuntimeCollector, poll_histogram, serve
from edged.sinks.base import SinkContext, WriteResult
from edged.status import StatusBoard
from edged.tag import Reading, Sample
from edged.writes import check_write

log = logging.getLogger(__name__)


@dataclass(slots=True)
class RuntimeStats:
    """Counters of the acquisition pipeline."""

    values: int = 0
    samples: int = 0
    tasks: int = 0  # asyncio tasks alive at the last count
    writes_refused: dict[str, int] = field(default_factory=dict)


class Runtime:
    """The daemon: start() brings everything up in order, stop() takes it down without losing accepted data."""

    def __init__(self, cell: Cell, *, registry: CollectorRegistry | None = None, serve_metrics: bool = True,
                 read_only: bool = False) -> None:
        self.cell = cell
        self.read_only = read_only  # no write reaches any device, and no control task runs
        self.registry = registry or CollectorRegistry()
        self.stats = RuntimeStats()
        self.current: dict[str, tuple[Any, int, int]] = {}
        slots = max((t.slot for t in cell.tags.values()), default=-1) + 1
        # spare slots for tags a reload adds (a reload needing more is refused: restart needed)
        self.slot_capacity = slots + max(SPARE_SLOTS_MIN, slots)
        self.filter = ChangeFilter(self.slot_capacity, heartbeat_s=cell.heartbeat_s)
        self._serve_metrics = serve_metrics and cell.metrics.enabled
        self.drain_s = 2.0
        self._metrics_server: Any = None
        self._tasks: list[asyncio.Task] = []
        self._sink_tasks: list[asyncio.Task] = []
        self.sinks: list[Any] = []
        self.spool: Any = None
        self._pending: list[Sample] = []
        self.control: Any = None
        self.metrics_url = ""
        self.status: StatusBoard | None = None
        self.reloader: Any = None
        self._status_task: asyncio.Task | None = None
        self.poll_hist = poll_histogram(self.registry)
        index = _group_index(cell)
        self.machines: dict[str, Any] = {}  # device -> its MachineTracker (normalized state, time in state)
        self.runners: dict[str, DeviceRunner] = {name: self._make_runner(dev, index) for name, dev in cell.devices.items()}
        self.registry.register(RuntimeCollector(self))

    def _make_runner(self, device: Any, index: dict[tuple[str, str], tuple[int, int]]) -> DeviceRunner:
        """A device's runner, with its machine tracker (at start and for a device a reload adds or restarts)."""
        from edged.machine_state import attach

        runner = DeviceRunner(device, self.cell.scans, self.accept, self.poll_hist, index, self.current)
        tracker = attach(runner)
        machines = {k: v for k, v in self.machines.items() if k != device.spec.name}
        if tracker is not None:
            machines[device.spec.name] = tracker
        self.machines = machines  # a new dict: a scrape may be iterating the old one
        return runner

    # -- the acquisition pipeline -------------------------------------------------------
    def accept(self, readings: list[Reading]) -> None:
        """Take a batch of readings from a driver: current values, control inputs, report by exception, spool."""
        if not readings:
            return
        self.stats.values += len(readings)
        if self.control is not None:
            self.control.update(readings)
        samples = self.filter.filter(readings, self.current)  # also updates the current value table
        if samples:
            self.append(samples)

    def append(self, samples: list[Sample]) -> None:
        """Queue samples for the spool (the only way data reaches sinks).

        Samples produced in one turn of the event loop (scans of several devices, control outputs)
        go to the spool in one append: an in-memory hand-over to the spool's writer thread, which
        commits (and fsyncs) at most every ``commit_interval_ms``; acquisition never waits for the disk.
        """
        self.stats.samples += len(samples)
        if self.spool is None:
            return
        if not self._pending:
            asyncio.get_running_loop().call_soon(self._flush)
        self._pending.extend(samples)

    def _flush(self) -> None:
        """Append what this loop turn produced to the spool."""
        pending, self._pending = self._pending, []
        if pending and self.spool is not None:
            self.spool.append(pending)

    # -- writes ---------------------------------------------------------------------------
    async def write(self, key: str, value: Any, source: str = "cli") -> WriteResult:
        """Validate and write a value to a tag through its driver; refusals are counted and explained."""
        tag = self.cell.tags.get(key)
        if tag is None:
            return self._refuse("unknown_tag", key, f"{echo(key)}: no such tag", source)
        if self.read_only:
            return self._refuse("read_only_mode", key, f"{key}: edged runs read-only (--read-only)", source)
        try:
            checked = check_write(tag, value)
        except WriteRefused as exc:
            reason = "read_only" if not tag.writable else "invalid_value"
            return self._refuse(reason, key, str(exc), source)
        runner = self.runners.get(tag.device)  # None for a moment while a reload restarts the device
        if runner is None:
            return self._refuse("device_down", key, f"{key}: device {tag.device} is restarting (reload)", source)
        if runner.state not in (DeviceState.UP, DeviceState.DEGRADED):
            return self._refuse("device_down", key, f"{key}: device {tag.device} is {runner.state.value}", source)
        old = self.current.get(key, (None, 0, 0))[0]
        try:
            await runner.driver.write(tag, checked)
        except (DeviceUnavailable, WriteFailed, ReadFailed, OSError, asyncio.TimeoutError) as exc:
            log.warning("write %s = %s from %s failed: %s", key, echo(checked), token(source), message(str(exc)))
            return WriteResult(False, key, checked, old, f"{key}: write failed: {message(str(exc))}")
        # Writes from people and upstream systems are audited; a control task's outputs (a PID may write
        # every cycle) are counted in edged_control_writes_total and logged only at debug level.
        log.log(logging.DEBUG if source == "control" else logging.INFO, "audit: write %s from %s: %s -> %s", key,
                token(source), echo(old), echo(checked))
        return WriteResult(True, key, checked, old)

    async def write_tag(self, tag: Any, value: Any) -> None:
        """Write callback for the control plane: raises on refusal or failure."""
        res = await self.write(tag.key, value, source="control")
        if not res.ok:
            raise WriteRefused(res.error)

    def _refuse(self, reason: str, key: str, message: str, source: str) -> WriteResult:
        self.stats.writes_refused[reason] = self.stats.writes_refused.get(reason, 0) + 1
        log.warning("audit: write refused (%s) from %s: %s", reason, token(source), message)
        return WriteResult(False, key, error=message)

    # -- reload: devices added, removed or restarted while the others keep running ------------------
    def add_device(self, device: Any) -> DeviceRunner:
        """Start a runner for a device of the (new) cell, supervised as task ``device:<name>``."""
        name = device.spec.name
        runner = self._make_runner(device, _group_index(self.cell))
        self.runners = {**self.runners, name: runner}  # a new dict: a scrape may be iterating the old one
        self._tasks.append(asyncio.create_task(_supervise(runner.run, f"device {name}"), name=f"device:{name}"))
        return runner

    async def remove_device(self, name: str) -> None:
        """Stop a device's runner and close its driver; its poll histogram series go too."""
        runner = self.runners[name]
        tasks = [t for t in self._tasks if t.get_name() == f"device:{name}"]
        self._tasks = [t for t in self._tasks if t not in tasks]
        await _cancel_all(tasks, "device")
        await runner.stop()
        self.runners = {k: v for k, v in self.runners.items() if k != name}
        self.machines = {k: v for k, v in self.machines.items() if k != name}
        for g in runner.groups:
            try:
                self.poll_hist.remove(name, g.name)
            except KeyError:
                pass

    # -- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        """Bring up spool, sinks, metrics, control and devices, in that order."""
        from edged.sinks.config import build_sink
        from edged.spool.metrics import register_spool_metrics
        from edged.spool.spool import Spool

        cell = self.cell
        _quiet_unretrieved_connection_errors(asyncio.get_running_loop())
        self._listen_for_reload()
        cell.state_dir.mkdir(parents=True, exist_ok=True)
        self.spool = Spool.open(cell.state_dir / "spool", cell.spool, [s.name for s in cell.sinks])
        register_spool_metrics(self.spool, self.registry)
        ctx = SinkContext(cell_name=cell.name, tags=cell.tags, write=self.write, registry=self.registry,
                          state_dir=cell.state_dir, current_values=lambda: dict(self.current))
        self.sinks = [build_sink(spec, self.spool, ctx) for spec in cell.sinks]
        for sink in self.sinks:
            self._sink_tasks.append(asyncio.create_task(_supervise(sink.run, f"sink {sink.name}"),
                                                        name=f"sink:{sink.name}"))
        self.status = StatusBoard(self)
        self._status_task = asyncio.create_task(self.status.run(), name="status")
        if self._serve_metrics:
            try:
                self._metrics_server = serve(self.registry, cell.metrics.host, cell.metrics.port, spec=cell.metrics,
                                             status=self.status.snapshot_threadsafe)
            except OSError as exc:
                raise OSError(exc.errno, f"metrics listen {cell.metrics.host}:{cell.metrics.port}: "
                                         f"{exc.strerror or exc}") from None
            port = self._metrics_server[0].server_port if hasattr(self._metrics_server[0], "server_port") \
                else cell.metrics.port
            host = cell.metrics.host if ":" not in cell.metrics.host else f"[{cell.metrics.host}]"
            self.metrics_url = f"{'https' if cell.metrics.tls_cert else 'http'}://{host}:{port}/metrics"
        if cell.control is not None and self.read_only:
            log.warning("read-only: the cell's control tasks do not run and no write reaches a device")
        elif cell.control is not None:
            from edged.control import ControlPlane

            self.control = ControlPlane(cell.control, cell.tags, self.registry, state_dir=cell.state_dir)
            self.control.start(asyncio.get_running_loop(), self.append, self.write_tag)
        for name, runner in self.runners.items():
            self._tasks.append(asyncio.create_task(_supervise(runner.run, f"device {name}"), name=f"device:{name}"))
        self._tasks.append(asyncio.create_task(self._count_tasks(), name="count-tasks"))
        log.info("cell %s running: %d device(s), %d tag(s), %d sink(s)%s", cell.name, len(self.runners),
                 len(cell.tags), len(self.sinks), f", metrics on {self.metrics_url}" if self.metrics_url else "")
        if self.reloader is not None:
            self.reloader.ready.set()

    def _listen_for_reload(self) -> None:
        """SIGHUP reloads the cell file (edged.reload); the file is read now as the baseline of the next reload."""
        from edged.reload import Reloader

        self.reloader = Reloader(self)
        try:
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self.reloader.request)
        except (ValueError, RuntimeError):  # not the main thread (an embedding); reload() can still be called
            pass

    async def _count_tasks(self, every_s: float = 5.0) -> None:
        """Keep the number of asyncio tasks for the metrics (a leak shows as a rising edged_asyncio_tasks)."""
        while True:
            self.stats.tasks = len(asyncio.all_tasks())
            await asyncio.sleep(every_s)

    async def stop(self) -> None:
        """Stop control, then scans, then drivers and sinks, then the spool (it keeps what sinks did not ack).

        Control stops first (its safe values are written while the devices are still connected and
        scanned), then scans (no new data); then the drivers close and the sinks get a moment to forward.
        """
        if self.reloader is not None:
            try:
                asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
            except (ValueError, RuntimeError):
                pass
            await self.reloader.close()
        if self._status_task is not None:
            self._status_task.cancel()
        if self.control is not None:
            await self.control.stop()
        await _cancel_all(self._tasks, "device")
        await asyncio.gather(*(r.stop() for r in self.runners.values()), return_exceptions=True)
        self._flush()
        await self._drain(self.drain_s)
        await _cancel_all(self._sink_tasks, "sink")
        try:
            async with asyncio.timeout(STOP_TIMEOUT_S):
                await asyncio.gather(*(s.close() for s in self.sinks), return_exceptions=True)
        except TimeoutError:
            log.error("sinks did not close within %.0f s; stopping anyway (their data stays in the spool)",
                      STOP_TIMEOUT_S)
        if self.spool is not None:
            self._flush()
            self.spool.close()
            self.spool = None
        if self._metrics_server is not None:
            server, thread = self._metrics_server
            server.shutdown()
            server.server_close()
            self._metrics_server = None

    async def _drain(self, timeout_s: float) -> None:
        """Give sinks a moment to forward what is spooled (what they do not forward stays in the spool)."""
        if self.spool is None or not self._sink_tasks:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while loop.time() < deadline:
            if not any(self.spool.stats().lag_samples.values()):
                return
            await asyncio.sleep(0.02)

    async def run_forever(self) -> None:
        """start(), tell systemd we are ready, feed its watchdog, and stop() on SIGTERM/SIGINT."""
        loop = asyncio.get_running_loop()
        stopping = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stopping.set)
        try:
            await self.start()
        except BaseException:
            await self.stop()  # a partial start-up (spool open, sinks running) is taken down in order
            raise
        sdnotify.notify(f"READY=1\nSTATUS=running cell {self.cell.name}")
        wd = sdnotify.watchdog_interval_s()
        watchdog = asyncio.create_task(self._watchdog(wd)) if wd else None
        try:
            await stopping.wait()
        finally:
            sdnotify.notify("STOPPING=1")
            if watchdog:
                watchdog.cancel()
            log.info("stopping cell %s", self.cell.name)
            await self.stop()

    async def _watchdog(self, interval_s: float) -> None:
        while True:
            sdnotify.notify("WATCHDOG=1")
            await asyncio.sleep(interval_s)


STOP_TIMEOUT_S = 5.0
SPARE_SLOTS_MIN = 256  # tag slots reserved for reloads that add tags


def _quiet_unretrieved_connection_errors(loop: asyncio.AbstractEventLoop) -> None:
    """Log "Future exception was never retrieved" for connection errors at debug level.

    Device libraries (pymodbus) leave futures failed with a connection error behind when a device
    drops mid-request; the loss is already counted and logged once by the DeviceRunner, so asyncio's
    default report (a traceback on stderr) would only be noise. Everything else keeps the default.
    """
    previous = loop.get_exception_handler()

    def handler(lp: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if "never retrieved" in context.get("message", "") and exc is not None and (
                isinstance(exc, (ConnectionError, OSError, TimeoutError))
                or type(exc).__name__ in ("ConnectionException", "ModbusIOException")):
            log.debug("unretrieved connection error in a device library: %r", exc)
            return
        if previous is not None:
            previous(lp, context)
        else:
            lp.default_exception_handler(context)

    loop.set_exception_handler(handler)
RESTART_DELAY_S = (1.0, 30.0)


async def _supervise(run: Any, what: str) -> None:
    """Run a long-lived coroutine function; if it fails (a bug, never an expected upstream or device error),
    log it with its traceback and start it again after a growing delay, so one failure never stops the daemon."""
    delay = RESTART_DELAY_S[0]
    while True:
        try:
            await run()
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s failed; restarting it in %.0f s", what, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RESTART_DELAY_S[1])


async def _cancel_all(tasks: list[asyncio.Task], what: str) -> None:
    """Cancel tasks and wait for them, re-cancelling any that swallowed a cancellation (3.11's wait_for can).

    Never hangs shutdown: a task still running after the timeout is logged and left behind.
    """
    pending = {t for t in tasks if not t.done()}
    for attempt in range(3):
        if not pending:
            break
        for t in pending:
            t.cancel()
        _, pending = await asyncio.wait(pending, timeout=STOP_TIMEOUT_S / 3)
    for t in pending:
        log.error("%s task %s did not stop within %.0f s", what, t.get_name(), STOP_TIMEOUT_S)
    for t in tasks:
        if t.done() and not t.cancelled() and t.exception() is not None:
            log.error("%s task %s had failed: %r", what, t.get_name(), t.exception())


def _group_index(cell: Cell) -> dict[tuple[str, str], tuple[int, int]]:
    """Index of each (device, scan group) among all groups of the same interval, to spread their phases."""
    by_interval: dict[float, list[tuple[str, str]]] = {}
    for dname, dev in cell.devices.items():
        for g in sorted({t.scan for t in dev.tags}):
            by_interval.setdefault(cell.scans[g].interval_s, []).append((dname, g))
    out: dict[tuple[str, str], tuple[int, int]] = {}
    for members in by_interval.values():
        for i, m in enumerate(members):
            out[m] = (i, len(members))
    return out

