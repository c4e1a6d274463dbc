"""The ControlPlane: the runtime's one handle on control (process image, cycle threads, sample ring, output writes)."""
from __future__ import annotations

import asyncio
import errno as errno_mod
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable

from prometheus_client import CollectorRegistry

from edged.control.blocks_catalog import BOOL, INT
from edged.control.config import ControlSpec, TaskSpec
from edged.control.graph import Layout, compile_task
from edged.tag import DataType, Quality, Reading, Sample, Tag

log = logging.getLogger(__name__)

RETRY_S = 1.0          # a failed output write is retried after this long, doubling ...
RETRY_MAX_S = 30.0     # ... up to this
START_DELAY_PERIODS = 2
SAFE_WRITE_TIMEOUT_S = 3.0   # a clean stop waits at most this long for the safe-value writes of a task


@dataclass(slots=True)
class OutputState:
    """Write-back bookkeeping of one output bound to a tag."""

    tag: Tag
    pin: str
    safe: float | None = None    # the output's configured safe value, written at a clean stop
    written: Any = None          # last value the device accepted
    has_written: bool = False
    inflight: bool = False
    failing: bool = False
    writes: int = 0
    failures: int = 0
    retry_at: float = 0.0        # loop time before which a failing output is not written again
    backoff: float = RETRY_S


@dataclass(slots=True)
class TaskRun:
    """One running cycle task: its compiled program, output image, ring, thread and output states."""

    spec: TaskSpec
    layout: Layout
    program: Any
    outputs: Any
    ring: Any
    thread: Any
    out_states: list[OutputState] = field(default_factory=list)
    samples: int = 0
    retain: Any = None            # RetainStore when the task has retained blocks and a state folder


def lock_process_memory() -> int:
    """mlockall(MCL_CURRENT | MCL_FUTURE) if it is safe: 0 when locked, else an errno.

    With a finite RLIMIT_MEMLOCK and no privilege, a lock that succeeds now would make every later
    allocation beyond the limit fail, so it is refused up front (EPERM); systemd's
    ``LimitMEMLOCK=infinity`` lifts the limit.
    """
    import resource

    from edged.cext.control import lock_memory

    soft, _hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    if soft != resource.RLIM_INFINITY and os.geteuid() != 0:
        return errno_mod.EPERM
    return lock_memory()


def _errno_name(code: int) -> str:
    return errno_mod.errorcode.get(code, str(code))


def _to_python(kind: str, value: float) -> Any:
    """A workspace double as the Python value a sample carries."""
    if kind == BOOL:
        return value != 0.0
    if kind == INT and math.isfinite(value):
        return int(value)
    return value


def output_value(tag: Tag, value: float) -> Any:
    """A block output converted to the tag's engineering type (bool, rounded integer or float); None if not finite."""
    if not math.isfinite(value):
        return None
    if tag.dtype is DataType.BOOL:
        return value != 0.0
    if tag.dtype.is_integer and not tag.scaled:
        return int(round(value))
    return float(value)


def _load_retained(ts: TaskSpec, lay: Layout, prog: Any, state_dir: Path | None) -> Any:
    """Load a task's retained blocks into its program (before it runs); the task's RetainStore or None."""
    if not lay.retain:
        return None
    if state_dir is None:
        log.warning("control task %s: retain = true needs the cell's state folder; its blocks start cold", ts.name)
        return None
    from edged.control.retain import RetainStore

    store = RetainStore(state_dir, ts.name, lay.retain_names, lay.retain_types)
    loaded = store.load()
    for k, rec in enumerate(loaded):
        if rec is not None:
            prog.restore(k, rec[0], rec[1])
    n = sum(1 for r in loaded if r is not None)
    if n:
        log.info("control task %s: restored the retained state of %d block(s) from %s", ts.name, n, store.path)
    return store


