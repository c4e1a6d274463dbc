"""The CNC driver against the emulators through real pty pairs and TCP: every field, events, commands,
streaming, garbage and split lines, late answers, resets, the Haas first-command quirk, unplugging."""
from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from cnc_support import GRBL_FIELDS, HAAS_FIELDS, cell_text, load, tag_name
from daemon_support import until
from edged.cell import Cell
from edged.device import DeviceRunner, DeviceState
from edged.drivers.cnc.emulator import CncEmulator
from edged.errors import ConfigError, DeviceUnavailable, ReadFailed, WriteFailed
from edged.tag import Quality, Reading


async def _emulator(cell: Cell) -> CncEmulator:
    emu = CncEmulator([d.driver for d in cell.devices.values()], auto=False)
    await emu.start()
    return emu


def _values(readings: list[Reading]) -> dict[str, object]:
    return {r.tag.name: (r.value if r.quality is Quality.GOOD else r.quality.label) for r in readings}


@pytest.fixture
async def rig(tmp_path: Path):
    """A cell with a GRBL machine on a pty and a Haas machine on TCP, emulated; drivers connected."""
    cell = load(cell_text(tmp_path, timeout=1.0))
    emu = await _emulator(cell)
    g, h = cell.devices["g"].driver, cell.devices["h"].driver
    await g.connect()
    await h.connect()
    yield cell, emu, g, h
    await g.close()
    await h.close()
    await emu.stop()


async def test_grbl_every_field_over_a_pty(rig) -> None:
    """Each GRBL field reads good; positions follow a running program; WPos = MPos - WCO."""
    cell, emu, g, _ = rig
    vals = _values(await g.read("fast"))
    for f in GRBL_FIELDS:
        assert vals[tag_name(f)] != "bad", f
    assert vals["status_state"] == "Idle" and vals["machine_state"] == "idle"
    assert vals["build_version"] == "1.1h" and vals["build_rx_buffer"] == 128 and vals["setting_110"] == 500.0
    assert vals["wpos_x"] == vals["mpos_x"] - vals["wco_x"]
    assert vals["cmd_stream"] == "" and vals["stream_state"] == "idle"
    emu.start_program("g")
    await asyncio.sleep(0.3)
    vals = _values(await g.read("fast"))
    assert vals["status_state"] == "Run" and vals["machine_state"] == "running"
    assert vals["fs_feed"] == 1000.0 and vals["ln"] > 0
    assert g.machine.state == "running"


async def test_grbl_events_commands_and_reset(rig) -> None:
    """Feed hold and cycle start as writes; an alarm is an event and a tag; a reset is noticed and recovered."""
    cell, emu, g, _ = rig
    tags = cell.tags
    emu.start_program("g")
    await g.write(tags["g.cmd_feed_hold"], True)
    await until(lambda: emu.machine("g").state == "Hold")
    vals = _values(await g.read("fast"))
    assert (vals["status_state"], vals["status_substate"], vals["machine_state"]) == ("Hold", 1, "hold")
    await g.write(tags["g.cmd_cycle_start"], True)
    await until(lambda: emu.machine("g").state == "Run")
    with pytest.raises(WriteFailed):
        await g.write(tags["g.cmd_feed_hold"], False)
    emu.alarm("g", 1)
    await until(lambda: g.machine.alarms == 1)
    vals = _values(await g.read("fast"))
    assert (vals["alarm_code"], vals["alarm_text"], vals["count_alarm"]) == (1, "Hard limit", 1)
    assert (vals["machine_state"], vals["machine_alarm"], vals["machine_alarm_code"]) == ("alarm", "Hard limit", "1")
    await g.write(tags["g.cmd_reset"], True)  # Ctrl-X: GRBL prints its banner
    await until(lambda: g.conv.model.resets == 1)
    vals = _values(await g.read("fast"))
    assert vals["count_reset"] == 1 and vals["status_state"] == "Alarm"
    assert emu.endpoints["g"].received.count(b"\x18") == 1


