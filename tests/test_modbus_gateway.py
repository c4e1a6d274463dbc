"""One silent unit behind a Modbus/TCP gateway never takes its neighbours down (issue 7.2)."""
from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from daemon_support import Proc, eventually, free_port, metric, scrape
from edged.drivers.modbus.driver import ModbusDriver
from edged.errors import DeviceUnavailable
from edged.tag import Quality
from hostile_modbus import REAL_BASE, HostileServer
from modbus_support import load_devices, tcp_device

pytestmark = pytest.mark.timeout(120)


def gateway_doc(port: int, client: str = "edged", **keys: Any) -> str:
    tags: dict[str, dict[str, Any]] = {f"t{i}": {"address": f"hr:{i}", "type": "uint16"} for i in range(9)}
    tags["far"] = {"address": "hr:0", "type": "uint16", "unit_id": 9}
    keys.setdefault("timeout_s", 0.5)  # generous: unit 1 must never time out, even on a busy machine
    keys.setdefault("backoff_initial_s", 30.0)
    keys.setdefault("backoff_max_s", 60.0)
    return tcp_device("gw", port, tags, client=client, **keys)


async def test_a_silent_unit_marks_only_its_tags_bad_and_backs_off_alone() -> None:
    server = HostileServer("ok", silent={9})
    port = await server.start()
    devices, _ = load_devices(gateway_doc(port))
    drv: ModbusDriver = devices["gw"].driver
    try:
        await drv.connect()
        for scan in range(5):
            before = server.requests
            readings = {r.tag.name: r for r in await drv.read("default")}
            assert all(readings[f"t{i}"].quality is Quality.GOOD and readings[f"t{i}"].value == REAL_BASE + i
                       for i in range(9))
            assert readings["far"].quality is Quality.BAD and readings["far"].value is None
            # the first scan asks unit 9 once; while it is backed off (30 s) it is not asked at all
            assert server.requests - before == (2 if scan == 0 else 1)
            assert drv.stats.unit_state == {"unit 1": "up", "unit 9": "silent" if scan == 0 else "backoff"}
        assert drv.stats.timeouts == 1 and server.accepts == 1 and drv.stats.reconnects == 0
    finally:
        await drv.close()
        await server.stop()


async def test_a_silent_unit_is_probed_once_per_backoff_period_and_comes_back() -> None:
    server = HostileServer("ok", silent={9})
    port = await server.start()
    devices, _ = load_devices(gateway_doc(port, backoff_initial_s=0.1, backoff_max_s=0.2))
    drv: ModbusDriver = devices["gw"].driver
    try:
        await drv.connect()
        for _ in range(200):                            # bounded by the backoff, not by wall time
            await drv.read("default")
            if drv.stats.timeouts >= 2:
                break
            await asyncio.sleep(0.02)
        assert drv.stats.timeouts == 2                  # probed again after its (short) backoff
        assert server.accepts == 1                      # ... on the same connection
        server.silent.clear()
        readings: dict = {}
        for _ in range(50):                             # bounded by the backoff, not by wall time
            readings = {r.tag.name: r for r in await drv.read("default")}
            if readings["far"].quality is Quality.GOOD:
                break
            await asyncio.sleep(0.02)
        assert readings["far"].value == REAL_BASE and drv.stats.unit_state["unit 9"] == "up"
    finally:
        await drv.close()
        await server.stop()


@pytest.mark.parametrize("max_outstanding", [1, 4])
async def test_a_late_answer_is_discarded_by_its_transaction_id_without_dropping_the_connection(
        max_outstanding: int) -> None:
    server = HostileServer("ok", late={9}, late_s=1.0)
    port = await server.start()
    devices, _ = load_devices(gateway_doc(port, max_outstanding=max_outstanding, backoff_initial_s=0.1,
                                          backoff_max_s=0.1))
    drv: ModbusDriver = devices["gw"].driver
    try:
        await drv.connect()
        for _ in range(8):
            readings = {r.tag.name: r for r in await drv.read("default")}
            assert [readings[f"t{i}"].value for i in range(9)] == [REAL_BASE + i for i in range(9)]
            assert readings["far"].quality is Quality.BAD
            await asyncio.sleep(0.05)
        assert drv.stats.errors.get("late", 0) >= 1
        assert server.accepts == 1 and "malformed" not in drv.stats.errors
    finally:
        await drv.close()
        await server.stop()