class ControlPlane:
    """Owns the ProcessImage, the CycleThreads and the sample ring; the runtime's only handle on control."""

    def __init__(self, spec: ControlSpec, tags: dict[str, Tag], registry: CollectorRegistry,
                 state_dir: Path | None = None) -> None:
        from edged.cext.control import CycleThread, ProcessImage, SampleRing
        from edged.control.pmqos import CpuLatencyRequest

        self.spec = spec
        self.tags = tags
        self.image = ProcessImage(max((t.slot for t in tags.values()), default=-1) + 1)
        self._fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.tasks: list[TaskRun] = []
        self._used_slots: set[int] = set()
        try:
            for ts in spec.tasks:
                lay = compile_task(ts)
                prog = lay.program()
                out = ProcessImage(len(lay.outputs))
                ring = SampleRing(ts.ring_size, self._fd)
                thread = CycleThread(prog, self.image, out, ring, ts.period_us * 1000, ts.priority, ts.cpu,
                                     ts.overrun)
                run = TaskRun(ts, lay, prog, out, ring, thread,
                              [OutputState(tag, pin, safe)
                               for tag, pin, safe in zip(lay.out_tags, lay.out_pins, lay.out_safe)])
                run.retain = _load_retained(ts, lay, prog, state_dir)
                self.tasks.append(run)
                self._used_slots.update(slot for slot, _ in lay.tag_inputs)
        except BaseException:
            os.close(self._fd)
            raise
        self.mlock_requested = any(t.mlock for t in spec.tasks)
        self.mlock_errno = -1
        lats = [t.cpu_dma_latency_us for t in spec.tasks if t.cpu_dma_latency_us >= 0]
        self.dma_latency_us = min(lats) if lats else -1
        self.dma_latency_errno = -1
        self._pmqos = CpuLatencyRequest()
        self._retain_task: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._on_samples: Callable[[list[Sample]], None] | None = None
        self._write: Callable[[Tag, Any], Awaitable[None]] | None = None
        self._sync_task: asyncio.Task | None = None
        self._writes: set[asyncio.Task] = set()
        self._started = False
        self._stopped = False
        from edged.control.metrics import ControlCollector

        registry.register(ControlCollector(self))

    # -- lifecycle ------------------------------------------------------------------------
    def start(self, loop: asyncio.AbstractEventLoop, on_samples: Callable[[list[Sample]], None],
              write: Callable[[Tag, Any], Awaitable[None]]) -> None:
        """Start the cycle threads (aligned on one time base) and the ring reader on the event loop."""
        from edged.cext.control import monotonic_ns

        if self._started:
            raise RuntimeError("ControlPlane.start() is called once")
        self._started = True
        self._loop, self._on_samples, self._write = loop, on_samples, write
        if self.mlock_requested:
            self.mlock_errno = lock_process_memory()
            if self.mlock_errno:
                log.warning("control: mlockall refused (%s; a finite RLIMIT_MEMLOCK needs LimitMEMLOCK=infinity); "
                            "running without locked memory", _errno_name(self.mlock_errno))
        if self.dma_latency_us >= 0:
            self.dma_latency_errno = self._pmqos.acquire(self.dma_latency_us)
            if self.dma_latency_errno:
                log.warning("control: CPU wake-up latency request of %d us refused (%s on /dev/cpu_dma_latency; "
                            "needs root or write access); idle CPUs may wake late", self.dma_latency_us,
                            _errno_name(self.dma_latency_errno))
            else:
                log.info("control: holding a CPU wake-up latency request of %d us (/dev/cpu_dma_latency)",
                         self.dma_latency_us)
        loop.add_reader(self._fd, self._on_wake)
        base = self.spec.base_period_us * 1000
        t0 = (monotonic_ns() // base + START_DELAY_PERIODS) * base
        t0 = max(t0, monotonic_ns() + 1_000_000)
        for run in self.tasks:
            run.thread.start(t0)
            ts = run.spec
            if ts.priority and run.thread.prio_errno:
                log.warning("control task %s: SCHED_FIFO priority %d refused (%s); running with normal "
                            "scheduling", ts.name, ts.priority, _errno_name(run.thread.prio_errno))
            if ts.cpu >= 0 and run.thread.cpu_errno:
                log.warning("control task %s: affinity to CPU %d refused (%s); running on any CPU",
                            ts.name, ts.cpu, _errno_name(run.thread.cpu_errno))
            log.info("control task %s: %d block(s) every %g ms", ts.name, len(ts.blocks), ts.period_us / 1000)
        self._sync_task = loop.create_task(self._sync_loop(), name="control:outputs")
        if any(r.retain is not None for r in self.tasks):
            self._retain_task = loop.create_task(self._retain_loop(), name="control:retain")

    async def stop(self, safe_outputs: bool = True) -> None:
        """Stop the cycle threads, deliver the samples left in the rings, finish in-flight writes, save
        retained state, then write every output's safe value (bounded by SAFE_WRITE_TIMEOUT_S)."""
        if self._stopped:
            return
        self._stopped = True
        if not self._started:
            os.close(self._fd)
            return
        for t in (self._sync_task, self._retain_task):
            if t is not None:
                t.cancel()
                await asyncio.gather(t, return_exceptions=True)
        for run in self.tasks:
            await asyncio.to_thread(run.thread.stop)
        self._pmqos.release()
        if self._loop is not None:
            self._loop.remove_reader(self._fd)
        self._drain()
        if self._writes:
            await asyncio.wait(list(self._writes), timeout=5.0)
        for run in self.tasks:
            self._save_retained(run)
        if safe_outputs:
            await asyncio.gather(*(self.write_safe_outputs(run) for run in self.tasks))
        os.close(self._fd)

    async def remove_task(self, name: str) -> None:
        """Take one task out of a running plane (a reload that removes it): stop its thread, deliver its
        samples, save its retained state, and write its outputs' safe values before it is forgotten."""
        run = next((r for r in self.tasks if r.spec.name == name), None)
        if run is None:
            raise KeyError(f"no control task {name!r}")
        await asyncio.to_thread(run.thread.stop)
        self._drain()
        mine = [t for t in self._writes if t.get_name().startswith(f"control:write:{name}:")]
        if mine:
            await asyncio.wait(mine, timeout=5.0)
        self.tasks.remove(run)
        self._used_slots = {slot for r in self.tasks for slot, _ in r.layout.tag_inputs}
        self._save_retained(run)
        await self.write_safe_outputs(run)

    async def write_safe_outputs(self, run: TaskRun, timeout_s: float | None = None) -> int:
        """Write the safe value of every output of a stopped task that has one; each write is logged.

        Returns the number of outputs the device accepted. All writes run at once and are bounded by
        timeout_s together: a device that does not answer cannot hold up shutdown.
        """
        timeout_s = SAFE_WRITE_TIMEOUT_S if timeout_s is None else timeout_s
        todo = [(st, output_value(st.tag, st.safe)) for st in run.out_states if st.safe is not None]
        if not todo or self._write is None:
            return 0
        name = run.spec.name

        async def one(st: OutputState, value: Any) -> bool:
            try:
                await self._write(st.tag, value)  # type: ignore[misc]
            except asyncio.CancelledError:
                log.error("control task %s: stop: safe value %s = %r not written within %.1f s", name, st.tag.key,
                          value, timeout_s)
                raise
            except Exception as exc:
                log.error("control task %s: stop: writing safe value %s = %r failed: %s", name, st.tag.key, value, exc)
                return False
            st.writes += 1
            st.written, st.has_written = value, True
            log.info("control task %s: stop: wrote safe value %s = %r (from %s)", name, st.tag.key, value, st.pin)
            return True

        tasks = [asyncio.ensure_future(one(st, v)) for st, v in todo]
        done, pending = await asyncio.wait(tasks, timeout=timeout_s)
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        return sum(1 for t in done if not t.cancelled() and t.exception() is None and t.result())

    # -- retained state ---------------------------------------------------------------------
    def _save_retained(self, run: TaskRun) -> None:
        """Stopped task: write its last retained state (synchronously; the thread no longer runs)."""
        if run.retain is None:
            return
        snap = run.program.retained()
        if snap is not None and run.retain.save(snap):
            log.info("control task %s: retained state of %d block(s) saved to %s", run.spec.name,
                     len(snap), run.retain.path)

    async def _retain_loop(self) -> None:
        """Save each task's retained state at most every retain_interval_ms, in a worker thread."""
        loop = asyncio.get_running_loop()
        due = {id(r): loop.time() + r.spec.retain_interval_ms / 1000 for r in self.tasks if r.retain is not None}
        tick = min(r.spec.retain_interval_ms for r in self.tasks if r.retain is not None) / 1000
        while True:
            await asyncio.sleep(tick)
            now = loop.time()
            for run in list(self.tasks):
                if run.retain is None or now < due.get(id(run), 0.0):
                    continue
                due[id(run)] = now + run.spec.retain_interval_ms / 1000
                snap = run.program.retained()
                if snap is not None and snap != run.retain.last:
                    await asyncio.to_thread(run.retain.save, snap)

    # -- inputs -----------------------------------------------------------------------------
    def update(self, readings: list[Reading]) -> None:
        """Asyncio thread, after every scan: copy the readings of control's input tags into the image."""
        used = self._used_slots
        items = []
        for r in readings:
            slot = r.tag.slot
            if slot not in used:
                continue
            v = r.value
            if isinstance(v, bool) or (isinstance(v, (int, float)) and math.isfinite(v)):
                items.append((slot, v, int(r.quality), r.ts_ns))
            else:   # no usable value (failed read, NaN): keep the last value, mark it bad
                items.append((slot, None, int(Quality.BAD), r.ts_ns))
        if items:
            self.image.write(items)

    # -- samples ----------------------------------------------------------------------------
    def _on_wake(self) -> None:
        try:
            os.eventfd_read(self._fd)
        except (BlockingIOError, InterruptedError):
            pass
        self._drain()
        self._sync_outputs(force=False)

    def _drain(self) -> None:
        samples: list[Sample] = []
        for run in self.tasks:
            names, kinds, task = run.layout.report_names, run.layout.report_kinds, run.spec.name
            while True:
                items = run.ring.drain()
                for ts, pin, value, q in items:
                    samples.append(Sample(ts, task, names[pin], _to_python(kinds[pin], value), q))
                run.samples += len(items)
                if not items and not run.ring.arm():
                    break
        if samples and self._on_samples is not None:
            try:
                self._on_samples(samples)
            except Exception:   # a sink-side failure must not stop control
                log.exception("control: delivering %d sample(s) failed", len(samples))

    # -- outputs ----------------------------------------------------------------------------
    async def _sync_loop(self) -> None:
        periods = [t.spec.write_period_ms / 1000 for t in self.tasks if t.spec.write_period_ms]
        tick = min([RETRY_S, *periods])
        loop = asyncio.get_running_loop()
        due = {id(t): loop.time() + t.spec.write_period_ms / 1000 for t in self.tasks if t.spec.write_period_ms}
        while True:
            await asyncio.sleep(tick)
            now = loop.time()
            for run in self.tasks:
                force = id(run) in due and now >= due[id(run)]
                if force:
                    due[id(run)] = now + run.spec.write_period_ms / 1000
                self._sync_task_outputs(run, force)

    def _sync_outputs(self, force: bool) -> None:
        for run in self.tasks:
            self._sync_task_outputs(run, force)

    def _sync_task_outputs(self, run: TaskRun, force: bool) -> None:
        """Write every bound output whose value differs from what the device last accepted."""
        if not run.out_states or self._write is None or self._loop is None:
            return
        snap = run.outputs.snapshot()
        now = self._loop.time()
        for k, (value, quality, _ts) in enumerate(snap):
            st = run.out_states[k]
            if quality >= Quality.BAD or st.inflight or (st.failing and now < st.retry_at):
                continue   # bad output without a safe value: hold the device's value
            v = output_value(st.tag, value)
            if v is None or (not force and st.has_written and st.written == v):
                continue
            st.inflight = True
            t = self._loop.create_task(self._write_one(run, st, v),
                                       name=f"control:write:{run.spec.name}:{st.tag.key}")
            self._writes.add(t)
            t.add_done_callback(self._writes.discard)

    async def _write_one(self, run: TaskRun, st: OutputState, value: Any) -> None:
        try:
            await self._write(st.tag, value)  # type: ignore[misc]
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            st.failures += 1
            if not st.failing:
                log.warning("control task %s: writing %s = %r from %s failed: %s (retrying with backoff)",
                            run.spec.name, st.tag.key, value, st.pin, exc)
            st.failing = True
            st.retry_at = self._loop.time() + st.backoff  # type: ignore[union-attr]
            st.backoff = min(st.backoff * 2, RETRY_MAX_S)
        else:
            st.writes += 1
            st.written, st.has_written = value, True
            if st.failing:
                log.info("control task %s: writing %s works again", run.spec.name, st.tag.key)
            st.failing = False
            st.backoff = RETRY_S
        finally:
            st.inflight = False
        if not self._stopped and not st.failing:
            self._sync_task_outputs(run, force=False)   # a newer value may have arrived meanwhile
