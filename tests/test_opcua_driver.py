"""OPC UA driver against asyncua's Server on loopback: polling, subscriptions, deadband, writes, recovery."""
from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import pytest_asyncio
from asyncua import Client, ua

from edged.device import DeviceRunner
from edged.driver import GroupMode, PushSink, emulator_for
from edged.errors import WriteFailed
from edged.tag import DataType, Quality

from opcua_support import NS, VALUES, Collector, cell_text, free_port, load, set_all, until

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def served(tmp_path_factory: pytest.TempPathFactory):
    """One emulated server with the test tags and values, shared by the tests that do not change it."""
    tmp = tmp_path_factory.mktemp("opcua")
    port = free_port()
    cell = load(tmp, cell_text(port))
    emu = emulator_for([cell.devices["robot"].driver])
    await emu.start()
    set_all(emu, cell)
    await asyncio.sleep(0.1)
    yield tmp, port, cell, emu
    await emu.stop()
    emu.close()


def _driver(tmp: Path, port: int, keys: str = 'security_policy = "None"', name: str = "client.toml"):
    cell = load(tmp, cell_text(port, keys=keys), name)
    return cell, cell.devices["robot"].driver


async def test_polling_reads_every_type_and_learns_types_units_dims(served) -> None:
    tmp, port, _, _ = served
    cell, drv = _driver(tmp, port, 'security_policy = "None"\nmode = "poll"')
    assert set(drv.group_modes().values()) == {GroupMode.POLL}
    await drv.connect()
    try:
        got = {r.tag.name: r for g in ("fast", "default") for r in await drv.read(g)}
    finally:
        await drv.close()
    assert {n: r.value for n, r in got.items()} == VALUES
    assert all(r.quality == Quality.GOOD for r in got.values())
    assert isinstance(got["count"].value, int) and isinstance(got["running"].value, bool)
    assert drv.tag_info["joints"] == drv.tag_info["joints"].__class__(DataType.FLOAT64, (3,), "deg", "OPC UA Double")
    assert drv.tag_info["temp"].dtype is DataType.FLOAT32 and drv.tag_info["temp"].unit == "degC"
    assert drv.tag_info["program"].dtype is DataType.STRING  # reached by browse path
    status = drv.status()
    assert status["server_state"] == "Running" and status["gauges"]["service_level"] == 255
    assert status["gauges"]["server_running"] == 1 and status["info"]["product"]  # edged_device_fact / _info


async def test_type_learned_at_connect_and_a_mismatch_is_reported(served, caplog) -> None:
    tmp, port, _, _ = served
    tags = f"""
[device.robot.tag.axis]
address = "nsu={NS};s=Axis1"
scan = "fast"

[device.robot.tag.wrong]
address = "nsu={NS};i=1001"
type = "int16"
scan = "fast"

[device.robot.tag.gone]
address = "nsu=urn:not:there;s=X"
scan = "fast"
"""
    cell = load(tmp, cell_text(port, keys='security_policy = "None"\nmode = "poll"', tags=tags), "any.toml")
    drv = cell.devices["robot"].driver
    assert cell.tags["robot.axis"].dtype is DataType.ANY
    await drv.connect()
    try:
        got = {r.tag.name: r for r in await drv.read("fast")}
    finally:
        await drv.close()
    assert got["axis"].value == 12.5 and got["axis"].quality == Quality.GOOD
    assert drv.tag_info["axis"].dtype is DataType.FLOAT64
    assert got["wrong"].quality == Quality.BAD and got["gone"].quality == Quality.BAD
    problems = drv.status()["unresolved"]
    assert "configured type 'int16' does not fit the server's DataType OPC UA UInt32" in problems["wrong"]
    assert "namespace urn:not:there is not on the server" in problems["gone"]
    assert "configured type 'int16'" in caplog.text


