"""S7 addresses as integrators paste them (TIA absolute, PLC4X, nodeS7), type agreement, and config errors."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from snap7.type import Area

from edged.cell import parse_cell
from edged.drivers.s7.address import AddressError, parse_address
from edged.errors import ConfigError
from edged.tag import DataType

D = DataType


@pytest.mark.parametrize("text, dtype, want", [
    # TIA Portal absolute, as pasted (the width letter and `type` pick the S7 type)
    ("%DB1.DBX0.0", None, (Area.DB, 1, 0, 0, "BOOL", 1, 0)),
    ("%DB1.DBX3.7", D.BOOL, (Area.DB, 1, 3, 7, "BOOL", 1, 0)),
    ("%DB1.DBB2", None, (Area.DB, 1, 2, 0, "BYTE", 1, 0)),
    ("%DB1.DBB2", D.INT8, (Area.DB, 1, 2, 0, "SINT", 1, 0)),
    ("%DB10.DBW4", None, (Area.DB, 10, 4, 0, "WORD", 1, 0)),
    ("%DB10.DBW4", D.INT16, (Area.DB, 10, 4, 0, "INT", 1, 0)),
    ("%DB1.DBD8", D.FLOAT32, (Area.DB, 1, 8, 0, "REAL", 1, 0)),
    ("%DB1.DBD8", D.INT32, (Area.DB, 1, 8, 0, "DINT", 1, 0)),
    ("%DB1.DBD8", None, (Area.DB, 1, 8, 0, "DWORD", 1, 0)),
    ("%MW20", None, (Area.MK, 0, 20, 0, "WORD", 1, 0)),
    ("%MD4", D.FLOAT32, (Area.MK, 0, 4, 0, "REAL", 1, 0)),
    ("%M0.1", None, (Area.MK, 0, 0, 1, "BOOL", 1, 0)),
    ("%I0.1", None, (Area.PE, 0, 0, 1, "BOOL", 1, 0)),
    ("%E0.1", None, (Area.PE, 0, 0, 1, "BOOL", 1, 0)),
    ("%IW64", D.INT16, (Area.PE, 0, 64, 0, "INT", 1, 0)),
    ("%Q4.0", None, (Area.PA, 0, 4, 0, "BOOL", 1, 0)),
    ("%A4.0", None, (Area.PA, 0, 4, 0, "BOOL", 1, 0)),
    ("%QB4", None, (Area.PA, 0, 4, 0, "BYTE", 1, 0)),
    ("%T5", None, (Area.TM, 0, 5, 0, "TIMER", 1, 0)),
    ("%C3", None, (Area.CT, 0, 3, 0, "COUNTER", 1, 0)),
    ("Z3", None, (Area.CT, 0, 3, 0, "COUNTER", 1, 0)),
    ("  %db1.dbx0.0 ", None, (Area.DB, 1, 0, 0, "BOOL", 1, 0)),
    # PLC4X
    ("%DB1.DBD4:REAL", None, (Area.DB, 1, 4, 0, "REAL", 1, 0)),
    ("DB1.DBX0.5:BOOL", None, (Area.DB, 1, 0, 5, "BOOL", 1, 0)),
    ("DB1:10:STRING[20]", None, (Area.DB, 1, 10, 0, "STRING", 1, 20)),
    ("DB1:10:WSTRING[8]", None, (Area.DB, 1, 10, 0, "WSTRING", 1, 8)),
    ("DB1:0:REAL[5]", None, (Area.DB, 1, 0, 0, "REAL", 5, 0)),
    ("DB1:0:Array[0..9] of Int", None, (Area.DB, 1, 0, 0, "INT", 10, 0)),
    ("MW20:INT", None, (Area.MK, 0, 20, 0, "INT", 1, 0)),
    ("%MD20:TIME", None, (Area.MK, 0, 20, 0, "TIME", 1, 0)),
    ("DB1.DBB32:DTL", None, (Area.DB, 1, 32, 0, "DTL", 1, 0)),
    ("DB1.DBB32:DATE_AND_TIME", None, (Area.DB, 1, 32, 0, "DT", 1, 0)),
    ("DB1.DBD0:TIME_OF_DAY", None, (Area.DB, 1, 0, 0, "TOD", 1, 0)),
    ("I0.1:BOOL", None, (Area.PE, 0, 0, 1, "BOOL", 1, 0)),
    # nodeS7
    ("DB1,REAL4", None, (Area.DB, 1, 4, 0, "REAL", 1, 0)),
    ("DB1,R4", None, (Area.DB, 1, 4, 0, "REAL", 1, 0)),
    ("DB1,X0.0", None, (Area.DB, 1, 0, 0, "BOOL", 1, 0)),
    ("DB1,INT2", None, (Area.DB, 1, 2, 0, "INT", 1, 0)),
    ("DB1,DINT6", None, (Area.DB, 1, 6, 0, "DINT", 1, 0)),
    ("DB1,S10.20", None, (Area.DB, 1, 10, 0, "STRING", 1, 20)),
    ("DB1,REAL0.8", None, (Area.DB, 1, 0, 0, "REAL", 8, 0)),
    ("DB1,UDINT4", None, (Area.DB, 1, 4, 0, "UDINT", 1, 0)),
    ("MW20", None, (Area.MK, 0, 20, 0, "WORD", 1, 0)),
    ("MR10", None, (Area.MK, 0, 10, 0, "REAL", 1, 0)),
    ("IW22", None, (Area.PE, 0, 22, 0, "WORD", 1, 0)),
    ("M7.1", None, (Area.MK, 0, 7, 1, "BOOL", 1, 0)),
])
def test_address_forms(text: str, dtype: DataType | None, want: tuple) -> None:
    a = parse_address(text, dtype)
    assert (a.area, a.db, a.byte, a.bit, a.s7type, a.count, a.strlen) == want


@pytest.mark.parametrize("text, dtype, words", [
    ("%DB0.DBX0.0", None, "DB number 1..65535"),
    ("%DB1.DBX0.8", None, "bit number 0..7"),
    ("%DB1.DBX0", None, "bit number"),
    ("%DB1.DBW4:REAL", None, "cannot hold REAL"),
    ("%DB1.DBD4", D.INT16, "double word"),
    ("%MW20", D.FLOAT32, "a word"),
    ("DB1,FOO4", None, "FOO"),
    ("DB1:0:FLOAT", None, "unknown S7 type"),
    ("DB1:0:STRING[300]", None, "STRING length 1..254"),
    ("DB1:0:DTL[3]", None, "numeric types only"),
    ("%M20", None, "needs a bit"),
    ("P#DB1.DBX0.0 BYTE 10", None, "pointer"),
    ("", None, "empty"),
    ("hello", None, "unrecognised"),
])
def test_bad_addresses_say_what_is_wrong(text: str, dtype: DataType | None, words: str) -> None:
    with pytest.raises(AddressError, match=words):
        parse_address(text, dtype)


def _cell(tag_keys: str, device_keys: str = "") -> dict:
    import tomllib
    return tomllib.loads(f"""
