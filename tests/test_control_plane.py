"""The ControlPlane on an event loop: inputs, samples by exception, output write-back, safe values, metrics."""
from __future__ import annotations

import asyncio
import logging
import os
import shutil
import subprocess
import time
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from edged.control import ControlPlane
from edged.control.sim import load_tasks
from edged.errors import WriteRefused
from edged.tag import Access, DataType, Quality, Reading, Sample, Tag


def _tag(name: str, dtype: str, access: str = "read", slot: int = 0) -> Tag:
    return Tag("press1", name, "x", DataType(dtype), "default", None, Access(access), slot=slot)


TAGS = {t.key: t for t in [
    _tag("part_sensor", "bool", slot=0), _tag("oil_temp", "float32", slot=1),
    _tag("good_parts", "uint32", "write", 2), _tag("machine_state", "uint16", "write", 3),
    _tag("alarm", "bool", "write", 4), _tag("valve", "float32", "write", 5),
]}

COUNTER = """
[task.fast]
period_us = 1000
[task.fast.block.part_edge]
type = "R_TRIG"
in = { CLK = "press1.part_sensor" }
[task.fast.block.parts]
type = "CTU"
in = { CU = "part_edge.Q", PV = 1000 }
out = { CV = "press1.good_parts" }
"""


async def wait_until(cond, timeout: float = 20.0, what: str = "condition") -> None:
    """Poll on the loop until cond() holds."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


class Recorder:
    """on_samples and write callbacks that remember everything; write can be told to fail."""

    def __init__(self) -> None:
        self.samples: list[Sample] = []
        self.writes: list[tuple[str, Any]] = []
        self.fail = 0

    def on_samples(self, samples: list[Sample]) -> None:
        self.samples.extend(samples)

    async def write(self, tag: Tag, value: Any) -> None:
        if self.fail > 0:
            self.fail -= 1
            raise WriteRefused(f"{tag.key}: device is down")
        self.writes.append((tag.key, value))

    def last(self, key: str) -> Any:
        vals = [v for k, v in self.writes if k == key]
        return vals[-1] if vals else None


def reading(key: str, value: Any, quality: Quality = Quality.GOOD) -> Reading:
    return Reading(TAGS[key], value, quality, time.time_ns())


async def start(text: str, rec: Recorder) -> tuple[ControlPlane, CollectorRegistry]:
    reg = CollectorRegistry()
    plane = ControlPlane(load_tasks(text, TAGS), TAGS, reg)
    plane.start(asyncio.get_running_loop(), rec.on_samples, rec.write)
    return plane, reg


async def test_counter_counts_edges_writes_back_and_reports_samples() -> None:
    rec = Recorder()
    plane, _ = await start(COUNTER, rec)
    try:
        await asyncio.sleep(0.05)
        assert rec.writes == []                                  # inputs not read yet: outputs held
        plane.update([reading("press1.part_sensor", False)])
        await wait_until(lambda: rec.last("press1.good_parts") == 0, what="initial write")
        for n in range(1, 4):
            plane.update([reading("press1.part_sensor", True)])
            await wait_until(lambda: rec.last("press1.good_parts") == n, what=f"count {n}")
            plane.update([reading("press1.part_sensor", False)])
            seen = plane.tasks[0].thread.cycles
            await wait_until(lambda: plane.tasks[0].thread.cycles >= seen + 2, what="a cycle that saw false")
    finally:
        await plane.stop()
    assert [v for k, v in rec.writes] == [0, 1, 2, 3]          # written on change only, as ints
    cv = [s for s in rec.samples if s.tag == "parts.CV"]
    # bad until the first scan, then one sample per change of value or quality
    assert [(s.value, s.quality) for s in cv] == [(0, 2), (0, 0), (1, 0), (2, 0), (3, 0)]
    assert all(s.device == "fast" for s in cv)
    edges = [(s.value, s.quality) for s in rec.samples if s.tag == "part_edge.Q"]
    assert edges == [(False, 2), (False, 0)] + [(True, 0), (False, 0)] * 3


async def test_bad_input_holds_outputs_then_writes_the_safe_value() -> None:
    rec = Recorder()
    plane, _ = await start("""
        [task.fast]
        period_us = 1000
        [task.fast.block.hot]
        type = "GT"
        in = { IN1 = "press1.oil_temp", IN2 = 80.0, HYST = 5.0 }
        out = { OUT = "press1.alarm" }
        safe = { OUT = true }
        bad_after_ms = 200
        [task.fast.block.hold]
        type = "MOVE"
        in = { IN = "press1.oil_temp" }
        out = { OUT = "press1.valve" }
    """, rec)
    try:
        # before the first scan every input is bad: nothing is written until the safe time
        await wait_until(lambda: rec.last("press1.alarm") is True, what="safe value at start-up")
        assert rec.last("press1.valve") is None
        plane.update([reading("press1.oil_temp", 70.0)])
        await wait_until(lambda: rec.last("press1.alarm") is False, what="computed value")
        await wait_until(lambda: rec.last("press1.valve") == 70.0, what="valve")
        plane.update([reading("press1.oil_temp", None, Quality.BAD)])   # communication lost
        await wait_until(lambda: rec.last("press1.alarm") is True, what="safe value after loss")
        assert rec.last("press1.valve") == 70.0                           # no safe value: held
        await wait_until(lambda: any(s.tag == "hold.OUT" and s.quality == 2 for s in rec.samples), what="bad sample")
        plane.update([reading("press1.oil_temp", 90.0)])
        await wait_until(lambda: rec.last("press1.valve") == 90.0, what="valve after recovery")
        assert rec.last("press1.alarm") is True
    finally:
        await plane.stop()
    alarm = [s for s in rec.samples if s.tag == "hot.OUT"]
    assert (True, 1) in [(s.value, s.quality) for s in alarm]    # the safe value is marked uncertain


async def test_failed_writes_are_retried_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    rec = Recorder()
    rec.fail = 2
    caplog.set_level(logging.INFO, logger="edged.control.plane")
    plane, reg = await start(COUNTER, rec)
    try:
        plane.update([reading("press1.part_sensor", False)])
        await wait_until(lambda: rec.last("press1.good_parts") == 0, timeout=30, what="write after retries")
    finally:
        await plane.stop()
    text = generate_latest(reg).decode()
    assert 'edged_control_write_failures_total{tag="press1.good_parts",task="fast"} 2.0' in text
    assert 'edged_control_writes_total{tag="press1.good_parts",task="fast"} 1.0' in text
    warnings = [r for r in caplog.records if "failed" in r.getMessage()]
    assert len(warnings) == 1                                    # logged once, not per retry
    assert any("works again" in r.getMessage() for r in caplog.records)


async def test_write_period_rewrites_unchanged_outputs() -> None:
    rec = Recorder()
    plane, _ = await start("""
        [task.fast]
        period_us = 1000
        write_period_ms = 20
        [task.fast.block.c]
        type = "MOVE"
        in = { IN = 2 }
        out = { OUT = "press1.machine_state" }
    """, rec)
    try:
        await wait_until(lambda: len(rec.writes) >= 4, what="periodic writes")
    finally:
        await plane.stop()
    assert set(rec.writes) == {("press1.machine_state", 2)}


async def test_metrics_pass_promtool_and_show_refused_affinity(caplog: pytest.LogCaptureFixture) -> None:
    rec = Recorder()
    caplog.set_level(logging.WARNING, logger="edged.control.plane")
    plane, reg = await start(COUNTER.replace("period_us = 1000", "period_us = 1000\ncpu = 4095"), rec)
    try:
        await wait_until(lambda: plane.tasks[0].thread.cycles >= 5, what="cycles")
        text = generate_latest(reg).decode()
    finally:
        await plane.stop()
    assert 'edged_cycle_realtime_requested{task="fast",what="affinity"} 1.0' in text
    assert 'edged_cycle_realtime_granted{task="fast",what="affinity"} 0.0' in text
    assert 'edged_cycle_realtime_requested{task="fast",what="priority"} 0.0' in text
    assert 'edged_cycle_running{task="fast"} 1.0' in text
    assert [r.getMessage() for r in caplog.records if "affinity" in r.getMessage()] == [
        "control task fast: affinity to CPU 4095 refused (EINVAL); running on any CPU"]
    for name in ("edged_cycle_lateness_seconds_bucket", "edged_cycle_execution_seconds_count",
                 "edged_cycle_overruns_total", "edged_cycle_cycles_total", "edged_control_samples_dropped_total"):
        assert name in text
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool (Debian package prometheus) is not installed")
    res = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr


async def test_stop_delivers_samples_left_in_the_ring() -> None:
    rec = Recorder()
    plane, _ = await start(COUNTER, rec)
    await wait_until(lambda: plane.tasks[0].thread.cycles >= 1, what="a cycle")
    await plane.stop()
    assert {s.tag for s in rec.samples} == {"part_edge.Q", "parts.Q", "parts.CV"}
    await plane.stop()                                            # idempotent


async def test_a_plane_that_never_started_stops_cleanly() -> None:
    plane = ControlPlane(load_tasks(COUNTER, TAGS), TAGS, CollectorRegistry())
    fd = plane._fd
    await plane.stop()
    with pytest.raises(OSError):          # the eventfd is closed (no other thread opens files here)
        os.fstat(fd)
    await plane.stop()


async def test_communication_loss_alarm_from_input_quality() -> None:
    rec = Recorder()
    plane, _ = await start("""
        [task.fast]
        period_us = 1000
        [task.fast.block.oil_q]
        type = "QUALITY"
        in = { IN = "press1.oil_temp" }
        [task.fast.block.lost]
        type = "NOT"
        in = { IN = "oil_q.GOOD" }
        [task.fast.block.lost_1s]
        type = "TON"
        in = { IN = "lost.OUT", PT = "300ms" }
        out = { Q = "press1.alarm" }
    """, rec)
    try:
        plane.update([reading("press1.oil_temp", 50.0)])
        await wait_until(lambda: rec.last("press1.alarm") is False, what="no alarm")
        plane.update([reading("press1.oil_temp", None, Quality.BAD)])
        await wait_until(lambda: rec.last("press1.alarm") is True, what="communication-loss alarm")
        plane.update([reading("press1.oil_temp", 51.0)])
        await wait_until(lambda: rec.last("press1.alarm") is False, what="alarm cleared")
    finally:
        await plane.stop()
    # The delay, on the cycle's own clock (ET is deadline-based, so this holds on a loaded machine):
    # while the loss lasted less than PT, Q stayed FALSE; Q rose in the cycle where ET reached PT.
    by_ts: dict[int, dict[str, Any]] = {}
    for smp in rec.samples:
        by_ts.setdefault(smp.ts_ns, {})[smp.tag] = smp.value
    q_now, et_now = False, 0.0
    timing: list[tuple[float, bool]] = []
    for ts in sorted(by_ts):
        row = by_ts[ts]
        q_now = row.get("lost_1s.Q", q_now)
        et_now = row.get("lost_1s.ET", et_now)
        timing.append((et_now, q_now))
    rise = next(i for i, (_, q) in enumerate(timing) if q)
    before = [et for et, q in timing[:rise]]
    assert all(et < 300.0 for et in before)                # never TRUE before PT of loss
    assert max(before) >= 150.0                             # ... and it really timed (ET ran up towards PT)
    assert timing[rise][0] == 300.0                          # TRUE in the cycle where ET reached PT
    cycles_timing = sum(1 for et in before if et > 0.0)     # cycles that saw the loss before Q rose
    assert cycles_timing <= 300                              # at most PT / period cycles (fewer if skipped)


async def test_stop_writes_safe_values_bounded_in_time(monkeypatch: pytest.MonkeyPatch,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    import edged.control.plane as plane_mod

    monkeypatch.setattr(plane_mod, "SAFE_WRITE_TIMEOUT_S", 0.5)
    rec = Recorder()
    hang = asyncio.Event()

    async def write(tag: Tag, value: Any) -> None:
        if tag.key == "press1.valve" and plane._stopped:
            await hang.wait()                                  # a device that never answers at shutdown
        await rec.write(tag, value)

    plane = ControlPlane(load_tasks("""
        [task.fast]
        period_us = 1000
        [task.fast.block.on]
        type = "MOVE"
        in = { IN = true }
        out = { OUT = "press1.alarm" }
        safe = { OUT = false }
        [task.fast.block.v]
        type = "MOVE"
        in = { IN = 12.5 }
        out = { OUT = "press1.valve" }
        safe = { OUT = 0.0 }
        [task.fast.block.state]
        type = "MOVE"
        in = { IN = 3 }
        out = { OUT = "press1.machine_state" }
    """, TAGS), TAGS, CollectorRegistry())
    plane.start(asyncio.get_running_loop(), rec.on_samples, write)
    await wait_until(lambda: rec.last("press1.alarm") is True and rec.last("press1.valve") == 12.5
                     and rec.last("press1.machine_state") == 3, what="outputs written")
    with caplog.at_level(logging.INFO):
        await plane.stop()
    assert rec.last("press1.alarm") is False                   # the safe value, written last
    assert rec.last("press1.valve") == 12.5                    # its write hung and was given up
    assert rec.last("press1.machine_state") == 3               # no safe value: left alone
    assert "stop: wrote safe value press1.alarm = False" in caplog.text
    assert "safe value press1.valve = 0.0 not written within 0.5 s" in caplog.text


async def test_remove_task_stops_it_and_writes_its_safe_values(tmp_path) -> None:
    rec = Recorder()
    plane = ControlPlane(load_tasks("""
        [task.fast]
        period_us = 1000
        [task.fast.block.on]
        type = "MOVE"
        in = { IN = true }
        out = { OUT = "press1.alarm" }
        safe = { OUT = false }
        [task.fast.block.n]
        type = "CTU"
        in = { CU = "press1.part_sensor" }
        retain = true
        [task.slow]
        period_us = 2000
        [task.slow.block.s]
        type = "MOVE"
        in = { IN = 4 }
        out = { OUT = "press1.machine_state" }
        safe = { OUT = 0 }
    """, TAGS), TAGS, reg := CollectorRegistry(), state_dir=tmp_path)
    plane.start(asyncio.get_running_loop(), rec.on_samples, rec.write)
    try:
        plane.update([reading("press1.part_sensor", True)])
        await wait_until(lambda: rec.last("press1.alarm") is True and rec.last("press1.machine_state") == 4,
                         what="outputs written")
        await wait_until(lambda: (plane.tasks[0].program.retained() or [[0]])[0][0] == 1.0, what="counted")
        text = generate_latest(reg).decode()
        assert 'edged_control_retain_failing{task="fast"} 0.0' in text
        assert 'edged_control_retain_saves_total{task="fast"}' in text
        assert 'edged_control_retain_saves_total{task="slow"}' not in text     # nothing retained there
        await plane.remove_task("fast")
        assert [t.spec.name for t in plane.tasks] == ["slow"]
        assert rec.last("press1.alarm") is False
        assert rec.last("press1.machine_state") == 4            # the other task runs on
        assert (tmp_path / "retain" / "fast.json").exists()
        with pytest.raises(KeyError):
            await plane.remove_task("fast")
    finally:
        await plane.stop()
    assert rec.last("press1.machine_state") == 0


async def test_counter_resumes_from_the_device_value_after_a_restart() -> None:
    """The documented retentive-counter pattern: load CV from the tag when the tag is first read."""
    rec = Recorder()
    plane, _ = await start("""
        [task.fast]
        period_us = 1000
        [task.fast.block.count_q]
        type = "QUALITY"
        in = { IN = "press1.good_parts" }
        [task.fast.block.loaded]
        type = "R_TRIG"
        in = { CLK = "count_q.GOOD" }
        [task.fast.block.part_edge]
        type = "R_TRIG"
        in = { CLK = "press1.part_sensor" }
        [task.fast.block.parts]
        type = "CTUD"
        in = { CU = "part_edge.Q", LD = "loaded.Q", PV = "press1.good_parts" }
        out = { CV = "press1.good_parts" }
    """, rec)
    try:
        plane.update([reading("press1.part_sensor", False)])
        await asyncio.sleep(0.05)
        assert rec.writes == []                         # the device's count is not known yet: nothing written
        plane.update([reading("press1.good_parts", 41)])
        await wait_until(lambda: rec.last("press1.good_parts") == 41, what="loaded 41")
        for n in (42, 43):
            plane.update([reading("press1.part_sensor", True)])
            await wait_until(lambda: rec.last("press1.good_parts") == n, what=f"count {n}")
            plane.update([reading("press1.part_sensor", False), reading("press1.good_parts", n)])
            seen = plane.tasks[0].thread.cycles
            await wait_until(lambda: plane.tasks[0].thread.cycles >= seen + 2, what="cycles")
    finally:
        await plane.stop()
    assert [v for _, v in rec.writes] == [41, 42, 43]