async def test_a_reset_while_a_query_is_outstanding_is_recovered(rig) -> None:
    """A controller that resets mid-conversation fails the outstanding query, which is asked again."""
    cell, emu, g, _ = rig
    ep = emu.endpoints["g"]
    ep.delay_s = 0.2  # the answer comes late; the reset's banner comes first
    task = asyncio.create_task(g.read("fast"))
    await asyncio.sleep(0.05)
    ep.send(emu.machine("g").reset())
    ep.delay_s = 0.0
    vals = _values(await task)
    assert vals["count_reset"] == 1 and vals["status_state"] in ("Idle", "Alarm")


async def test_grbl_streaming_with_character_counting(rig, tmp_path: Path) -> None:
    """cmd.stream streams a file from stream_dir against the 128-byte buffer; an error:N stops it."""
    cell, emu, g, _ = rig
    (tmp_path / "part.nc").write_text("%\n(square)\nG21 G90\n" + "".join(f"G1 X{i} Y{i} F500 ; move\n"
                                                                         for i in range(60)) + "M30\n%\n")
    await g.write(cell.tags["g.cmd_stream"], "part.nc")
    await until(lambda: g.streamer.state != "streaming")
    vals = _values(await g.read("fast"))
    assert (vals["stream_state"], vals["stream_acked"], vals["stream_total"]) == ("done", 62, 62)
    assert vals["stream_progress"] == 1.0
    assert emu.machine("g").lines_received >= 62
    (tmp_path / "bad.nc").write_text("G21\nQ5\nG1 X20 F100\n")  # Q is no G-code word: error:20
    await g.write(cell.tags["g.cmd_stream"], "bad.nc")
    await until(lambda: g.streamer.state != "streaming")
    assert g.streamer.state == "failed" and "error:20" in g.streamer.error
    with pytest.raises(WriteFailed, match="file name"):
        await g.write(cell.tags["g.cmd_stream"], "../etc/passwd")


async def test_garbage_noise_and_split_lines_do_not_desynchronize(rig) -> None:
    """Answers in 1-3 byte pieces, noise bytes, junk lines and unsolicited messages between them: every
    read still gets its own answer; the junk is counted."""
    cell, emu, g, h = rig
    for dev in ("g", "h"):
        emu.endpoints[dev].split = True
    for i in range(5):
        emu.inject_bytes("g", b"\x00\xfe garbage line\r\n[MSG:hello]\r\nnonsense")
        emu.inject_bytes("h", b"\x02NOT AN ANSWER\x17\r\n>\x01junk")
        gv = _values(await g.read("fast"))
        hv = _values(await h.read("default"))
        assert gv["status_state"] == "Idle" and gv["msg"] == "hello"
        assert hv["q100_serial"] == "1234567" and hv["q500_parts"] == 4523 and hv["macro_5041"] == 12.5
    assert g.stats.errors.get("malformed", 0) >= 5 and h.stats.errors.get("malformed", 0) >= 5
    assert g.stats.errors.get("noise", 0) > 0


async def test_late_answers_are_never_taken_for_a_later_request(rig) -> None:
    """A timed-out request's answer arrives later: it is discarded, the next request gets its own answer;
    two timeouts in a row drop the connection."""
    cell, emu, g, h = rig
    emu.endpoints["g"].delay_s = 1.5  # > timeout_s 1.0
    with pytest.raises(ReadFailed):
        await g.read("fast")
    emu.endpoints["g"].delay_s = 0.0
    emu.start_program("g")  # the late report says Idle; the next one says Run
    await until(lambda: g.conv.late >= 1)  # (the emulator could otherwise send the next answer first)
    vals = _values(await g.read("fast"))
    assert vals["status_state"] == "Run"
    assert g.conv.late >= 1 and g.stats.timeouts == 1

    emu.endpoints["h"].delay_s = 1.5
    with pytest.raises(ReadFailed):
        await h.read("default")
    emu.endpoints["h"].delay_s = 0.0
    emu.machine("h").serial = "7654321"
    await until(lambda: h.conv.late >= 1)
    vals = _values(await h.read("default"))
    assert vals["q100_serial"] == "7654321"

    emu.endpoints["h"].delay_s = 5.0
    with pytest.raises(ReadFailed):
        await h.read("default")
    with pytest.raises(DeviceUnavailable):
        await h.read("default")


