"""The ControlPlane: the runtime's one handle on control (process image, cycle threads, sample ring, output writes)."""
from __future__ import annotations

import asyncio
import errno as errno_mod
import logging
import math
import os
from dataclasses import dataclass, field
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


@dataclass(slots=True)
class OutputState:
    """Write-back bookkeeping of one output bound to a tag."""

    tag: Tag
    pin: str
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


class ControlPlane:
    """Owns the ProcessImage, the CycleThreads and the sample ring; the runtime's only handle on control."""

    def __init__(self, spec: ControlSpec, tags: dict[str, Tag], registry: CollectorRegistry) -> None:
        from edged.cext.control import CycleThread, ProcessImage, SampleRing

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
                              [OutputState(tag, pin) for tag, pin in zip(lay.out_tags, lay.out_pins)])
                self.tasks.append(run)
                self._used_slots.update(slot for slot, _ in lay.tag_inputs)
        except BaseException:
            os.close(self._fd)
            raise
        self.mlock_requested = any(t.mlock for t in spec.tasks)
        self.mlock_errno = -1
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

    async def stop(self) -> None:
        """Stop the cycle threads, deliver the samples left in the rings, finish in-flight writes."""
        if self._stopped:
            return
        self._stopped = True
        if not self._started:
            os.close(self._fd)
            return
        if self._sync_task is not None:
            self._sync_task.cancel()
            await asyncio.gather(self._sync_task, return_exceptions=True)
        for run in self.tasks:
            await asyncio.to_thread(run.thread.stop)
        if self._loop is not None:
            self._loop.remove_reader(self._fd)
        self._drain()
        if self._writes:
            await asyncio.wait(list(self._writes), timeout=5.0)
        os.close(self._fd)

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
            t = self._loop.create_task(self._write_one(run, st, v), name=f"control:write:{st.tag.key}")
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
