"""The S7 driver against the emulator and against snap7.server.Server: types, bit writes, errors, timeouts, recovery."""
from __future__ import annotations

import asyncio
import socket
import struct
import threading

import pytest
from snap7.server import Server
from snap7.type import Area, SrvArea

from edged.drivers.s7.wire import ItemSpec, WL_BIT, build_write
from edged.errors import DeviceUnavailable, ReadFailed, WriteFailed
from edged.tag import Quality
from edged.writes import check_write
from s7_support import by_name, device_doc, emulated, free_port, good, load

pytestmark = pytest.mark.timeout(120)

F32 = 3.4028234663852886e38
LIMITS = {
    "DB1:0:BYTE": [0, 255], "DB1:1:SINT": [-128, 127], "DB1:2:WORD": [0, 65535], "DB1:4:INT": [-32768, 32767],
    "DB1:6:UINT": [65535, 0], "DB1:8:DWORD": [0, 2**32 - 1], "DB1:12:DINT": [-2**31, 2**31 - 1],
    "DB1:16:UDINT": [2**32 - 1, 0], "DB1:20:LINT": [-2**63, 2**63 - 1], "DB1:28:ULINT": [2**64 - 1, 0],
    "DB1:36:LWORD": [2**64 - 1, 1], "DB1:44:REAL": [-F32, F32, 1.5], "DB1:48:LREAL": [1.7976931348623157e308, -5e-324],
    "DB1:56:CHAR": ["A", "\u00ff"], "DB1:58:STRING[10]": ["", "0123456789", "\u00e9t\u00e9"],
    "DB1:70:WSTRING[4]": ["\u65e5\u672c", ""], "DB1:82:TIME": [-2**31, 2**31 - 1],
    "DB1:86:LTIME": [2**63 - 1, -2**63], "DB1:94:TOD": ["23:59:59.999", "00:00:00.000"],
    "DB1:98:INT[3]": [[-32768, 0, 32767]], "DB1:104:REAL[2]": [[1.5, -2.25]],
    "%MW20:INT": [-1, 7], "%QB4": [255, 0], "%MD30:REAL": [0.5],
    "DB1.DBX112.0": [True, False], "%M40.7": [True, False], "%Q6.3": [True, False],
}
# datetime values go through write() directly: the core's write path has no datetime coercion yet
DATETIMES = {"DB2:0:DATE": ["1990-01-01", "2169-06-06"], "DB2:2:DT": ["1990-01-01T00:00:00.000", "2089-12-31T23:59:59.999"],
             "DB2:10:DTL": ["1970-01-01T00:00:00.000000", "2262-04-11T23:47:16.854775"]}


def tag_tables(addrs: list[str], access: str = "write") -> str:
    return "\n".join(f'[device.plc.tag.t{i}]\naddress = "{a}"\naccess = "{access}"\n' for i, a in enumerate(addrs))


class PlainServer:
    """snap7.server.Server (the library's, unmodified) with the areas of the round-trip table, as an emulator stand-in."""

    def __init__(self, port: int) -> None:
        self.srv = Server(log=False)
        for area, index, size in ((SrvArea.DB, 1, 120), (SrvArea.DB, 2, 32), (SrvArea.MK, 0, 48),
                                  (SrvArea.PA, 0, 8)):
            self.srv.register_area(area, index, bytearray(size))
        self.srv.start(tcp_port=port)

    def get_value(self, tag):
        from edged.drivers.s7.codec import decoder
        a = tag.addr
        mem = self.srv.memory_areas[(a.area, a.db if a.area is Area.DB else 0)]
        return decoder(a)(bytes(mem), a.byte)

    async def stop(self) -> None:
        self.srv.stop()


