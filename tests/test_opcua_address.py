"""OPC UA addresses and device keys: every NodeId form, browse paths, value conversion, config errors (no I/O)."""
from __future__ import annotations

import base64
import datetime as dt
import importlib.util
import tomllib
import uuid
from pathlib import Path

import pytest
from asyncua import ua

from edged.cell import parse_cell
from edged.drivers.opcua.address import AddressError, BrowsePath, NodeRef, PathElement, parse_address
from edged.drivers.opcua.values import ValueError_, compatible, quality_of, to_edged, to_variant
from edged.errors import ConfigError
from edged.tag import DataType, Quality

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("text, expected", [
    ("ns=2;s=Machine.Speed", NodeRef(2, None, "s", "Machine.Speed")),
    ("ns=3;i=1001", NodeRef(3, None, "i", 1001)),
    ("i=2258", NodeRef(0, None, "i", 2258)),
    ("ns=1;g=09087e75-8e5e-499b-954f-f2a9603db28a",
     NodeRef(1, None, "g", uuid.UUID("09087e75-8e5e-499b-954f-f2a9603db28a"))),
    ("ns=2;b=" + base64.b64encode(b"\x00\x01robot").decode(), NodeRef(2, None, "b", b"\x00\x01robot")),
    ("nsu=urn:acme:robot;s=Axis1", NodeRef(0, "urn:acme:robot", "s", "Axis1")),
    ("nsu=http://acme.com/UA/Robot/;i=5", NodeRef(0, "http://acme.com/UA/Robot/", "i", 5)),
    ("ns=2;s=a;b=c", NodeRef(2, None, "s", "a;b=c")),
    ("/Objects/2:Machine/2:Speed", BrowsePath((PathElement(0, None, "Objects"), PathElement(2, None, "Machine"),
                                               PathElement(2, None, "Speed")))),
    ("/Objects/<urn:acme>Robot/<urn:acme>A\\/B", BrowsePath((PathElement(0, None, "Objects"),
                                                             PathElement(0, "urn:acme", "Robot"),
                                                             PathElement(0, "urn:acme", "A/B")))),
])
def test_addresses_parse_and_print_back(text: str, expected: object) -> None:
    addr = parse_address(text)
    assert addr == expected
    assert parse_address(addr.text()) == addr


@pytest.mark.parametrize("text, message", [
    ("ns=2;x=5", "expected a NodeId"),
    ("ns=70000;i=1", "namespace index 0..65535"),
    ("ns=2;i=-1", "numeric identifier"),
    ("ns=2;i=4294967296", "numeric identifier"),
    ("ns=2;g=not-a-guid", "GUID"),
    ("ns=2;b=***", "base64"),
    ("ns=2;s=", "non-empty string"),
    ("nsu=;s=x", "namespace URI"),
    ("Machine.Speed", "expected a NodeId"),
    ("/Machine/2:Speed", "starting at /Objects"),
    ("/Objects//2:Speed", "empty one"),
    ("/Objects/2:", "browse name after 2:"),
])
def test_bad_addresses_say_what_was_expected(text: str, message: str) -> None:
    with pytest.raises(AddressError, match=message):
        parse_address(text)


def test_values_from_the_wire_are_checked_against_the_tag_type() -> None:
    assert to_edged(5, DataType.INT16, False) == 5
    assert to_edged(5, DataType.FLOAT64, False) == 5.0
    assert to_edged([[1, 2], [3, 4]], DataType.INT32, True) == [1, 2, 3, 4]
    assert to_edged(dt.datetime(2026, 5, 1, 10, 0, 0), DataType.DATETIME, False) == "2026-05-01T10:00:00.000000Z"
    assert to_edged(ua.LocalizedText("hi"), DataType.STRING, False) == "hi"
    assert to_edged(ua.EUInformation(DisplayName=ua.LocalizedText("mm")), DataType.STRUCT, False)["DisplayName"] == "mm"
    for value, dtype in [(70000, DataType.INT16), ("x", DataType.FLOAT64), (1.5, DataType.INT32), (1, DataType.BOOL),
                         ([1], DataType.INT16), (3, DataType.STRUCT)]:
        with pytest.raises(ValueError_):
            to_edged(value, dtype, False)
    with pytest.raises(ValueError_):
        to_edged(3, DataType.INT16, True)


