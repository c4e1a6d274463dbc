"""The sim driver: address parsing (table-driven), generated signals, kept writes, config errors."""
from __future__ import annotations

from pathlib import Path

import pytest

from edged.driver import emulator_for
from edged.cell import load_cell
from edged.errors import ConfigError
from edged.tag import DataType

CELL = """
[cell]
name = "sim-test"
state_dir = "state"

[device.sim1]
driver = "sim"
seed = 7
"""


def cell_with(tmp_path: Path, tags: str, name: str = "cell.toml"):
    path = tmp_path / name
    path.write_text(CELL + tags)
    return load_cell(path)


def tag(name: str, address: str, extra: str = "") -> str:
    return f'\n[device.sim1.tag.{name}]\naddress = "{address}"\n{extra}\n'


@pytest.mark.parametrize("address, extra, dtype", [
    ("counter", "", DataType.INT64),
    ("counter:5", "type = 'uint32'", DataType.UINT32),
    ("ramp:0:100:30", "", DataType.FLOAT64),
    ("sine:5:60", "type = 'float32'", DataType.FLOAT32),
    ("square:10", "", DataType.BOOL),
    ("square:10", "type = 'uint8'", DataType.UINT8),
    ("random:-1:1", "", DataType.FLOAT64),
    ("random:0:9", "type = 'int16'", DataType.INT16),
    ("constant:55.5", "", DataType.FLOAT64),
    ("constant:3", "", DataType.INT64),
    ("constant:true", "", DataType.BOOL),
    ("constant:idle", "", DataType.STRING),
])
def test_addresses_and_their_types(tmp_path: Path, address: str, extra: str, dtype: DataType) -> None:
    cell = cell_with(tmp_path, tag("x", address, extra))
    assert cell.tags["sim1.x"].dtype is dtype


@pytest.mark.parametrize("address, extra, message", [
    ("wave:1", "", "expected one of counter, counter:START, ramp:MIN:MAX:PERIOD_S"),
    ("ramp:0:100", "", "expected ramp:MIN:MAX:PERIOD_S, found 'ramp:0:100'"),
    ("ramp:10:0:5", "", "expected MAX >= MIN"),
    ("sine:5:0", "", "expected a PERIOD_S above 0, found '0'"),
    ("sine:x:5", "", "expected a number for AMPLITUDE, found 'x'"),
    ("counter", "type = 'float64'", "expected an integer type for a counter, found type 'float64'"),
    ("counter:abc", "", "expected an integer START, found 'abc'"),
    ("counter:70000", "type = 'uint16'", "expected a START within uint16 [0, 65535], found 70000"),
    ("square:1", "type = 'string'", "expected type bool or an integer type for a square wave"),
    ("constant:300", "type = 'uint8'", "expected a constant within uint8 [0, 255], found 300"),
    ("random:0:1", "type = 'bool'", "expected a numeric type for random, found type 'bool'"),
])
def test_bad_addresses_name_the_key_and_the_expected_form(tmp_path: Path, address: str, extra: str,
                                                          message: str) -> None:
    with pytest.raises(ConfigError) as err:
        cell_with(tmp_path, tag("x", address, extra))
    assert any(i.path == "device.sim1.tag.x.address" and message in i.message for i in err.value.issues), \
        [str(i) for i in err.value.issues]


async def test_counter_increments_per_read_and_later_runs_start_higher(tmp_path: Path) -> None:
    cell = cell_with(tmp_path, tag("n", "counter") + tag("f", "counter:10"))
    drv = cell.devices["sim1"].driver
    await drv.connect()
    first = [await drv.read("default") for _ in range(3)]
    n = [r[0].value for r in first]
    assert n == [n[0], n[0] + 1, n[0] + 2]
    assert [r[1].value for r in first] == [10, 11, 12]
    assert all(r[0].quality == 0 and r[0].ts_ns > 0 for r in first)
    again = cell_with(tmp_path, tag("n", "counter"), "again.toml").devices["sim1"].driver
    assert (await again.read("default"))[0].value > n[-1]


async def test_narrow_counters_start_at_zero_and_wrap(tmp_path: Path) -> None:
    cell = cell_with(tmp_path, tag("w", "counter:254", "type = 'uint8'") + tag("z", "counter", "type = 'int16'"))
    drv = cell.devices["sim1"].driver
    reads = [await drv.read("default") for _ in range(3)]
    assert [r[0].value for r in reads] == [254, 255, 0]
    assert [r[1].value for r in reads] == [0, 1, 2]


async def test_random_is_reproducible_for_the_same_seed_and_within_bounds(tmp_path: Path) -> None:
    tags = tag("r", "random:-2:3") + tag("i", "random:0:9", "type = 'int16'")
    a = cell_with(tmp_path, tags, "a.toml").devices["sim1"].driver
    b = cell_with(tmp_path, tags, "b.toml").devices["sim1"].driver
    ra = [[x.value for x in await a.read("default")] for _ in range(20)]
    rb = [[x.value for x in await b.read("default")] for _ in range(20)]
    assert ra == rb
    assert all(-2 <= r <= 3 and isinstance(i, int) and 0 <= i <= 9 for r, i in ra)
    assert len({r for r, _ in ra}) > 1


async def test_signals_scale_and_writes_are_kept(tmp_path: Path) -> None:
    tags = (tag("sp", "constant:55.0", "access = 'write'\nmin = 0\nmax = 100")
            + tag("t", "sine:5:60", "offset = 40.0") + tag("l", "ramp:0:100:30") + tag("s", "square:10"))
    cell = cell_with(tmp_path, tags)
    drv = cell.devices["sim1"].driver
    values = {r.tag.name: r.value for r in await drv.read("default")}
    assert values["sp"] == 55.0
    assert 35.0 <= values["t"] <= 45.0
    assert 0.0 <= values["l"] < 100.0
    assert isinstance(values["s"], bool)
    await drv.write(cell.tags["sim1.sp"], 12.5)
    values = {r.tag.name: r.value for r in await drv.read("default")}
    assert values["sp"] == 12.5
    emu = emulator_for([drv])
    await emu.start()
    assert emu.get_value(cell.tags["sim1.sp"]) == 12.5
    emu.set_value(cell.tags["sim1.t"], 99.0)
    assert {r.tag.name: r.value for r in await drv.read("default")}["t"] == 99.0
    await emu.stop()
    assert "sp: constant:55.0 (float64)" in drv.plan()["default"]