@pytest.mark.parametrize("server", ["emulator", "snap7.server.Server"])
async def test_every_type_round_trips_at_its_limits(server: str) -> None:
    # the library's server writes a bit write's byte whole (see test_plain_snap7_server_clobbers_bit_neighbours),
    # so single bits are left to the emulator there
    addrs = [a for a in list(LIMITS) + list(DATETIMES) if server == "emulator" or ".DBX" not in a and "%M40" not in a
             and "%Q6" not in a]
    doc = device_doc(free_port(), tag_tables(addrs))
    if server == "emulator":
        drv, tags, emu = await emulated(doc)
    else:
        drivers, all_tags = load(doc)
        drv = drivers["plc"]
        tags = {t.name: t for t in all_tags.values()}
        emu = PlainServer(drv.settings.port)
        await drv.connect()
    values = {**LIMITS, **DATETIMES}
    try:
        rounds = max(len(v) for v in values.values())
        for k in range(rounds):
            for i, addr in enumerate(addrs):
                vs = values[addr]
                v = vs[k % len(vs)]
                tag = tags[f"t{i}"]
                await drv.write(tag, v if addr in DATETIMES or tag.is_array else check_write(tag, v))
            got = by_name(await drv.read("default"))
            for i, addr in enumerate(addrs):
                vs = values[addr]
                want = vs[k % len(vs)]
                r = got[f"t{i}"]
                assert r.quality is Quality.GOOD, addr
                assert r.value == (pytest.approx(want) if isinstance(want, (float, list)) else want), addr
                assert emu.get_value(tags[f"t{i}"]) == r.value
        assert drv.stats.writes == rounds * len(addrs) and drv.stats.errors == {}
    finally:
        await drv.close()
        await emu.stop()


async def test_plain_snap7_server_clobbers_bit_neighbours(plain_server) -> None:
    """Why the emulator handles bit writes itself: the library's server writes the bit's whole byte."""
    srv, port = plain_server
    drivers, tags = load(device_doc(port, '[device.plc.tag.b3]\naddress = "%M0.3"\naccess = "write"\n'))
    drv = drivers["plc"]
    await drv.connect()
    try:
        srv.memory_areas[(Area.MK, 0)][0] = 0xF0
        await drv.write(tags["plc.b3"], True)   # an S7 bit write: transport size BIT, bit address 3
        assert srv.memory_areas[(Area.MK, 0)][0] == 0x01   # not 0xF8
    finally:
        await drv.close()


async def test_emulated_values_scale_and_identity_and_negotiated_pdu() -> None:
    doc = device_doc(free_port(), """
[device.plc.tag.speed]
address = "%DB1.DBD0"
type = "float32"
scale = 2.0
[device.plc.tag.count]
address = "DB1,DINT4"
""", extra="pdu_size = 960")
    drv, tags, emu = await emulated(doc)
    try:
        emu.set_value(tags["speed"], 3.0)
        emu.set_value(tags["count"], 123456)
        assert good(await drv.read("default")) == {"speed": 3.0, "count": 123456}
        st = drv.status()
        assert st["gauges"] == {"pdu_requested": 960, "pdu_negotiated": 480, "cpu_run": 1}   # capped: replanned
        assert drv.pdu_size == 480 and st["info"]["order_code"].startswith("6ES7") and st["info"]["module_name"]
        assert st["cpu_state"] == "run"
    finally:
        await drv.close()
        await emu.stop()


def _raw_bit_writer(port: int, byte: int, bits: list[int], stop: threading.Event, done: list[int]) -> None:
    """Another client: toggles neighbouring bits with S7 bit writes until stopped."""
    from snap7.connection import ISOTCPConnection
    from edged.drivers.s7.wire import parse_write
    conn = ISOTCPConnection("127.0.0.1", port, 0x0100, 0x0101)
    conn.connect(5.0)
    try:
        from edged.drivers.s7.wire import build_setup
        conn.send_data(build_setup(1, 480))
        conn.receive_data()
        seq, value = 1, 0
        while not stop.is_set():
            value ^= 1
            for b in bits:
                seq += 1
                conn.send_data(build_write(seq, ItemSpec(0x84, 1, byte, 1, WL_BIT, b), bytes([value])))
                assert parse_write(conn.receive_data(), seq) == 0xFF
            done.append(value)
    finally:
        conn.disconnect()