def test_writes_are_typed_to_the_node() -> None:
    assert to_variant(75, ua.VariantType.Double, False) == ua.Variant(75.0, ua.VariantType.Double)
    assert to_variant(3.0, ua.VariantType.Int16, False) == ua.Variant(3, ua.VariantType.Int16)
    assert to_variant([1, 0], ua.VariantType.Boolean, True).Value == [True, False]
    for value, vt in [(3.5, ua.VariantType.Int32), ("x", ua.VariantType.Double), (2, ua.VariantType.Boolean)]:
        with pytest.raises(ValueError_):
            to_variant(value, vt, False)


def test_status_codes_map_to_quality_and_types_widen_safely() -> None:
    assert quality_of(ua.StatusCode(ua.StatusCodes.Good)) is Quality.GOOD
    assert quality_of(ua.StatusCode(ua.StatusCodes.UncertainLastUsableValue)) is Quality.UNCERTAIN
    assert quality_of(ua.StatusCode(ua.StatusCodes.BadNodeIdUnknown)) is Quality.BAD
    assert compatible(DataType.FLOAT64, DataType.INT32) and compatible(DataType.INT32, DataType.UINT16)
    assert not compatible(DataType.INT16, DataType.UINT32) and not compatible(DataType.STRING, DataType.FLOAT64)


DEVICE = """
[cell]
name = "t"
[device.r]
driver = "opcua"
endpoint = "opc.tcp://127.0.0.1:4840"
{keys}
[device.r.tag.a]
address = "{address}"
{tag_keys}
"""


def _issues(keys: str = "", address: str = "ns=2;s=A", tag_keys: str = "") -> list[str]:
    try:
        parse_cell(tomllib.loads(DEVICE.format(keys=keys, address=address, tag_keys=tag_keys)), "cell.toml")
    except ConfigError as exc:
        return [str(i) for i in exc.issues]
    return []


def test_device_keys_are_checked_at_load() -> None:
    assert _issues() == []
    assert any("expected an endpoint URL" in i for i in _issues_replace('endpoint = "tcp://10.0.0.5:4840"'))
    assert any("unknown key" in i for i in _issues('endpoint_url = "opc.tcp://x"'))
    assert any("security_policy: expected one of 'None', 'Basic256Sha256'" in i
               for i in _issues('security_policy = "Basic128Rsa15"'))
    assert any("password_env: expected either password_file or password_env" in i
               for i in _issues('username = "u"\npassword_file = "f"\npassword_env = "E"'))
    assert any("username: missing required key" in i for i in _issues('password_env = "E"'))
    assert any("certificate and private_key go together" in i for i in _issues('certificate = "c.der"'))
    assert any("security_mode: expected no security_mode" in i
               for i in _issues('security_policy = "None"\nsecurity_mode = "Sign"'))
    assert any("poll_scans[0]: expected a scan group" in i for i in _issues('poll_scans = ["nope"]'))
    assert any("device.r.tag.a.address: expected a NodeId" in i for i in _issues(address="Speed"))
    assert any("dims: expected 1 to 8 dimensions" in i for i in _issues(tag_keys="dims = [0]"))
    assert any("deadband_type: expected deadband_type only with a deadband" in i
               for i in _issues(tag_keys='deadband_type = "percent"'))


def _issues_replace(endpoint_line: str) -> list[str]:
    text = DEVICE.format(keys="", address="ns=2;s=A", tag_keys="").replace(
        'endpoint = "opc.tcp://127.0.0.1:4840"', endpoint_line)
    try:
        parse_cell(tomllib.loads(text), "cell.toml")
    except ConfigError as exc:
        return [str(i) for i in exc.issues]
    return []


def test_secure_by_default_and_subscriptions_by_default() -> None:
    cell = parse_cell(tomllib.loads(DEVICE.format(keys="", address="ns=2;s=A", tag_keys="")), "cell.toml")
    drv = cell.devices["r"].driver
    assert drv.conn.security_policy == "Basic256Sha256" and drv.conn.security_mode == "SignAndEncrypt"
    assert drv.conn.username is None  # anonymous
    assert [m.value for m in drv.group_modes().values()] == ["push"]
    assert cell.tags["r.a"].dtype is DataType.ANY  # learned from the server at connect


def _load_fuzz(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "fuzz" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("name", ["fuzz_opcua_address", "fuzz_opcua_values"])
def test_fuzz_seeds_raise_only_expected_errors(name: str) -> None:
    mod = _load_fuzz(name)
    for seed in mod.SEEDS:
        try:
            mod.TARGET(seed)
        except mod.EXPECTED:
            pass