async def test_subscription_delivers_values_then_changes(served) -> None:
    tmp, port, cell, emu = served
    _, drv = _driver(tmp, port, name="sub.toml")
    assert set(drv.group_modes().values()) == {GroupMode.PUSH}
    got = Collector()
    await drv.connect()
    sink = PushSink(got, asyncio.get_running_loop().time)
    task = asyncio.create_task(drv.run_push(sink))
    try:
        await until(lambda: set(got.latest) == set(VALUES), what="every initial value")
        assert {n: r.value for n, r in got.latest.items()} == VALUES
        emu.set_value(cell.tags["robot.axis"], 13.25)
        emu.set_value(cell.tags["robot.joints"], [4.0, 5.0, 6.5])
        await until(lambda: got.value("axis") == 13.25 and got.value("joints") == [4.0, 5.0, 6.5], what="changes")
        await until(lambda: "default" in sink.seen and "fast" in sink.seen, what="keep-alives of both groups")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await drv.close()
        emu.set_value(cell.tags["robot.axis"], VALUES["axis"])
        emu.set_value(cell.tags["robot.joints"], VALUES["joints"])


async def test_deadband_suppresses_small_changes(served) -> None:
    tmp, port, cell, emu = served
    _, drv = _driver(tmp, port, name="db.toml")
    got = Collector()
    await drv.connect()
    task = asyncio.create_task(drv.run_push(PushSink(got, asyncio.get_running_loop().time)))
    temp = cell.tags["robot.temp"]
    try:
        await until(lambda: got.value("temp") == 21.5 and got.value("program") == "PICK01", what="initial values")
        seen = len([r for r in got.all if r.tag.name == "temp"])
        emu.set_value(temp, 21.75)  # within the deadband of 1.0: suppressed by the server
        await asyncio.sleep(0.05)
        emu.set_value(cell.tags["robot.program"], "MARK1")  # same scan group: its delivery comes after
        await until(lambda: got.value("program") == "MARK1", what="the marker")
        await asyncio.sleep(1.2)  # a few more publishing intervals of the default group
        assert len([r for r in got.all if r.tag.name == "temp"]) == seen
        emu.set_value(temp, 25.0)  # outside the deadband
        await until(lambda: got.value("temp") == 25.0, what="the large change")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await drv.close()
        emu.set_value(temp, 21.5)
        emu.set_value(cell.tags["robot.program"], "PICK01")


async def test_uncertain_status_stays_uncertain(served) -> None:
    tmp, port, cell, emu = served
    _, drv = _driver(tmp, port, 'security_policy = "None"\nmode = "poll"', name="unc.toml")
    emu.set_status(cell.tags["robot.level"], ua.StatusCodes.UncertainLastUsableValue)
    await asyncio.sleep(0.1)
    await drv.connect()
    try:
        got = {r.tag.name: r for r in await drv.read("default")}
    finally:
        await drv.close()
        emu.set_value(cell.tags["robot.level"], VALUES["level"])
    assert got["level"].quality == Quality.UNCERTAIN and got["level"].value == -7
    assert got["program"].quality == Quality.GOOD


async def test_write_reaches_the_server_as_a_value_only(served) -> None:
    tmp, port, cell, emu = served
    from edged.drivers.opcua.emulator import WRITE_LOG

    cell2, drv = _driver(tmp, port, name="wr.toml")
    await drv.connect()
    try:
        WRITE_LOG.clear()
        await drv.write(cell2.tags["robot.speed"], 75)  # an int for a Double node: typed to the node
        with pytest.raises(WriteFailed):
            await drv.write(cell2.tags["robot.speed"], "fast")
    finally:
        await drv.close()
    assert emu.get_value(cell.tags["robot.speed"]) == 75.0
    node = emu.nodeid(cell.tags["robot.speed"])
    # what arrived on the wire: the DataValue encoding mask has the value bit only (no status, no timestamps)
    assert [(n, mask) for n, mask in WRITE_LOG] == [(node, 0x01)]
    # the emulated server is strict like other stacks: a write with a timestamp (asyncua's default) is refused
    client = Client(f"opc.tcp://127.0.0.1:{port}")
    async with client:
        with pytest.raises(ua.UaStatusCodeError):
            await client.get_node(node).write_value(ua.Variant(80.0, ua.VariantType.Double))
    assert emu.get_value(cell.tags["robot.speed"]) == 75.0
    emu.set_value(cell.tags["robot.speed"], VALUES["speed"])


def _runner(cell, got: Collector) -> DeviceRunner:
    return DeviceRunner(cell.devices["robot"], cell.scans, got)


