"""The driver contract through its public surface: a push driver (sim in push mode) next to a polled one,
stale detection for a silent push stream, `edged read` of pushed tags, and the BlockingWorker for
blocking client libraries."""
from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
import tomllib
from pathlib import Path

import pytest

from daemon_support import until
from edged.cell import parse_cell
from edged.device import DeviceState
from edged.driver import GroupMode, emulator_for
from edged.runtime import Runtime
from edged.tag import Quality
from edged.worker import BlockingWorker, WorkerPoisoned, WorkerTimeout

CELL = """
[cell]
name = "contract"
state_dir = "{state}"
heartbeat_s = 0

[metrics]
enabled = false

[device.pushy]
driver = "sim"
mode = "push"
backoff_initial_s = 0.05
backoff_max_s = 0.1

[device.pushy.tag.count]
address = "counter:0"
type = "uint32"
scan_ms = 50

[device.pushy.tag.level]
address = "constant:7.5"
scan_ms = 50

[device.polled]
driver = "sim"

[device.polled.tag.count]
address = "counter:0"
type = "uint32"
scan_ms = 50
"""


def _cell(tmp_path: Path):
    return parse_cell(tomllib.loads(CELL.format(state=tmp_path / "s")), "cell.toml")


def test_group_modes_come_from_the_driver(tmp_path: Path) -> None:
    cell = _cell(tmp_path)
    pushy, polled = cell.devices["pushy"].driver, cell.devices["polled"].driver
    assert pushy.group_modes() == {"50ms": GroupMode.PUSH}
    assert pushy.polled_groups() == [] and pushy.pushed_groups() == ["50ms"]
    assert polled.polled_groups() == ["50ms"] and polled.pushed_groups() == []
    assert pushy.spec.intervals == {"50ms": 0.05}


async def test_push_values_arrive_go_stale_when_silent_and_recover(tmp_path: Path) -> None:
    cell = _cell(tmp_path)
    rt = Runtime(cell, serve_metrics=False)
    drv = cell.devices["pushy"].driver
    runner = rt.runners["pushy"]
    assert runner.groups == []  # nothing of a push device is polled by the runtime
    await rt.start()
    try:
        await until(lambda: rt.current.get("pushy.count", (None, 2, 0))[1] == Quality.GOOD
                    and rt.current.get("pushy.level", (None, 2, 0))[1] == Quality.GOOD)
        assert rt.current["pushy.level"][0] == 7.5
        # the constant never changes: keep-alives alone keep it good past its stale time
        stale_after = drv.stale_after_s("50ms")
        await asyncio.sleep(stale_after * 1.5)
        assert rt.current["pushy.level"][1] == Quality.GOOD
        assert runner.state is DeviceState.UP
        # the stream goes silent (no value, no keep-alive): its values become uncertain, not good
        drv.paused = True
        await until(lambda: rt.current["pushy.level"][1] == Quality.UNCERTAIN, timeout=stale_after * 10 + 5)
        assert rt.current["pushy.count"][1] == Quality.UNCERTAIN
        assert rt.current["polled.count"][1] == Quality.GOOD  # the polled neighbour is untouched
        drv.paused = False
        await until(lambda: rt.current["pushy.count"][1] == Quality.GOOD)
    finally:
        await rt.stop()


async def test_a_push_stream_that_ends_is_a_loss_and_the_runner_reconnects(tmp_path: Path,
                                                                          caplog: pytest.LogCaptureFixture) -> None:
    cell = _cell(tmp_path)
    rt = Runtime(cell, serve_metrics=False)
    drv = cell.devices["pushy"].driver
    runner = rt.runners["pushy"]
    await rt.start()
    try:
        await until(lambda: runner.connects >= 1 and rt.current.get("pushy.count", (0, 2, 0))[1] == Quality.GOOD)
        drv.end_stream = True
        await until(lambda: "the push stream ended" in caplog.text)
        drv.end_stream = False
        await until(lambda: runner.connects >= 2 and runner.state is DeviceState.UP)
    finally:
        await rt.stop()


async def test_emulators_are_registered_on_their_own(tmp_path: Path) -> None:
    cell = _cell(tmp_path)
    emu = emulator_for([cell.devices["polled"].driver])
    tag = cell.tags["polled.count"]
    emu.set_value(tag, 41)
    assert emu.get_value(tag) == 41
    other = parse_cell(tomllib.loads('[cell]\nname = "m"\n[device.m]\ndriver = "modbus"\nhost = "127.0.0.1"\n'
                                     '[device.m.tag.t]\naddress = "hr:0"\ntype = "uint16"\n'), "m.toml")
    with pytest.raises(ValueError):
        emulator_for([cell.devices["polled"].driver, other.devices["m"].driver])


