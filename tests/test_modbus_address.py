"""Modbus address parsing, table-driven: both styles, bits, types per table, and every rejection with its path."""
from __future__ import annotations

import pytest

from edged.drivers.modbus.address import (T_BIT, T_COIL, T_FLOAT32, T_FLOAT64, T_INT16, T_STRING, T_UINT16,
                                          T_UINT32, AddressError, Order, Table, parse_location)
from edged.tag import DataType
from modbus_support import config_issues, load_devices, tcp_device

# address text -> (table, offset, bit)
LOCATIONS = [
    ("hr:0", Table.HOLDING, 0, -1),
    ("hr:100", Table.HOLDING, 100, -1),
    ("holding:65535", Table.HOLDING, 65535, -1),
    ("HR:7", Table.HOLDING, 7, -1),
    ("ir:5", Table.INPUT, 5, -1),
    ("input:5", Table.INPUT, 5, -1),
    ("co:7", Table.COIL, 7, -1),
    ("coil:7", Table.COIL, 7, -1),
    ("di:3", Table.DISCRETE, 3, -1),
    ("discrete:3", Table.DISCRETE, 3, -1),
    ("hr:100.3", Table.HOLDING, 100, 3),
    ("ir:9.15", Table.INPUT, 9, 15),
    (" hr:1 ", Table.HOLDING, 1, -1),
    ("40001", Table.HOLDING, 0, -1),
    ("40101", Table.HOLDING, 100, -1),
    ("49999", Table.HOLDING, 9998, -1),
    ("30001", Table.INPUT, 0, -1),
    ("10001", Table.DISCRETE, 0, -1),
    ("00001", Table.COIL, 0, -1),
    ("09999", Table.COIL, 9998, -1),
    ("400001", Table.HOLDING, 0, -1),
    ("400101", Table.HOLDING, 100, -1),
    ("465536", Table.HOLDING, 65535, -1),
    ("300010", Table.INPUT, 9, -1),
    ("000001", Table.COIL, 0, -1),
    ("40101.3", Table.HOLDING, 100, 3),
    ("400101.0", Table.HOLDING, 100, 0),
]


@pytest.mark.parametrize("text,table,offset,bit", LOCATIONS)
def test_locations(text: str, table: Table, offset: int, bit: int) -> None:
    loc = parse_location(text)
    assert (loc.table, loc.offset, loc.bit) == (table, offset, bit)


BAD_LOCATIONS = [
    ("", "expected an address such as \"hr:100\" or \"40101\", found an empty string"),
    ("hr:65536", "expected a zero-based offset 0..65535, found 65536 in 'hr:65536'"),
    ("hr:-1", "expected a zero-based offset 0..65535 after 'hr:', found 'hr:-1'"),
    ("hr:", "expected a zero-based offset 0..65535 after 'hr:', found 'hr:'"),
    ("xx:1", "expected a table prefix hr, ir, co, di (or holding, input, coil, discrete), found 'xx' in 'xx:1'"),
    ("hr:1.16", "expected a bit number 0..15 after '.', found 16 in 'hr:1.16'"),
    ("hr:1.x", "expected a bit number 0..15 after '.', found 'hr:1.x'"),
    ("co:1.2", "expected no bit number on coils (each is one bit already), found 'co:1.2'"),
    ("10001.2", "expected no bit number on discrete inputs (each is one bit already), found '10001.2'"),
    ("40000", "expected a reference number 40001..49999 for holding registers, found '40000'"),
    ("400000", "expected a reference number 400001..465536 for holding registers, found '400000'"),
    ("465537", "expected a reference number 400001..465536 for holding registers, found '465537'"),
    ("50001", "expected a reference number starting with 0 (coil), 1 (discrete input), 3 (input register) "
              "or 4 (holding register), found '50001'"),
    ("4001", "expected a 5-digit (40001) or 6-digit (400001) reference number, found '4001'"),
    ("4000001", "expected a 5-digit (40001) or 6-digit (400001) reference number, found '4000001'"),
    ("holding 5", "expected a table-prefixed offset such as \"hr:100\" or a reference number such as \"40101\", "
                  "found 'holding 5'"),
]