[cell]
name = "t"
[device.plc]
driver = "s7"
host = "127.0.0.1"
{device_keys}
[device.plc.tag.x]
{tag_keys}
""")


def _issues(tag_keys: str, device_keys: str = "") -> list[str]:
    with pytest.raises(ConfigError) as ei:
        parse_cell(_cell(tag_keys, device_keys), "cell.toml")
    return [str(i) for i in ei.value.issues]


def test_invalid_address_is_config_error_with_path_and_examples() -> None:
    issues = _issues('address = "%DB1.DBQ4"')
    assert len(issues) == 1
    assert issues[0].startswith("cell.toml: device.plc.tag.x.address: ")
    assert "%DB1.DBX0.0" in issues[0] and "DB1,REAL4" in issues[0] and "DB1.DBD4:REAL" in issues[0]


def test_type_that_disagrees_with_the_address_is_config_error() -> None:
    issues = _issues('address = "DB1,REAL4"\ntype = "int32"')
    assert issues == ["cell.toml: device.plc.tag.x.type: expected float32 (the address 'DB1,REAL4' is REAL), "
                      "found int32; remove `type` or make it agree with the address"]


def test_type_is_taken_from_the_address() -> None:
    cell = parse_cell(_cell('address = "DB1:0:LREAL[3]"'), "cell.toml")
    tag = cell.tags["plc.x"]
    assert tag.dtype is DataType.FLOAT64 and tag.dims == (3,)


def test_inputs_are_not_writable_and_tsap_conflicts() -> None:
    assert "cannot be written" in _issues('address = "%I0.0"\naccess = "write"')[0]
    issues = _issues('address = "%M0.0"', 'rack = 0\nremote_tsap = "03.01"')
    assert any("remote_tsap" in i and "both" in i for i in issues)
    assert any("local_tsap" in i for i in _issues('address = "%M0.0"', 'local_tsap = "zz"'))
    assert any("connection_type" in i for i in _issues('address = "%M0.0"', 'connection_type = "hmi"'))


def test_tag_too_large_for_one_read_is_config_error() -> None:
    issues = _issues('address = "DB1:0:REAL[100]"')
    assert "at most 222 bytes" in issues[0] and issues[0].startswith("cell.toml: device.plc.tag.x.address")


def test_check_exits_2_without_traceback(tmp_path: Path) -> None:
    path = tmp_path / "cell.toml"
    path.write_text('[cell]\nname = "t"\n[device.plc]\ndriver = "s7"\nhost = "127.0.0.1"\n'
                    '[device.plc.tag.x]\naddress = "%MW20"\ntype = "float32"\n')
    p = subprocess.run([sys.executable, "-m", "edged", "check", "-c", str(path)], capture_output=True, text=True)
    assert p.returncode == 2
    assert "device.plc.tag.x.address" in p.stderr and "Traceback" not in p.stderr


def test_check_plan_prints_the_packed_reads_at_the_default_pdu(tmp_path: Path) -> None:
    path = tmp_path / "cell.toml"
    path.write_text('[cell]\nname = "t"\n[device.plc]\ndriver = "s7"\nhost = "127.0.0.1"\n'
                    '[device.plc.tag.a]\naddress = "%DB1.DBD0:REAL"\n[device.plc.tag.b]\naddress = "%DB1.DBX4.0"\n'
                    '[device.plc.tag.c]\naddress = "%MW20"\n[device.plc.tag.d]\naddress = "DB9,INT100"\n')
    p = subprocess.run([sys.executable, "-m", "edged", "check", "-c", str(path), "--plan"], capture_output=True,
                       text=True)
    assert p.returncode == 0, p.stderr
    assert "1 request(s)" in p.stdout
    assert "[planned for PDU 480; recomputed at connect from the negotiated size]" in p.stdout
    assert "3 item(s)" in p.stdout and "DB1.DBB0..DBB4 (a, b)" in p.stdout and "MB20..MB21 (c)" in p.stdout