async def test_restart_with_another_namespace_order_is_recovered(tmp_path: Path) -> None:
    port = free_port()
    cell = load(tmp_path, cell_text(port))
    emu = emulator_for([cell.devices["robot"].driver])
    await emu.start()
    set_all(emu, cell)
    client_cell = load(tmp_path, cell_text(port), "client.toml")
    got = Collector()
    runner = _runner(client_cell, got)
    task = asyncio.create_task(runner.run())
    try:
        await until(lambda: got.value("axis") == 12.5 and got.value("program") == "PICK01", what="first values")
        before = emu.nodeid(cell.tags["robot.axis"]).NamespaceIndex
        await emu.restart(namespace_order=["urn:someone:else", "urn:another:one"])
        assert emu.nodeid(cell.tags["robot.axis"]).NamespaceIndex == before + 2
        await until(lambda: runner.connects >= 2, what="a reconnect")
        await until(lambda: all(got.quality(n) == Quality.GOOD for n in VALUES), what="good values again")
        assert {n: got.value(n) for n in VALUES if n != "level"} == {n: v for n, v in VALUES.items() if n != "level"}
        emu.set_value(cell.tags["robot.axis"], 99.0)
        await until(lambda: got.value("axis") == 99.0, what="changes after the restart")
        assert client_cell.devices["robot"].driver.stats.reconnects >= 1
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await runner.stop()
        await emu.stop()
        emu.close()


@pytest.mark.filterwarnings("ignore:coroutine 'MonitoredItemService.datachange_callback' was never awaited")
async def test_a_deleted_node_affects_only_its_own_tag(tmp_path: Path) -> None:
    port = free_port()
    cell = load(tmp_path, cell_text(port))
    emu = emulator_for([cell.devices["robot"].driver])
    await emu.start()
    set_all(emu, cell)
    client_cell = load(tmp_path, cell_text(port), "client.toml")
    got = Collector()
    runner = _runner(client_cell, got)
    task = asyncio.create_task(runner.run())
    try:
        await until(lambda: got.value("axis") == 12.5 and got.value("count") == 42, what="first values")
        await emu.delete_node(cell.tags["robot.count"])
        await until(lambda: got.quality("count") == Quality.BAD, what="the deleted node's tag bad")
        emu.set_value(cell.tags["robot.axis"], 7.5)
        await until(lambda: got.value("axis") == 7.5, what="other tags still updating")
        assert got.quality("axis") == Quality.GOOD and runner.connects == 1
        await emu.restore_node(cell.tags["robot.count"])
        emu.set_value(cell.tags["robot.count"], 43)
        await until(lambda: got.value("count") == 43, what="the node retried after it came back")
        assert runner.connects == 1  # the session was never ended
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await runner.stop()
        await emu.stop()
        emu.close()


async def test_a_subscription_that_stops_publishing_goes_stale_and_is_recreated(tmp_path: Path) -> None:
    port = free_port()
    cell = load(tmp_path, cell_text(port))
    emu = emulator_for([cell.devices["robot"].driver])
    await emu.start()
    set_all(emu, cell)
    client_cell = load(tmp_path, cell_text(port), "client.toml")
    drv = client_cell.devices["robot"].driver
    got = Collector()
    current: dict = {}

    def deliver(readings) -> None:
        got(readings)
        for r in readings:
            current[r.tag.key] = (r.value, int(r.quality), r.ts_ns)

    runner = DeviceRunner(client_cell.devices["robot"], client_cell.scans, deliver, current=current)
    task = asyncio.create_task(runner.run())
    try:
        await until(lambda: got.value("axis") == 12.5, what="first values")
        emu.stop_publishing()
        await until(lambda: any(r.tag.name == "axis" and r.quality == Quality.UNCERTAIN for r in got.all),
                    what="stale values (uncertain)")
        await until(lambda: sum(s["recreated"] for s in drv.status()["subscriptions"].values()) >= 1,
                    what="the subscription re-created")
        emu.set_value(cell.tags["robot.axis"], 1.5)
        await until(lambda: got.value("axis") == 1.5 and got.quality("axis") == Quality.GOOD, what="fresh values")
        assert runner.connects == 1 and drv.stats.errors.get("subscription_silent", 0) >= 1
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await runner.stop()
        await emu.stop()
        emu.close()