@pytest.mark.parametrize("text,message", BAD_LOCATIONS)
def test_bad_locations(text: str, message: str) -> None:
    with pytest.raises(AddressError) as info:
        parse_location(text)
    assert str(info.value) == message


# tag keys -> (dtype, table, offset, bit, type code, order, registers/bits, unit, length)
GOOD_TAGS = [
    ({"address": "hr:10", "type": "float32"}, DataType.FLOAT32, Table.HOLDING, 10, -1, T_FLOAT32, Order.ABCD, 2, None, 0),
    ({"address": "40011", "type": "float64", "order": "DCBA"}, DataType.FLOAT64, Table.HOLDING, 10, -1, T_FLOAT64,
     Order.DCBA, 4, None, 0),
    ({"address": "ir:3", "type": "uint32", "order": "CDAB"}, DataType.UINT32, Table.INPUT, 3, -1, T_UINT32,
     Order.CDAB, 2, None, 0),
    ({"address": "hr:4"}, DataType.UINT16, Table.HOLDING, 4, -1, T_UINT16, Order.ABCD, 1, None, 0),
    ({"address": "hr:4", "type": "int16", "order": "BADC", "unit_id": 7}, DataType.INT16, Table.HOLDING, 4, -1,
     T_INT16, Order.BADC, 1, 7, 0),
    ({"address": "co:1"}, DataType.BOOL, Table.COIL, 1, -1, T_COIL, Order.ABCD, 1, None, 0),
    ({"address": "10002", "type": "bool"}, DataType.BOOL, Table.DISCRETE, 1, -1, T_COIL, Order.ABCD, 1, None, 0),
    ({"address": "hr:100.3", "type": "bool"}, DataType.BOOL, Table.HOLDING, 100, 3, T_BIT, Order.ABCD, 1, None, 0),
    ({"address": "30001.15"}, DataType.BOOL, Table.INPUT, 0, 15, T_BIT, Order.ABCD, 1, None, 0),
    ({"address": "hr:20", "type": "string", "length": 7, "order": "BADC"}, DataType.STRING, Table.HOLDING, 20, -1,
     T_STRING, Order.BADC, 4, None, 7),
    ({"address": "hr:65534", "type": "int32"}, DataType.INT32, Table.HOLDING, 65534, -1, 3, Order.ABCD, 2, None, 0),
    ({"address": "49998", "type": "float32"}, DataType.FLOAT32, Table.HOLDING, 9997, -1, T_FLOAT32, Order.ABCD, 2,
     None, 0),
]


@pytest.mark.parametrize("keys,dtype,table,offset,bit,code,order,count,unit,length", GOOD_TAGS)
def test_good_tags(keys: dict, dtype: DataType, table: Table, offset: int, bit: int, code: int, order: Order,
                   count: int, unit: int | None, length: int) -> None:
    _, tags = load_devices(tcp_device("press1", 5020, {"t": keys}))
    tag = tags["press1.t"]
    a = tag.addr
    assert tag.dtype is dtype
    assert (a.table, a.offset, a.bit, a.type_code, a.order, a.count, a.unit, a.length) == \
        (table, offset, bit, code, order, count, unit, length)


