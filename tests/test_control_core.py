"""The C core on real threads: ProcessImage seqlock, SampleRing, CycleThread scheduling and overrun policies."""
from __future__ import annotations

import os
import select
import threading
import time

import pytest

from edged.cext.control import OPCODES, CycleThread, ProcessImage, Program, SampleRing, monotonic_ns

MS = 1_000_000


def wait_for(cond, timeout: float = 20.0, what: str = "condition") -> None:
    """Poll until cond() is true; generous timeout for a busy 2-core machine."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


def empty_program() -> Program:
    return Program(0, [], [], [], [], [])


def test_image_write_read_and_keep_value_on_bad_reading() -> None:
    im = ProcessImage(3)
    assert im.snapshot() == [(0.0, 2, 0)] * 3       # nothing read yet: bad quality
    im.write([(0, True, 0, 10), (2, 2**53, 0, 11)])
    assert im.read(0) == (1.0, 0, 10)
    assert im.read(2) == (float(2**53), 0, 11)
    im.write([(0, None, 2, 12)])                      # failed read: value kept, quality bad
    assert im.read(0) == (1.0, 2, 12)


@pytest.mark.parametrize("item,msg", [((3, 1.0, 0, 0), "expected a slot in 0..2, found 3"),
                                      ((0, "on", 0, 0), "expected a bool or number for slot 0, found str"),
                                      ((1, 1.0, 300, 0), "expected a quality 0..255, found 300")])
def test_image_rejects_bad_items_before_writing_anything(item: tuple, msg: str) -> None:
    im = ProcessImage(3)
    with pytest.raises(ValueError, match=msg):
        im.write([(1, 5.0, 0, 1), item])
    assert im.read(1) == (0.0, 2, 0)


def test_ring_counts_overflow_and_keeps_order() -> None:
    r = SampleRing(5)
    assert r.capacity == 8
    assert [r.push(i, i, float(i), 0) for i in range(10)] == [True] * 8 + [False] * 2
    assert r.dropped == 2 and len(r) == 8
    assert [x[1] for x in r.drain(3)] == [0, 1, 2]
    assert [x[1] for x in r.drain()] == [3, 4, 5, 6, 7]
    assert r.push(1, 99, 1.5, 1) and r.drain() == [(1, 99, 1.5, 1)]


def test_ring_wakes_the_consumer_once_when_armed() -> None:
    fd = os.eventfd(0, os.EFD_NONBLOCK)
    try:
        r = SampleRing(16, fd)
        r.push(1, 0, 1.0, 0)                          # armed at creation: wakes
        r.push(2, 1, 1.0, 0)                          # not re-armed: no second wake-up
        assert os.eventfd_read(fd) == 1
        assert len(r.drain()) == 2
        assert r.arm() is False                       # nothing waiting
        assert select.select([fd], [], [], 0)[0] == []
        r.push(3, 2, 1.0, 0)
        assert os.eventfd_read(fd) == 1
        r.push(4, 3, 1.0, 0)
        assert r.arm() is True                        # samples already waiting: drain again
    finally:
        os.close(fd)


def test_cycle_thread_runs_and_stops_promptly() -> None:
    th = CycleThread(empty_program(), None, None, None, 10 * MS)
    th.start()
    assert th.running
    wait_for(lambda: th.cycles >= 3, what="three cycles")
    th.stop()
    assert not th.running
    n = th.cycles
    time.sleep(0.05)
    assert th.cycles == n
    th.stop()                                         # idempotent
    counts, total, _ = th.histogram("lateness", [10**12])
    assert total == n and counts == [n]
    assert th.quantiles("lateness", [0.5])[0] <= th.max_ns("lateness")
    with pytest.raises(RuntimeError):
        th.start()


def test_long_period_thread_stops_without_waiting_for_the_next_cycle() -> None:
    th = CycleThread(empty_program(), None, None, None, 10_000 * MS)   # 10 s
    th.start()
    t0 = time.monotonic()
    th.stop()
    assert time.monotonic() - t0 < 5.0               # wakes every 100 ms to look at the stop flag
    assert th.cycles == 0


@pytest.mark.parametrize("kwargs,msg", [(dict(period_ns=1000), "between 10 us and 10 s"),
                                        (dict(period_ns=MS, priority=100), "priority 0..99"),
                                        (dict(period_ns=MS, overrun="burst"), "overrun policy")])
def test_cycle_thread_rejects_bad_settings(kwargs: dict, msg: str) -> None:
    with pytest.raises(ValueError, match=msg):
        CycleThread(empty_program(), None, None, None, **kwargs)


def test_a_running_program_cannot_be_stepped_from_python() -> None:
    prog = empty_program()
    th = CycleThread(prog, None, None, None, 10 * MS)
    th.start()
    try:
        with pytest.raises(RuntimeError, match="owned by a running cycle thread"):
            prog.step(0)
    finally:
        th.stop()
    prog.step(0)


def heavy_program(nblocks: int = 20000) -> Program:
    """Far more work than a 10 us period allows: every cycle overruns."""
    add = OPCODES["ADD"]
    blocks = [(add, [0, 1, 2, 3, 4, 5, 6, 7], [8 + i], 0, 0, {}) for i in range(nblocks)]
    return Program(8 + nblocks, blocks, [(i, float(i)) for i in range(8)], [], [], [])


def test_overrun_skip_policy_never_runs_catch_up_cycles() -> None:
    period = 10_000
    base = monotonic_ns() + MS
    th = CycleThread(heavy_program(), None, None, None, period, overrun="skip")
    th.start(base)
    wait_for(lambda: th.cycles >= 20, what="20 cycles")
    th.stop()
    end = monotonic_ns()
    assert th.overruns > 0 and th.skipped >= th.overruns
    # every cycle run or skipped used one slot of the period grid, and no slot lies in the future
    assert th.cycles + th.skipped <= (end - base) // period + 1


def test_overrun_delay_policy_restarts_the_grid() -> None:
    th = CycleThread(heavy_program(), None, None, None, 10_000, overrun="delay")
    th.start()
    wait_for(lambda: th.cycles >= 20, what="20 cycles")
    th.stop()
    assert th.overruns > 0 and th.skipped == 0


def test_inputs_are_copied_consistently_while_python_writes() -> None:
    """SUB of two slots that are always written together must never see a torn pair."""
    sub = OPCODES["SUB"]
    prog = Program(3, [(sub, [0, 1], [2], 0, 0, {})], [], [(0, 0), (1, 1)], [], [2])
    image = ProcessImage(2)
    ring = SampleRing(1 << 16)
    th = CycleThread(prog, image, None, ring, 100_000)
    stop = threading.Event()

    def writer() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            image.write([(0, float(i), 0, i), (1, float(i), 0, i)])

    t = threading.Thread(target=writer)
    t.start()
    th.start()
    try:
        wait_for(lambda: th.cycles >= 300, what="300 cycles")
    finally:
        th.stop()
        stop.set()
        t.join()
    values = [v for _, pin, v, q in ring.drain() if q == 0]
    assert values and all(v == 0.0 for v in values)
    assert ring.dropped == 0


def test_samples_by_exception_with_a_deadband() -> None:
    from edged.control.graph import compile_task
    from edged.control.sim import load_tasks
    from edged.tag import Access, DataType, Tag

    temp = Tag("p", "temp", "x", DataType.FLOAT64, "default", None, Access.READ, slot=0)
    spec = load_tasks("""
        [task.t]
        period_us = 1000
        [task.t.block.f]
        type = "MOVE"
        in = { IN = "p.temp" }
        deadband = 0.5
        [task.t.block.hot]
        type = "GT"
        in = { IN1 = "p.temp", IN2 = 20.0 }
    """, {"p.temp": temp})
    lay = compile_task(spec.tasks[0])
    prog, image, ring = lay.program(), ProcessImage(1), SampleRing(64)
    seq = [10.0, 10.3, 10.6, 10.2, 11.2, float("nan"), float("nan"), 25.0, 25.0]
    got = []
    for k, v in enumerate(seq):
        image.write([(0, v, 0, k)])
        prog.step(k * MS, image, None, ring)
        got.append([(lay.report_names[pin], value) for _, pin, value, q in ring.drain()])
    assert got[0] == [("f.OUT", 10.0), ("hot.OUT", 0.0)]
    assert got[1] == []                       # 0.3 from the last reported value: inside the deadband
    assert got[2] == [("f.OUT", 10.6)]
    assert got[3] == []                       # 0.4 back: still inside
    assert got[4] == [("f.OUT", 11.2)]
    assert got[5][0][0] == "f.OUT" and got[5][0][1] != got[5][0][1]   # NaN is reported once
    assert got[6] == []
    assert got[7] == [("f.OUT", 25.0), ("hot.OUT", 1.0)]             # bools ignore the deadband
    assert got[8] == []


def test_cycles_run_while_python_holds_the_gil() -> None:
    """The cycle thread never takes the GIL: it keeps cycling while this thread never releases it."""
    import sys

    th = CycleThread(heavy_program(10), None, None, None, MS)
    old = sys.getswitchinterval()
    th.start()
    try:
        sys.setswitchinterval(100.0)          # no other Python thread could get the GIL from us now
        start = th.cycles
        deadline = time.monotonic() + 30.0
        while th.cycles < start + 20 and time.monotonic() < deadline:
            pass                               # pure Python busy loop: no sleep, no I/O, no GIL release
        progressed = th.cycles - start
    finally:
        sys.setswitchinterval(old)
        th.stop()
    assert progressed >= 20