async def test_a_namespace_and_node_added_later_are_picked_up_without_reconnecting(tmp_path: Path) -> None:
    port = free_port()
    cell = load(tmp_path, cell_text(port))
    emu = emulator_for([cell.devices["robot"].driver])
    await emu.start()
    set_all(emu, cell)
    late = '\n[device.robot.tag.late]\naddress = "nsu=urn:loaded:later;s=Late"\ntype = "int32"\nscan = "fast"\n'
    client_cell = load(tmp_path, cell_text(port, tags=__import__("opcua_support").TAGS + late), "client.toml")
    drv = client_cell.devices["robot"].driver
    got = Collector()
    await drv.connect()
    task = asyncio.create_task(drv.run_push(PushSink(got, asyncio.get_running_loop().time)))
    try:
        await until(lambda: got.value("axis") == 12.5 and got.quality("late") == Quality.BAD, what="late tag bad")
        assert "namespace urn:loaded:later is not on the server" in drv.status()["unresolved"]["late"]
        await emu.call("robot", lambda server: server.register_namespace("urn:loaded:later"))  # the PLC loads its program
        await emu.restore_node(client_cell.tags["robot.late"])
        emu.set_value(client_cell.tags["robot.late"], 5)
        await until(lambda: got.value("late") == 5, what="the late tag resolved and subscribed")
        assert drv.tag_info["late"].dtype is DataType.INT32 and drv.stats.reconnects == 0
        assert got.value("axis") == 12.5 and "late" not in drv.status()["unresolved"]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await drv.close()
        await emu.stop()
        emu.close()


async def test_polling_respects_the_servers_max_nodes_per_read(served) -> None:
    tmp, port, _, emu = served
    limit_id = ua.NodeId(ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerRead)
    old = await emu.call("robot", lambda server: server.get_node(limit_id).read_value())

    async def set_limit(value: int) -> None:
        await emu.call("robot", lambda server: server.get_node(limit_id).write_value(
            ua.Variant(value, ua.VariantType.UInt32)))

    await set_limit(2)
    _, drv = _driver(tmp, port, 'security_policy = "None"\nmode = "poll"', name="limit.toml")
    try:
        await drv.connect()
        before = drv.stats.requests
        got = await drv.read("default")
        assert drv.stats.requests - before == 3  # 6 tags, at most 2 per Read
        assert {r.tag.name: r.value for r in got} == {n: VALUES[n] for n in ("program", "joints", "level", "when",
                                                                               "temp", "speed")}
        assert drv.status()["operation_limits"]["read"] == 2
    finally:
        await drv.close()
        await set_limit(old)


@pytest.mark.filterwarnings("ignore:coroutine 'MonitoredItemService.datachange_callback' was never awaited")
async def test_hil_faults_stop_start_and_namespace_restart(tmp_path: Path) -> None:
    port = free_port()
    cell = load(tmp_path, cell_text(port))
    emu = emulator_for([cell.devices["robot"].driver])
    assert {"stop", "start", "namespace-restart", "stop-publishing"} <= emu.faults
    await emu.start()
    set_all(emu, cell)
    client_cell = load(tmp_path, cell_text(port), "client.toml")
    got = Collector()
    runner = _runner(client_cell, got)
    task = asyncio.create_task(runner.run())
    try:
        await until(lambda: got.value("axis") == 12.5, what="first values")
        await emu.inject("robot", "stop")
        await until(lambda: got.quality("axis") == Quality.BAD, what="bad while the server is away")
        await emu.inject("robot", "start")
        await until(lambda: got.value("axis") == 12.5 and runner.connects >= 2, what="values after start")
        before = emu.nodeid(cell.tags["robot.axis"]).NamespaceIndex
        connects = runner.connects
        emu.set_value(cell.tags["robot.axis"], 3.25)
        await until(lambda: got.value("axis") == 3.25, what="a change before the restart")
        await emu.inject("robot", "namespace-restart")
        assert emu.nodeid(cell.tags["robot.axis"]).NamespaceIndex == before + 1
        await until(lambda: runner.connects > connects and all(got.quality(n) == Quality.GOOD for n in VALUES),
                    what="every tag good after the namespace restart")
        assert got.value("axis") == 3.25 and got.value("program") == "PICK01"
        await drv_write_and_check(client_cell, emu)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await runner.stop()
        await emu.stop()
        emu.close()


async def drv_write_and_check(client_cell, emu) -> None:
    """A write through the driver after the renumbering reaches the renumbered node."""
    drv = client_cell.devices["robot"].driver
    await drv.write(client_cell.tags["robot.speed"], 33.0)
    assert emu.get_value(client_cell.tags["robot.speed"]) == 33.0
    assert emu.writes_seen()["robot"] >= 1