async def test_bit_writes_leave_neighbours_intact_while_another_client_toggles_them() -> None:
    port = free_port()
    drv, tags, emu = await emulated(device_doc(port, """
[device.plc.tag.mine]
address = "%DB1.DBX4.3"
access = "write"
[device.plc.tag.byte4]
address = "%DB1.DBB4"
"""))
    stop, done = threading.Event(), []
    other = threading.Thread(target=_raw_bit_writer, args=(port, 4, [0, 1, 2, 4, 5, 6, 7], stop, done))
    other.start()
    try:
        for i in range(60):
            await drv.write(tags["mine"], i % 2 == 0)
            assert bool(emu.get_value(tags["byte4"]) & 0x08) == (i % 2 == 0)
        while len(done) < 3:
            await asyncio.sleep(0.01)
    finally:
        stop.set()
        await asyncio.to_thread(other.join, 10)
    try:
        last = done[-1]
        byte = emu.get_value(tags["byte4"])
        assert byte & 0x08 == 0   # our last write (i = 59) cleared bit 3
        assert byte & 0xF7 == (0xF7 if last else 0)   # the other client's bits are all its last value
    finally:
        await drv.close()
        await emu.stop()


@pytest.fixture
def plain_server():
    """snap7.server.Server with DB1 (20 bytes) and M (16 bytes), on a free port."""
    srv = Server(log=False)
    db1 = bytearray(20)
    struct.pack_into(">f", db1, 0, 2.5)
    srv.register_area(SrvArea.DB, 1, db1)
    srv.register_area(SrvArea.MK, 0, bytearray(16))
    port = free_port()
    srv.start(tcp_port=port)
    yield srv, port
    srv.stop()


async def test_missing_db_and_out_of_range_give_specific_errors(plain_server, caplog) -> None:
    srv, port = plain_server
    drivers, _ = load(device_doc(port, """
[device.plc.tag.ok]
address = "%DB1.DBD0:REAL"
[device.plc.tag.nodb]
address = "%DB7.DBW0"
[device.plc.tag.beyond]
address = "%DB1.DBD40:REAL"
"""))
    drv = drivers["plc"]
    await drv.connect()
    try:
        for _ in range(3):
            rs = by_name(await drv.read("default"))
        assert rs["ok"].quality is Quality.GOOD and rs["ok"].value == 2.5
        assert rs["nodb"].quality is Quality.BAD and rs["nodb"].value is None
        assert rs["beyond"].quality is Quality.BAD and rs["beyond"].value is None
        assert drv.stats.errors == {"no_db": 3, "out_of_range": 3}
        text = caplog.text
        assert text.count("DB7 does not exist") == 1   # logged once per state change
        assert "DB1.DBB40..DBB43 is out of range" in text and "Optimized block access" in text
        assert drv.status()["cpu_state"] == "unknown"   # this server has no SZL 0x0424
    finally:
        await drv.close()


async def test_put_get_off_optimized_db_and_stop_state() -> None:
    doc = device_doc(free_port(), """
[device.plc.tag.a]
address = "%DB1.DBD0:REAL"
[device.plc.tag.b]
address = "%DB2.DBW0"
[device.plc.tag.w]
address = "%MW0"
access = "write"
""", extra="cpu_state_s = 0")
    drv, tags, emu = await emulated(doc)
    try:
        emu.set_optimized(2)
        rs = by_name(await drv.read("default"))
        assert rs["a"].quality is Quality.GOOD and rs["b"].quality is Quality.BAD
        assert drv.stats.errors == {"optimized_db": 1}
        emu.set_optimized(2, False)
        emu.set_put_get(False)
        with pytest.raises(ReadFailed, match="Permit access with PUT/GET") as ei:
            await drv.read("default")
        assert ei.value.kind == "access_denied" and drv.stats.errors["access_denied"] == 1
        with pytest.raises(WriteFailed, match="PUT/GET"):
            await drv.write(tags["w"], 5)
        emu.set_put_get(True)
        assert all(r.quality is Quality.GOOD for r in await drv.read("default"))
        # STOP: the CPU state is read every cpu_state_s (0 here: never), so set it and let a reconnect see it
        emu.set_cpu_state("stop")
        await drv.connect()
        assert {r.quality for r in await drv.read("default")} == {Quality.UNCERTAIN}
        assert drv.stats.errors["cpu_stop"] == 1 and drv.status()["cpu_state"] == "stop"
        emu.set_cpu_state("run")
        await drv.connect()
        assert {r.quality for r in await drv.read("default")} == {Quality.GOOD}
    finally:
        await drv.close()
        await emu.stop()