@pytest.mark.parametrize("client", ["edged", "pymodbus"])
async def test_a_silent_link_drops_the_connection(client: str) -> None:
    server = HostileServer("ok", silent={1, 9})
    port = await server.start()
    devices, _ = load_devices(gateway_doc(port, client))
    drv: ModbusDriver = devices["gw"].driver
    try:
        await drv.connect()
        with pytest.raises(DeviceUnavailable, match="no response within 0.5 s"):
            await drv.read("default")
        assert drv.stats.timeouts == 2                  # link_timeouts defaults to the 2 units of the device
        assert set(drv.stats.unit_state.values()) == {"down"}
    finally:
        await drv.close()
        await server.stop()


async def test_link_timeouts_key_sets_how_many_timeouts_mean_a_silent_link() -> None:
    server = HostileServer("ok", silent={1, 9})
    port = await server.start()
    devices, _ = load_devices(gateway_doc(port, link_timeouts=1))
    drv: ModbusDriver = devices["gw"].driver
    try:
        await drv.connect()
        with pytest.raises(DeviceUnavailable):
            await drv.read("default")
        assert drv.stats.timeouts == 1
    finally:
        await drv.close()
        await server.stop()


async def test_pymodbus_client_isolates_the_silent_unit_too() -> None:
    """client = "pymodbus" keeps the other units' tags good; it reopens the connection after a timeout."""
    server = HostileServer("ok", silent={9})
    port = await server.start()
    devices, _ = load_devices(gateway_doc(port, "pymodbus"))
    drv: ModbusDriver = devices["gw"].driver
    try:
        await drv.connect()
        for _ in range(3):
            readings = {r.tag.name: r for r in await drv.read("default")}
            assert [readings[f"t{i}"].value for i in range(9)] == [REAL_BASE + i for i in range(9)]
            assert readings["far"].quality is Quality.BAD
        assert drv.stats.timeouts == 1
    finally:
        await drv.close()
        await server.stop()


def test_daemon_run_and_read_against_a_gateway_with_one_silent_unit(tmp_path: Path) -> None:
    server = HostileServer("ok", silent={9})
    port = server.start_in_thread()
    mport = free_port()
    cell = tmp_path / "cell.toml"
    cell.write_text(f'[cell]\nname = "g"\nstate_dir = "{tmp_path / "state"}"\nheartbeat_s = 0\n'
                    f'[metrics]\nlisten = "127.0.0.1:{mport}"\n[scan.default]\ninterval_ms = 100\n'
                    + gateway_doc(port, timeout_s=0.5, backoff_initial_s=0.5, backoff_max_s=2.0))
    # (a probe of unit 9 holds the 100 ms scan for timeout_s = 0.5 s, below the runtime's 1 s staleness limit)
    url = f"http://127.0.0.1:{mport}/metrics"
    try:
        r = Proc(["read", "-c", str(cell), "--json"], tmp_path)
        assert r.wait() == 0, r.stderr                         # the device was read (one unit of it bad)
        rows = {row["tag"]: row for row in json.loads(r.stdout)}
        assert all(rows[f"gw.t{i}"]["quality"] == "good" and rows[f"gw.t{i}"]["value"] == REAL_BASE + i
                   for i in range(9)), rows
        assert rows["gw.far"]["quality"] == "bad" and "Traceback" not in r.stderr
        assert server.accepts == 1
        d = Proc(["run", "-c", str(cell)], tmp_path)
        try:
            eventually(lambda: metric(scrape(url), "edged_device_state", device="gw", state="degraded") == 1.0, 30,
                       what="gw degraded")
            # several backoff periods of unit 9 go by, the device never goes down and keeps its connection
            eventually(lambda: (metric(scrape(url), "edged_device_timeouts_total", device="gw") or 0) >= 3, 30,
                       what="unit 9 probed again")
            text = scrape(url)
            assert metric(text, "edged_device_state", device="gw", state="degraded") == 1.0
            assert metric(text, "edged_device_unit_up", device="gw", unit="unit 1") == 1.0
            assert metric(text, "edged_device_unit_up", device="gw", unit="unit 9") == 0.0
        finally:
            code = d.stop()
        assert code == 0, d.stderr
        assert server.accepts == 2, d.stderr                   # one for `edged read`, one for `edged run`
        assert "-> down" not in d.stderr and "Traceback" not in d.stderr
        samples = [json.loads(x) for x in (tmp_path / "state" / "samples.jsonl").read_text().splitlines()
                   if x.strip()]
        t0 = [s for s in samples if s.get("tag") == "t0"]
        assert t0 and all(s["quality"] == "good" and s["value"] == REAL_BASE for s in t0)
        assert {s["quality"] for s in samples if s.get("tag") == "far"} == {"bad"}
    finally:
        server.stop_thread()