async def test_haas_every_field_first_command_quirk_and_busy(tmp_path: Path) -> None:
    """Haas over TCP and over a pty: every field; the ignored first command is re-sent; while BUSY the
    program and part count are the last ones sent, as uncertain."""
    for port in (None, str(tmp_path / "haas.tty")):
        cell = load(cell_text(tmp_path, haas_port=port))
        emu = CncEmulator([cell.devices["h"].driver], auto=False)
        await emu.start()
        h = cell.devices["h"].driver
        try:
            await h.connect()
            assert h.conv.first_retries == 1
            vals = _values(await h.read("default"))
            for f in HAAS_FIELDS:
                assert vals[tag_name(f)] != "bad", (port, f)
            assert vals["q104_mode"] == "MEM" and vals["q300_power_on_s"] >= 100_259
            emu.start_program("h")
            readings = {r.tag.name: r for r in await h.read("default")}
            assert readings["q500_status"].value == "BUSY" and readings["machine_state"].value == "running"
            assert readings["q500_parts"].value == 4523 and readings["q500_parts"].quality is Quality.UNCERTAIN
            emu.feed_hold("h")
            assert _values(await h.read("default"))["machine_state"] == "hold"
            emu.alarm("h")
            vals = _values(await h.read("default"))
            assert vals["q500_status"] == "ALARM ON" and vals["machine_state"] == "alarm"
            assert h.machine.alarms == 1 and "ALARM ON" in h.machine.alarm_text
        finally:
            await h.close()
            await emu.stop()


async def test_unplugged_adapter_recovers_under_the_device_runner(tmp_path: Path) -> None:
    """Closing the pty (the adapter is pulled) takes the device down and the machine offline; a new pty
    under the same stable path brings both back."""
    cell = load(cell_text(tmp_path))
    emu = await _emulator(cell)
    dev = cell.devices["g"]
    got: list[Reading] = []
    runner = DeviceRunner(dev, cell.scans, got.extend)
    task = asyncio.create_task(runner.run())
    try:
        await until(lambda: runner.state is DeviceState.UP and dev.driver.machine.state == "idle")
        emu.unplug("g")
        await until(lambda: runner.state is DeviceState.DOWN)
        assert dev.driver.machine.state == "offline"
        await asyncio.sleep(0.3)  # a few reconnect attempts against an absent port
        emu.replug("g")
        n = len(got)
        await until(lambda: runner.state is DeviceState.UP and any(
            r.quality is Quality.GOOD and r.tag.name == "status_state" for r in got[n:]))
        assert dev.driver.machine.state == "idle" and dev.driver.stats.reconnects >= 1
        secs = dev.driver.machine.seconds()
        assert secs["offline"] > 0.2 and secs["idle"] > 0
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await runner.stop()
        await emu.stop()


@pytest.mark.parametrize("tag,dev,message", [
    ('address = "mpos.q"', "", "expected a field of the dialect (acc, acc.flood"),
    ('address = "q500.parts"', "", "expected a field of dialect 'grbl' (status.state"),
    ('address = "status.state"\naccess = "write"', "", "is not writable"),
    ('address = "cmd.reset"\naccess = "write"', "", "expected allow_reset = true"),
    ('address = "cmd.stream"\naccess = "write"', "", "expected a folder of G-code files"),
    ('address = "mpos.x"\ntype = "int16"', "", "expected float64 for 'mpos.x'"),
    ('address = "setting:x"', "", "expected setting:N"),
    ('address = "status.state"', 'port = "tcp://host"', "expected tcp://HOST:PORT"),
    ('address = "status.state"', 'dialect = "fanuc"', "expected one of 'grbl', 'haas'"),
])
def test_config_errors(tmp_path: Path, tag: str, dev: str, message: str) -> None:
    """Unknown fields list the known ones; dangerous or impossible settings are refused at load."""
    dev_keys = dev or 'dialect = "grbl"'
    if "port" not in dev_keys:
        dev_keys += f'\nport = "{tmp_path / "x"}"'
    if "dialect" not in dev_keys:
        dev_keys += '\ndialect = "grbl"'
    text = f'[cell]\nname = "x"\n[device.m]\ndriver = "cnc"\n{dev_keys}\n[device.m.tag.t]\n{tag}\n'
    with pytest.raises(ConfigError) as err:
        load(text)
    assert message in str(err.value), str(err.value)
    assert "device.m" in str(err.value)