def test_edged_read_prints_pushed_tags(tmp_path: Path) -> None:
    f = tmp_path / "cell.toml"
    f.write_text(CELL.format(state=tmp_path / "s"))
    out = subprocess.run([sys.executable, "-m", "edged", "read", "-c", str(f), "--json"], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    rows = {r["tag"]: r for r in json.loads(out.stdout)}
    assert set(rows) == {"pushy.count", "pushy.level", "polled.count"}
    assert all(r["quality"] == "good" for r in rows.values()), rows
    assert rows["pushy.level"]["value"] == 7.5 and rows["pushy.level"]["type"] == "float64"


def test_an_empty_tag_table_is_a_config_error(tmp_path: Path) -> None:
    from edged.errors import ConfigError

    doc = tomllib.loads('[cell]\nname = "x"\n[device.d]\ndriver = "sim"\n[device.d.tag]\n')
    with pytest.raises(ConfigError) as ei:
        parse_cell(doc, "cell.toml")
    assert "device.d.tag: expected at least one tag table" in str(ei.value)


# -- BlockingWorker ------------------------------------------------------------------------------

async def test_worker_runs_calls_in_order_on_its_own_thread() -> None:
    w = BlockingWorker("dev")
    try:
        threads = await asyncio.gather(*(w.call(lambda i=i: (i, threading.get_ident())) for i in range(20)))
        assert [i for i, _ in threads] == list(range(20))
        assert {t for _, t in threads} == {w._thread.ident}
        assert w._thread.ident != threading.get_ident()
    finally:
        w.stop()


async def test_a_hung_call_times_out_at_once_poisons_and_its_late_answer_is_never_used() -> None:
    release = threading.Event()
    closed_on: list[int] = []
    w = BlockingWorker("plc")

    def hang() -> str:
        release.wait(10)
        return "late answer"

    loop = asyncio.get_running_loop()
    t0 = loop.time()
    with pytest.raises(WorkerTimeout):
        await w.call(hang, timeout=0.2)
    assert loop.time() - t0 < 5  # the loop was not held by the hung call (generous bound, no flake)
    assert w.poisoned
    with pytest.raises(WorkerPoisoned):
        await w.call(lambda: "next request")
    release.set()
    assert await w.reset(lambda: closed_on.append(threading.get_ident()))
    assert closed_on == [w._thread.ident]  # the client was closed on its own thread, after the hung call
    assert await w.call(lambda: "fresh") == "fresh"
    w.stop()


async def test_abort_runs_when_a_call_is_abandoned_and_a_worker_that_never_returns_is_replaced() -> None:
    aborted: list[bool] = []
    forever = threading.Event()
    w = BlockingWorker("stuck", abort=lambda: aborted.append(True))
    with pytest.raises(WorkerTimeout):
        await w.call(forever.wait, timeout=0.1)
    assert aborted == [True]
    assert not await w.reset(lambda: None, timeout=0.2)
    w2 = w.replace()
    assert await w2.call(lambda: 5) == 5
    forever.set()
    w2.stop()
    await asyncio.sleep(0.05)
    deadline = time.monotonic() + 5
    while w.alive and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert not w.alive


def test_per_unit_state_and_driver_facts_are_exported(tmp_path: Path) -> None:
    from prometheus_client import generate_latest

    cell = _cell(tmp_path)
    drv = cell.devices["polled"].driver
    drv.stats.unit_state.update({"unit 1": "up", "unit 9": "silent"})
    drv.status = lambda: {"info": {"order_code": "6ES7 214-1AG40-0XB0"}, "gauges": {"pdu_size": 480}}
    rt = Runtime(cell, serve_metrics=False)
    text = generate_latest(rt.registry).decode()
    assert 'edged_device_unit_up{device="polled",unit="unit 1"} 1.0' in text
    assert 'edged_device_unit_up{device="polled",unit="unit 9"} 0.0' in text
    assert 'edged_device_fact{device="polled",name="pdu_size"} 480.0' in text
    assert 'order_code="6ES7 214-1AG40-0XB0"' in text


async def test_a_device_a_reload_adds_gets_its_machine_state_and_a_removed_one_loses_it(tmp_path: Path) -> None:
    from prometheus_client import generate_latest

    extra = '\n[device.line2]\ndriver = "sim"\n[device.line2.tag.on]\naddress = "constant:true"\ntype = "bool"\n' \
            'scan_ms = 50\n[device.line2.state]\nrunning = "on"\n'
    new = parse_cell(tomllib.loads(CELL.format(state=tmp_path / "s") + extra), "cell.toml")
    rt = Runtime(_cell(tmp_path), serve_metrics=False)
    await rt.start()
    try:
        assert "line2" not in rt.machines
        rt.cell = new
        rt.add_device(new.devices["line2"])
        await until(lambda: 'edged_machine_state{device="line2",state="running"} 1.0'
                    in generate_latest(rt.registry).decode())
        await rt.remove_device("line2")
        assert "line2" not in rt.machines
        assert 'edged_machine_state{device="line2"' not in generate_latest(rt.registry).decode()
    finally:
        await rt.stop()