async def test_a_cancelled_scan_is_no_timeout_and_its_answer_is_discarded() -> None:
    server = HostileServer("ok", late={1}, late_s=0.3)
    port = await server.start()
    devices, _ = load_devices(gateway_doc(port, timeout_s=2.0))
    drv: ModbusDriver = devices["gw"].driver
    try:
        await drv.connect()
        task = asyncio.create_task(drv.read("default"))
        while server.requests == 0:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        server.late.clear()
        server.silent.add(9)
        for _ in range(100):                            # until the cancelled request's answer came and went
            if not drv._link.pending:
                break
            await asyncio.sleep(0.02)
        assert not drv._link.pending and drv.stats.timeouts == 0
        readings = {r.tag.name: r for r in await drv.read("default")}
        assert [readings[f"t{i}"].value for i in range(9)] == [REAL_BASE + i for i in range(9)]
        assert drv.stats.unit_state["unit 1"] == "up" and server.accepts == 1
    finally:
        await drv.close()
        await server.stop()


@pytest.mark.parametrize("max_outstanding", [1, 3])
async def test_max_outstanding_bounds_the_requests_in_flight(max_outstanding: int) -> None:
    server = HostileServer("ok")
    server.hold = True                                         # no answer until released
    port = await server.start()
    tags = {f"b{i}": {"address": f"hr:{i * 100}", "type": "uint16"} for i in range(4)}   # 4 requests
    devices, _ = load_devices(tcp_device("p", port, tags, timeout_s=30.0, max_outstanding=max_outstanding))
    drv: ModbusDriver = devices["p"].driver
    try:
        await drv.connect()
        task = asyncio.create_task(drv.read("default"))
        while server.requests < max_outstanding:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)                               # time to send more, were it allowed to
        assert server.requests == max_outstanding               # no answer has left the server yet
        server.release()
        readings = await task
        assert [r.value for r in readings] == [REAL_BASE + i * 100 for i in range(4)]
    finally:
        await drv.close()
        await server.stop()


async def test_each_request_expires_at_its_own_deadline() -> None:
    """One timer per connection, armed for the earliest deadline, even when a later request has a shorter timeout."""
    from edged.drivers.modbus.line import LinkDown, LinkTimeout
    from edged.drivers.modbus.tcp import MbapLink, read_frame_maker

    server = HostileServer("ok", silent={1})
    port = await server.start()
    events: list[tuple[str, int]] = []
    link = MbapLink("127.0.0.1", port, max_outstanding=2, on_event=lambda kind, unit: events.append((kind, unit)))
    try:
        await link.open(5.0)
        await link.acquire()
        slow = link.send(1, read_frame_maker(1, 3, 0, 1), 30.0)
        await link.acquire()
        fast = link.send(1, read_frame_maker(1, 3, 0, 1), 0.1)
        with pytest.raises(LinkTimeout):
            await fast
        assert not slow.done() and events == [("timeout", 1)]
    finally:
        link.drop()
        await server.stop()
    assert isinstance(slow.exception(), LinkDown)              # failed by drop(), not left hanging