def test_two_machines_on_one_port_are_refused(tmp_path: Path) -> None:
    """A CNC line has no device address: one port, one machine."""
    text = "[cell]\nname = \"x\"\n"
    for n in ("a", "b"):
        text += (f'[device.{n}]\ndriver = "cnc"\ndialect = "grbl"\nport = "/dev/ttyUSB0"\n'
                 f'[device.{n}.tag.s]\naddress = "status.state"\n')
    with pytest.raises(ConfigError, match="device.b.port: expected a port of its own"):
        load(text)


async def test_the_emulator_never_replaces_a_real_port_path(tmp_path: Path) -> None:
    """A port path that exists and is no pty link (a real device, a file) is left alone."""
    real = tmp_path / "grbl.tty"
    real.write_text("not a pty")
    cell = load(cell_text(tmp_path))
    emu = CncEmulator([cell.devices["g"].driver], auto=False)
    with pytest.raises(OSError, match="is not a pseudo-terminal link"):
        await emu.start()
    await emu.stop()
    assert real.read_text() == "not a pty"


async def test_fault_api_each_fault_is_felt_and_recovered_from(tmp_path: Path) -> None:
    """The faults `edged simulate` can play on a CNC machine: each one disturbs the device (bad values or
    down) and it is up with good values again after the undo."""
    cell = load(cell_text(tmp_path, timeout=0.3))
    emu = await _emulator(cell)
    runners = {n: DeviceRunner(cell.devices[n], cell.scans, [].extend) for n in ("g", "h")}
    got: dict[str, list[Reading]] = {"g": [], "h": []}
    for n, r in runners.items():
        r.deliver = got[n].extend
    tasks = [asyncio.create_task(r.run()) for r in runners.values()]
    try:
        every = (("stop", "", "start"), ("latency", "700ms", "clear"), ("drop", "1", "clear"), ("malformed", "", "clear"),
                 ("unplug", "", "replug"))
        for name, faults in (("g", every), ("h", every[:1] + every[3:])):  # (h polls once a second: fewer)
            r = runners[name]
            for fault, arg, undo in faults:
                await until(lambda: r.state is DeviceState.UP)
                n = len(got[name])
                await emu.inject(name, fault, arg)
                await until(lambda: r.state is not DeviceState.UP or any(x.quality is Quality.BAD
                                                                          for x in got[name][n:]))
                await emu.inject(name, undo)
                n = len(got[name])
                await until(lambda: r.state is DeviceState.UP and any(
                    x.quality is Quality.GOOD for x in got[name][n:]), timeout=30)
        with pytest.raises(Exception, match="cannot inject 'plc-stop'"):
            await emu.inject("g", "plc-stop")
        await cell.devices["g"].driver.write(cell.tags["g.cmd_feed_hold"], True)
        await until(lambda: emu.writes_seen()["g"] == 1)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for r in runners.values():
            await r.stop()
        await emu.stop()


async def test_a_dropped_answer_does_not_poison_later_requests(rig) -> None:
    """An answer that never comes (dropped on the line) is given up: Haas when a later request is answered
    (answers come in order), GRBL when it is older than two timeouts; reads then work on the same connection."""
    cell, emu, g, h = rig
    emu.endpoints["h"].drop = 1.0
    with pytest.raises(ReadFailed):
        await h.read("default")
    emu.endpoints["h"].drop = 0.0
    conv = h.conv
    ans = await conv.ask(102)  # another command answered: the dropped one is not coming
    assert ans.values["value"] == "VF2SSYT" and conv.unanswered == 1
    vals = _values(await h.read("default"))
    assert vals["q500_parts"] == 4523 and h.conv is conv

    emu.endpoints["g"].drop = 1.0
    with pytest.raises(ReadFailed):
        await g.read("fast")
    emu.endpoints["g"].drop = 0.0
    await asyncio.sleep(1.2)  # the dropped query is now two timeouts old
    vals = _values(await g.read("fast"))
    assert vals["status_state"] == "Idle" and g.conv.unanswered == 1