P = "device.press1.tag.t"
BAD_TAGS = [
    ({"address": "hr:70000", "type": "uint16"},
     f"{P}.address", "expected a zero-based offset 0..65535, found 70000 in 'hr:70000'"),
    ({"address": 40001, "type": "uint16"},
     f"{P}.address", "expected a string such as \"hr:100\" or \"40101\", found integer 40001 "
                     "(write it as a string: \"40001\")"),
    ({"type": "uint16"}, f"{P}.address", "missing required key"),
    ({"address": "co:0", "type": "float32"}, f"{P}.type", "expected bool for an address in coils, found 'float32'"),
    ({"address": "di:0", "type": "int16"}, f"{P}.type",
     "expected bool for an address in discrete inputs, found 'int16'"),
    ({"address": "hr:5", "type": "bool"}, f"{P}.type",
     "expected one of int16, uint16, int32, uint32, float32, int64, uint64, float64, string for holding registers, "
     "found 'bool' (a bool in a register needs a bit address such as \"hr:5.0\")"),
    ({"address": "hr:5.1", "type": "int16"}, f"{P}.type",
     "expected bool for a register bit address ('hr:5.1'), found 'int16'"),
    ({"address": "hr:5", "type": "int8"}, f"{P}.type",
     "expected one of int16, uint16, int32, uint32, float32, int64, uint64, float64, string for holding registers, "
     "found 'int8' (Modbus registers are 16 bits wide)"),
    ({"address": "hr:0", "type": "string"}, f"{P}.length",
     "missing required key (string tags need a length in characters, 2 per register)"),
    ({"address": "hr:0", "type": "string", "length": 300}, f"{P}.length", "expected a value between 1 and 250, found 300"),
    ({"address": "hr:0", "type": "uint16", "length": 4}, f"{P}.length",
     "expected length only on string tags, found it on a uint16 tag"),
    ({"address": "hr:0", "type": "float32", "order": "ACBD"}, f"{P}.order",
     "expected one of 'ABCD', 'CDAB', 'BADC', 'DCBA', found 'ACBD'"),
    ({"address": "co:0", "order": "CDAB"}, f"{P}.order",
     "expected order only on register values, found it on a bit address ('co:0')"),
    ({"address": "hr:0", "unit_id": 248}, f"{P}.unit_id", "expected a value between 0 and 247, found 248"),
    ({"address": "hr:65535", "type": "float32"}, f"{P}.address",
     "expected the float32 value (2 registers) to end at offset 65535 or below, found it ending at 65536 ('hr:65535')"),
    ({"address": "49999", "type": "float32"}, f"{P}.address",
     "expected a 5-digit reference to stay within 40001..49999, found a float32 value ending beyond 49999 "
     "(use a 6-digit reference such as 409999 or \"hr:9998\")"),
    ({"address": "ir:0", "type": "uint16", "access": "write"}, f"{P}.access",
     "expected \"read\" for an address in input registers (they are read-only in Modbus), found \"write\""),
    ({"address": "10001", "access": "write"}, f"{P}.access",
     "expected \"read\" for an address in discrete inputs (they are read-only in Modbus), found \"write\""),
    ({"address": "hr:0", "bit": 3}, f"{P}.bit",
     "unknown key (allowed here: access, address, deadband, description, export_metric, length, max, min, "
     "offset, order, scale, scan, scan_ms, type, unit, unit_id)"),
]


@pytest.mark.parametrize("keys,path,message", BAD_TAGS)
def test_bad_tags(keys: dict, path: str, message: str) -> None:
    assert config_issues(tcp_device("press1", 5020, {"t": keys})) == [(path, message)]


def test_string_wider_than_the_device_allows() -> None:
    doc = tcp_device("press1", 5020, {"t": {"address": "hr:0", "type": "string", "length": 40}}, max_registers=16)
    assert config_issues(doc) == [(f"{P}.length", "expected a value that fits one request (max_registers = 16), "
                                                  "found 20 registers for 40 characters")]


def test_every_tag_error_is_reported_at_once() -> None:
    doc = tcp_device("press1", 5020, {"a": {"address": "hr:1.20"}, "b": {"address": "co:1", "type": "int32"},
                                      "c": {"address": "ir:1", "access": "write"}})
    assert [p for p, _ in config_issues(doc)] == ["device.press1.tag.a.address", "device.press1.tag.b.type",
                                                  "device.press1.tag.c.access"]