async def test_cpu_state_is_polled_during_reads() -> None:
    drv, tags, emu = await emulated(device_doc(free_port(), '[device.plc.tag.a]\naddress = "%MW0"\n',
                                               extra="cpu_state_s = 0.01"))
    try:
        emu.set_cpu_state("stop")
        for _ in range(200):
            rs = await drv.read("default")
            if rs[0].quality is Quality.UNCERTAIN:
                break
            await asyncio.sleep(0.01)
        assert rs[0].quality is Quality.UNCERTAIN and drv.stats.errors.get("cpu_stop") == 1
    finally:
        await drv.close()
        await emu.stop()


async def test_wrong_rack_slot_is_refused_with_a_hint() -> None:
    port = free_port()
    drivers, _ = load(device_doc(port, '[device.plc.tag.a]\naddress = "%MW0"\n'))
    emu_driver = drivers["plc"]
    from edged.drivers.s7.emulator import S7Emulator
    emu = S7Emulator([emu_driver])   # accepts rack 0 slot 1
    await emu.start()
    wrong, _ = load(device_doc(port, '[device.plc.tag.a]\naddress = "%MW0"\n', extra="rack = 0\nslot = 3"))
    drv = wrong["plc"]
    try:
        with pytest.raises(DeviceUnavailable, match="refused the ISO connection for rack 0 slot 3.*check rack and slot"):
            await drv.connect()
        assert drv.stats.errors == {"iso_refused": 1}
        await emu_driver.connect()   # the right slot connects
        assert good(await emu_driver.read("default")) == {"a": 0}
    finally:
        await drv.close()
        await emu_driver.close()
        await emu.stop()


async def test_server_that_accepts_tcp_but_never_answers_costs_only_its_timeout() -> None:
    accepted = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)
        await reader.read(65536)   # swallow the connection request; never answer

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    drivers, _ = load(device_doc(port, '[device.plc.tag.a]\naddress = "%MW0"\n'))
    drv = drivers["plc"]
    try:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        with pytest.raises(DeviceUnavailable, match="did not answer the ISO connection request within 0.3 s"):
            await drv.connect()
        took = loop.time() - t0
        assert accepted and drv.stats.timeouts == 1 and drv.stats.errors == {"timeout": 1}
        assert took < 60   # bounded (the socket timeout applies; no fixed library default of 5 s per step)
    finally:
        await drv.close()
        for w in accepted:
            w.close()
        server.close()
        await server.wait_closed()


async def test_late_answer_is_never_taken_for_the_next_request() -> None:
    drv, tags, emu = await emulated(device_doc(free_port(), """
[device.plc.tag.a]
address = "%MW0"
[device.plc.tag.b]
address = "%MW2"
"""))
    try:
        emu.set_value(tags["a"], 1)
        emu.set_value(tags["b"], 2)
        emu.set_delay(0.8)   # longer than timeout_s = 0.3
        with pytest.raises(DeviceUnavailable, match="no answer within 0.3 s"):
            await drv.read("default")
        assert drv.stats.timeouts == 1
        with pytest.raises(DeviceUnavailable, match="not connected"):
            await drv.read("default")   # the connection was dropped: nothing of it is read again
        emu.set_delay(0)
        emu.set_value(tags["a"], 10)
        emu.set_value(tags["b"], 20)
        await drv.connect()
        assert good(await drv.read("default")) == {"a": 10, "b": 20}
        assert drv.stats.reconnects == 1
    finally:
        await drv.close()
        await emu.stop()