def test_sample_snippet_is_a_valid_config() -> None:
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "drivers" / "modbus" / "sample.toml").read_text()
    devices, tags = load_devices("[scan.fast]\ninterval_ms = 100\n" + text)
    assert sorted(devices) == ["conveyor", "oven", "press1"]
    assert tags["press1.recipe"].addr.count == 8 and tags["press1.lube_low"].addr.bit == 3


D = "device.press1"
BAD_DEVICES = [
    ({"transport": "udp"}, f"{D}.transport", "expected one of 'tcp', 'rtu', found 'udp'"),
    ({"host": None}, f"{D}.host", "missing required key (transport \"tcp\" needs the host name or IP address)"),
    ({"port": "502"}, f"{D}.port", "expected a TCP port 1..65535, found string '502'"),
    ({"port": 70000}, f"{D}.port", "expected a TCP port 1..65535, found integer 70000"),
    ({"baudrate": 9600}, f"{D}.baudrate", "expected baudrate only with transport = \"rtu\", found it with transport \"tcp\""),
    ({"transport": "rtu", "host": None, "port": None}, f"{D}.port",
     "missing required key (transport \"rtu\" needs the serial device, e.g. \"/dev/ttyUSB0\")"),
    ({"transport": "rtu", "port": "/dev/ttyS0"}, f"{D}.host", "expected host only with transport = \"tcp\", found it with transport \"rtu\""),
    ({"transport": "rtu", "host": None, "port": 5}, f"{D}.port",
     "expected the serial device path such as \"/dev/ttyUSB0\", found integer 5"),
    ({"transport": "rtu", "host": None, "port": "/dev/ttyS0", "parity": "X"}, f"{D}.parity",
     "expected one of 'N', 'E', 'O', found 'X'"),
    ({"transport": "rtu", "host": None, "port": "/dev/ttyS0", "stopbits": 3}, f"{D}.stopbits",
     "expected a value between 1 and 2, found 3"),
    ({"unit_id": 248}, f"{D}.unit_id", "expected a value between 0 and 247, found 248"),
    ({"max_registers": 126}, f"{D}.max_registers", "expected a value between 1 and 125, found 126"),
    ({"max_bits": 0}, f"{D}.max_bits", "expected a value between 1 and 2000, found 0"),
    ({"max_gap": -1}, f"{D}.max_gap", "expected a value between 0 and 125, found -1"),
    ({"bit_write": "rmw"}, f"{D}.bit_write", "expected one of 'mask', 'read_modify_write', found 'rmw'"),
    ({"client": "libmodbus"}, f"{D}.client", "expected one of 'edged', 'pymodbus', found 'libmodbus'"),
    ({"max_outstanding": 0}, f"{D}.max_outstanding", "expected a value between 1 and 64, found 0"),
    ({"link_timeouts": 0}, f"{D}.link_timeouts", "expected a value between 1 and 1000, found 0"),
    ({"client": "pymodbus", "max_outstanding": 4}, f"{D}.max_outstanding",
     "expected 1 with client = \"pymodbus\" (it sends one request at a time), found 4"),
    ({"slave": 1}, f"{D}.slave", "unknown key (allowed here: backoff_initial_s, backoff_max_s, baudrate, bit_write, "
                                 "bytesize, client, description, driver, host, link_timeouts, max_bits, max_gap, "
                                 "max_gap_bits, max_outstanding, max_registers, parity, port, stopbits, tag, "
                                 "timeout_s, transport, unit_id)"),
]


@pytest.mark.parametrize("keys,path,message", BAD_DEVICES)
def test_bad_device_keys(keys: dict, path: str, message: str) -> None:
    doc = tcp_device("press1", 5020, {"t": {"address": "hr:0"}})
    lines = [ln for ln in doc.splitlines() if not any(ln.startswith(f"{k} =") for k in keys)]
    extra = [f"{k} = {v!r}".replace("'", '"') for k, v in keys.items() if v is not None]
    doc = "\n".join(lines[:2] + extra + lines[2:]) + "\n"
    assert config_issues(doc) == [(path, message)]