async def test_server_stopped_and_restarted_is_recovered_without_stale_values() -> None:
    drv, tags, emu = await emulated(device_doc(free_port(), '[device.plc.tag.a]\naddress = "%MW0"\n'))
    try:
        emu.set_value(tags["a"], 1)
        assert good(await drv.read("default")) == {"a": 1}
        await emu.stop()
        with pytest.raises(DeviceUnavailable):
            await drv.read("default")
        with pytest.raises(DeviceUnavailable):
            await drv.connect()
        emu.set_value(tags["a"], 2)
        await emu.start()
        await drv.connect()
        assert good(await drv.read("default")) == {"a": 2}
    finally:
        await drv.close()
        await emu.stop()


async def test_malformed_answer_is_counted_and_the_connection_dropped() -> None:
    drv, tags, emu = await emulated(device_doc(free_port(), '''
[device.plc.tag.a]
address = "%MW0"
[device.plc.tag.t]
address = "%T2"
[device.plc.tag.c]
address = "%C7"
'''))
    try:
        emu.set_value(tags["a"], 5)
        emu.set_value(tags["t"], 2500)
        emu.set_value(tags["c"], 999)
        assert good(await drv.read("default")) == {"a": 5, "t": 2500, "c": 999}
        emu.set_malformed(True)
        with pytest.raises(DeviceUnavailable, match="malformed response.*late answer"):
            await drv.read("default")
        assert drv.stats.errors == {"malformed": 1}
        with pytest.raises(DeviceUnavailable, match="not connected"):
            await drv.read("default")
        emu.set_malformed(False)
        await drv.connect()
        assert good(await drv.read("default")) == {"a": 5, "t": 2500, "c": 999}
    finally:
        await drv.close()
        await emu.stop()


async def test_write_refusals() -> None:
    drv, tags, emu = await emulated(device_doc(free_port(), """
[device.plc.tag.s]
address = "DB1:0:STRING[4]"
access = "write"
[device.plc.tag.r]
address = "%MW0"
"""))
    try:
        with pytest.raises(WriteFailed, match="at most 4 characters") as ei:
            await drv.write(tags["s"], "too long")
        assert ei.value.kind == "refused"
        with pytest.raises(WriteFailed, match="not writable"):
            await drv.write(tags["r"], 1)
        await drv.write(tags["s"], "ok")
        assert emu.get_value(tags["s"]) == "ok"
        assert drv.stats.writes == 1 and drv.stats.writes_failed == 2
    finally:
        await drv.close()
        await emu.stop()


async def test_simulate_faults_through_the_emulator_interface() -> None:
    """The faults `edged simulate --fault` and the HIL kit play: exception codes, PUT/GET, drop, plc-stop, writes."""
    drv, tags, emu = await emulated(device_doc(free_port(), """
[device.plc.tag.a]
address = "%MW0"
access = "write"
""", extra="cpu_state_s = 0"))
    try:
        assert "plc-stop" in emu.faults
        await emu.inject("plc", "exception", "10")
        with pytest.raises(ReadFailed) as ei:
            await drv.read("default")
        assert ei.value.kind == "out_of_range"   # 0x0A outside a DB: area not available
        await emu.inject("plc", "exception", "0x8104")
        with pytest.raises(ReadFailed, match="PUT/GET"):
            await drv.read("default")
        await emu.inject("plc", "clear")
        await drv.write(tags["a"], 3)
        assert emu.writes_seen() == {"plc": 1} and good(await drv.read("default")) == {"a": 3}
        await emu.inject("plc", "drop", "1.0")
        with pytest.raises(DeviceUnavailable, match="no answer"):
            await drv.read("default")
        await emu.inject("plc", "clear")
        await emu.inject("plc", "plc-stop")
        await drv.connect()
        assert {r.quality for r in await drv.read("default")} == {Quality.UNCERTAIN}
        await emu.inject("plc", "stop")
        with pytest.raises(DeviceUnavailable):
            await drv.connect()
        await emu.inject("plc", "start")
        await emu.inject("plc", "plc-run")
        await drv.connect()
        assert good(await drv.read("default")) == {"a": 3}
    finally:
        await drv.close()
        await emu.stop()
