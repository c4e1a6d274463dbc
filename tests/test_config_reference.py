"""The configuration reference (docs/configuration.md) lists exactly the keys the code reads."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from edged.config_reference import (REQUIRED, DocRow, KeyRecorder, TableRef, block_types_markdown, collect,
                                    collect_with_defaults, compare, doc_block_types, doc_defaults, doc_rows,
                                    duplicate_rows, format_index, parse_doc, parse_heading, skeleton,
                                    wrong_defaults)
from edged.driver import available_drivers
from edged.schema import Section
from edged.sinks.config import SINK_TYPES

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "configuration.md"
EXAMPLES = sorted((REPO / "config").glob("*.toml"))
DRIVER_SAMPLES = sorted((REPO / "drivers").glob("*/sample.toml"))  # snippets: device tables only

# Cells that, together with config/*.toml, take every optional branch of the config code, so that
# every key any code path reads gets recorded. Each names the drivers and sink types it needs.
FEATURE_CELLS: dict[str, tuple[set[str], set[str], str]] = {
    "core_everything": (set(), {"jsonl"}, """
[cell]
name = "core"
state_dir = "state"
default_scan_ms = 500
heartbeat_s = 10
log_level = "debug"

[metrics]
enabled = false
listen = "[::1]:19108"

[scan.fast]
interval_ms = 50
phase_ms = 10

[spool]
max_bytes = 1048576
max_age_s = 3600
overflow = "drop_newest"
durability = "os"
cache_samples = 0

[sink.local]
type = "jsonl"
path = "/var/log/edged/samples.jsonl"
max_bytes = 1048576
keep = 2
batch_samples = 100
fsync = true
"""),
    "modbus_tcp_everything": ({"modbus"}, set(), """
[cell]
name = "modbus-tcp"

[scan.fast]
interval_ms = 50

[device.plc]
driver = "modbus"
description = "all TCP keys"
transport = "tcp"
host = "192.0.2.10"
port = 502
unit_id = 3
timeout_s = 0.5
backoff_initial_s = 0.2
backoff_max_s = 10
max_registers = 100
max_bits = 1000
max_gap = 4

[device.plc.tag.temp]
address = "hr:0"
type = "float32"
order = "CDAB"
unit_id = 4
scale = 0.1
offset = -5
unit = "degC"
description = "every common tag key"
deadband = 0.5
scan = "fast"
export_metric = true

[device.plc.tag.setpoint]
address = "40011"
type = "int16"
access = "write"
min = -100
max = 100
scan_ms = 250

[device.plc.tag.label]
address = "hr:20"
type = "string"
length = 8
"""),
    "sparkplug_everything": (set(), {"sparkplug"}, """
[cell]
name = "sparkplug"

[sink.scada]
type = "sparkplug"
host = "broker.plant.example"
port = 8883
client_id = "edged-line3"
keepalive_s = 20
protocol = "5"
connect_timeout_s = 5
backoff_initial_s = 1
backoff_max_s = 60
tls = true
tls_ca = "/etc/edged/ca.pem"
tls_cert = "/etc/edged/client.pem"
tls_key = "/etc/edged/client.key"
tls_insecure = false
username = "line3"
password_file = "/etc/edged/mqtt.pass"
group_id = "plant1"
edge_node_id = "line3"
primary_host = "scada"
batch_max = 500
max_metrics_per_message = 200
birth_wait_s = 2
commands = true
command_rate_per_s = 2
command_burst = 4
max_command_bytes = 8192

[sink.backup]
type = "sparkplug"
group_id = "plant1"
username = "line3"
password_env = "EDGED_MQTT_PASSWORD"
"""),
    "sim": ({"sim"}, set(), """
[cell]
name = "sim"

[device.gen]
driver = "sim"
seed = 7

[device.gen.tag.count]
address = "counter"
"""),
    "mqtt_everything": (set(), {"mqtt"}, """
[cell]
name = "mqtt"

[sink.upstream]
type = "mqtt"
host = "broker.plant.example"
port = 8883
client_id = "edged-line3"
keepalive_s = 20
protocol = "3.1.1"
connect_timeout_s = 5
backoff_initial_s = 1
backoff_max_s = 60
tls = true
tls_ca = "/etc/edged/ca.pem"
tls_cert = "/etc/edged/client.pem"
tls_key = "/etc/edged/client.key"
tls_insecure = true
username = "line3"
password_env = "EDGED_MQTT_PASSWORD"
topic = "plant1/{cell}/{device}/{tag}"
payload = "objects"
qos = 1
retain = false
batch_samples = 1000
max_message_samples = 100
max_inflight = 16
status_topic = "plant1/{cell}/status"
gap_topic = "plant1/{cell}/gap"
commands = true
command_topic = "plant1/{cell}/cmd/{device}/{tag}"
response_topic = "plant1/{cell}/cmd_result/{device}/{tag}"
command_rate_per_s = 1
command_burst = 2
max_command_bytes = 2048
"""),
    "control_everything": ({"sim"}, set(), """
[cell]
name = "control"

[device.gen]
driver = "sim"

[device.gen.tag.level]
address = "ramp:0:100:30"

[device.gen.tag.valve]
address = "constant:0.0"
access = "write"

[task.fast]
period_us = 1000
priority = 50
cpu = 1
mlock = true
overrun = "delay"
write_period_ms = 1000
ring_size = 1024

[task.fast.block.pid]
type = "PID"
in = { PV = "gen.level", SP = 50.0, KP = 2.0, TR = "30s" }
out = { XOUT = "gen.valve" }
safe = { XOUT = 0.0 }
bad_after_ms = 500
report = ["XOUT"]
"""),
    "modbus_rtu": ({"modbus"}, set(), """
[cell]
name = "modbus-rtu"

[device.line1]
driver = "modbus"
transport = "rtu"
port = "/dev/ttyUSB0"
baudrate = 19200
parity = "E"
bytesize = 8
stopbits = 1
unit_id = 1

[device.line1.tag.run]
address = "co:0"
"""),
}


def complete_snippet(text: str, name: str) -> str:
    """A driver's sample snippet as a whole cell: add [cell] and the scan groups its tags name, if missing."""
    data = tomllib.loads(text)
    head = "" if "cell" in data else f'[cell]\nname = "{name}"\n\n'
    groups = {t.get("scan") for d in data.get("device", {}).values() for t in d.get("tag", {}).values()}
    declared = set(data.get("scan", {})) | {"default", None}
    for group in sorted(g for g in groups - declared if isinstance(g, str)):
        head += f"[scan.{group}]\ninterval_ms = 1000\n\n"
    return head + text


def _available(drivers: set[str], sinks: set[str]) -> bool:
    installed = available_drivers()
    return (all(d in installed for d in drivers)
            and all(importlib.util.find_spec(SINK_TYPES[s]) is not None for s in sinks))


@pytest.fixture(scope="module")
def cell_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """config/*.toml, the drivers' sample snippets, and the feature cells whose drivers and sinks are installed."""
    folder = tmp_path_factory.mktemp("feature_cells")
    files = list(EXAMPLES)
    for sample in DRIVER_SAMPLES:
        path = folder / f"sample-{sample.parent.name}.toml"
        path.write_text(complete_snippet(sample.read_text(), f"sample-{sample.parent.name}"))
        files.append(path)
    for name, (drivers, sinks, text) in FEATURE_CELLS.items():
        if _available(drivers, sinks):
            path = folder / f"{name}.toml"
            path.write_text(text)
            files.append(path)
    return files


@pytest.fixture(scope="module")
def recorded(cell_files: list[Path]):
    """Every key the code reads while loading the cells, by table, and the defaults it passes."""
    index, defaults, issues = collect_with_defaults(cell_files)
    assert not issues, "the reference cells must be valid:\n" + "\n".join(map(str, issues))
    return index, defaults


@pytest.fixture(scope="module")
def code_keys(recorded):
    """Every key the code reads while loading the cells, by table."""
    return recorded[0]


def test_example_cells_exist() -> None:
    """There is at least one example cell to learn from."""
    assert (REPO / "config" / "example-cell.toml") in EXAMPLES


def test_every_key_the_code_reads_is_documented(code_keys) -> None:
    """A key any code path reads is listed under its table heading in docs/configuration.md."""
    undocumented, _ = compare(code_keys, parse_doc(DOC.read_text()))
    assert not undocumented, "add to docs/configuration.md:\n" + "\n".join(
        f"  ### {ref.heading()}: `{key}`" for ref, key in undocumented)


def test_every_documented_key_is_read_by_the_code(code_keys) -> None:
    """Nothing stale: each documented key is read by the code (with these cells)."""
    _, stale = compare(code_keys, parse_doc(DOC.read_text()))
    assert not stale, "documented but never read (remove, or add a feature cell that uses it):\n" + "\n".join(
        f"  ### {ref.heading()}: `{key}`" for ref, key in stale)


def test_no_key_is_documented_twice_under_one_heading() -> None:
    """A key listed twice (say with two different meanings) is an error of the reference."""
    duplicates = duplicate_rows(doc_rows(DOC.read_text()))
    assert not duplicates, "remove one of each:\n" + "\n".join(duplicates)


def test_every_documented_default_is_the_code_default(recorded) -> None:
    """The Default column says what the code does when the key is absent ("required", or the literal value)."""
    _, defaults = recorded
    wrong = wrong_defaults(defaults, doc_rows(DOC.read_text()))
    assert not wrong, "fix docs/configuration.md (or the code):\n" + "\n".join(wrong)


def test_every_installed_driver_and_sink_type_is_exercised(code_keys) -> None:
    """A new driver or sink type needs a feature cell here, or its keys would go unchecked."""
    drivers = {ref.kind for ref in code_keys if ref.kind_key == "driver"}
    sinks = {ref.kind for ref in code_keys if ref.kind_key == "type" and ref.pattern == "sink.<name>"}
    unexercised = sorted(set(available_drivers()) - drivers)
    assert not unexercised, f"add a cell using driver(s) {unexercised} with all their keys to FEATURE_CELLS"
    landed = {s for s in SINK_TYPES if importlib.util.find_spec(SINK_TYPES[s]) is not None}
    unexercised = sorted(landed - sinks)
    assert not unexercised, f"add a cell using sink type(s) {unexercised} with all their keys to FEATURE_CELLS"


def test_block_types_table_matches_the_catalog() -> None:
    """The block-type table of the reference is the one generated from the block catalog."""
    assert doc_block_types(DOC.read_text()) == block_types_markdown(), (
        "regenerate it: python -m edged.config_reference --blocks, and paste it over the old table")


def test_block_types_table_lists_every_type_and_pin() -> None:
    """Every block type of the catalog appears with each of its pins (a check of the generator itself)."""
    from edged.control.blocks_catalog import BLOCK_TYPES

    table = block_types_markdown()
    for bt in BLOCK_TYPES.values():
        row = next(line for line in table.splitlines() if line.startswith(f"| `{bt.name}` |"))
        if bt.extensible:
            assert f"`{bt.inputs[0].name}`..`{bt.inputs[-1].name}` {bt.inputs[0].kind}" in row
        for pin in [*(() if bt.extensible else bt.inputs), *bt.outputs]:
            assert f"`{pin.name}` {pin.kind}" in row, (bt.name, pin.name)


def test_doc_headings_are_all_parsed() -> None:
    """Every ### heading of the reference is a table heading the checker understands."""
    headings = [line[4:] for line in DOC.read_text().splitlines() if line.startswith("### ")]
    assert headings
    assert [h for h in headings if not parse_heading(h)] == []


# -- the tooling itself ------------------------------------------------------------------------

def test_parse_doc_reads_keys_per_heading() -> None:
    """Keys are the backticked first column of the tables under ### headings; other text is ignored."""
    text = """# Title
### Top-level tables
| Key | Type |
|---|---|
| `cell` | table |
### [device.<name>]
Some prose mentioning `not_a_key`.
| `driver` | string |
| `timeout_s` | number |
### [device.<name>] driver = "modbus"
| `host` | string |
### [sink.<name>] type = "mqtt" or "sparkplug" — connection
| `port` | integer |
### Not a table
| `nothing` | ignored |
## Another chapter
| `ignored` | outside a table heading |
"""
    assert parse_doc(text) == {
        TableRef(""): {"cell"},
        TableRef("device.<name>"): {"driver", "timeout_s"},
        TableRef("device.<name>", "driver", "modbus"): {"host"},
        TableRef("sink.<name>", "type", "mqtt"): {"port"},
        TableRef("sink.<name>", "type", "sparkplug"): {"port"},
    }


@pytest.mark.parametrize("heading, refs", [
    ("Top-level tables", [TableRef("")]),
    ("[cell]", [TableRef("cell")]),
    ("[device.<name>.tag.<name>]", [TableRef("device.<name>.tag.<name>")]),
    ('[device.<name>] driver = "modbus"', [TableRef("device.<name>", "driver", "modbus")]),
    ('[sink.<name>] type = "mqtt", "sparkplug" - shared',
     [TableRef("sink.<name>", "type", "mqtt"), TableRef("sink.<name>", "type", "sparkplug")]),
    ("Examples", []),
    ("[cell] and more", []),
])
def test_parse_heading_forms(heading: str, refs: list[TableRef]) -> None:
    """The heading forms the reference uses, and text that is not a table heading."""
    assert parse_heading(heading) == refs


def test_compare_reports_both_directions() -> None:
    """Missing keys and stale keys are told apart."""
    code = {TableRef("cell"): {"name", "log_level"}}
    doc = {TableRef("cell"): {"name", "colour"}, TableRef("gone"): {"x"}}
    undocumented, stale = compare(code, doc)
    assert undocumented == [(TableRef("cell"), "log_level")]
    assert stale == [(TableRef("cell"), "colour"), (TableRef("gone"), "x")]


def test_recorder_normalises_names_and_restores_section() -> None:
    """User-chosen names become <name>; the Section hooks are restored afterwards."""
    before = (Section.recorder, Section.sections)
    data = {
        "cell": {"name": "n"},
        "scan": {"fast": {"interval_ms": 100}},
        "device": {"press1": {"driver": "no-such-driver", "tag": {"oil_temp": {"address": "x", "scale": 2}}}},
    }
    with KeyRecorder() as rec:
        issues = rec.load(data, "mem.toml")
    assert (Section.recorder, Section.sections) == before
    assert [i.path for i in issues] == ["device.press1.driver"]
    assert {"interval_ms", "phase_ms"} <= rec.index[TableRef("scan.<name>")]
    assert {"driver", "timeout_s", "tag"} <= rec.index[TableRef("device.<name>")]
    assert {"scale", "deadband", "export_metric"} <= rec.index[TableRef("device.<name>.tag.<name>")]
    assert not any("press1" in ref.pattern or "oil_temp" in ref.pattern for ref in rec.index)


@pytest.mark.skipif("modbus" not in available_drivers(), reason="the modbus driver is not installed")
def test_driver_keys_are_grouped_by_driver(tmp_path: Path) -> None:
    """Keys only the driver reads go under its own heading; common keys stay common."""
    text = FEATURE_CELLS["modbus_rtu"][2]
    (tmp_path / "rtu.toml").write_text(text)
    index, issues = collect([tmp_path / "rtu.toml"])
    assert issues == []
    modbus = TableRef("device.<name>", "driver", "modbus")
    assert "baudrate" in index[modbus] and "baudrate" not in index[TableRef("device.<name>")]
    assert "timeout_s" in index[TableRef("device.<name>")] and "timeout_s" not in index[modbus]
    assert "address" in index[TableRef("device.<name>.tag.<name>", "driver", "modbus")]


def test_module_command_prints_keys_and_differences(tmp_path: Path) -> None:
    """`python -m edged.config_reference CELL --doc DOC` prints keys, then what the doc lacks (exit 1)."""
    cell = tmp_path / "c.toml"
    cell.write_text('[cell]\nname = "x"\n[spool]\n[sink.a]\ntype = "jsonl"\n')
    doc = tmp_path / "doc.md"
    doc.write_text("### [cell]\n| `name` | string |\n| `colour` | string |\n")
    if importlib.util.find_spec(SINK_TYPES["jsonl"]) is None:
        pytest.skip("the jsonl sink has not landed")
    proc = subprocess.run([sys.executable, "-m", "edged.config_reference", str(cell), "--doc", str(doc)],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    cell_line = [line for line in proc.stdout.splitlines() if line.startswith("### [cell]: ")]
    assert len(cell_line) == 1 and "log_level, name" in cell_line[0]
    assert "undocumented: [cell]: log_level" in proc.stdout
    assert "stale (documented, never read): [cell]: colour" in proc.stdout
    rows = proc.stdout.split("Rows to fill in and add to the reference:\n", 1)[1]
    assert "### [cell]\n\n| Key | Type | Default | Meaning |\n|---|---|---|---|\n" in rows
    assert "| `log_level` |  |  |  |" in rows
    assert "Traceback" not in proc.stderr


def test_skeleton_groups_rows_by_heading() -> None:
    """Missing keys come out as markdown rows under their headings, ready to fill in."""
    out = skeleton([(TableRef("sink.<name>", "type", "mqtt"), "qos"), (TableRef("cell"), "b"),
                    (TableRef("cell"), "a")])
    assert out.splitlines() == [
        "### [cell]", "", "| Key | Type | Default | Meaning |", "|---|---|---|---|", "| `a` |  |  |  |",
        "| `b` |  |  |  |", "", '### [sink.<name>] type = "mqtt"', "", "| Key | Type | Default | Meaning |",
        "|---|---|---|---|", "| `qos` |  |  |  |"]


def test_format_index_is_sorted() -> None:
    """The printed index is stable: tables and keys sorted."""
    out = format_index({TableRef("scan.<name>"): {"phase_ms", "interval_ms"}, TableRef(""): {"cell"}})
    assert out.splitlines() == ["### Top-level tables: cell", "### [scan.<name>]: interval_ms, phase_ms"]


DOC_WITH_DEFAULTS = """### [sink.<name>] type = "mqtt"
| Key | Type | Default | Meaning |
|---|---|---|---|
| `qos` | integer | `1` | QoS. |
| `topic` | template | `"{cell}/{device}"` | Topic. |
| `retain` | boolean | `false` | Retain. |
| `port` | integer | `1883`, or `8883` with TLS | Port. |
| `host` | string | required | Host. |
| `client_id` | string | edged-mqtt-<sink name> | Prose is not compared. |
| `qos` | integer | `2` | Listed twice. |
"""


def test_doc_rows_read_the_default_column_and_the_line() -> None:
    """Each key row gives its table, key, Default text and line number."""
    rows = doc_rows(DOC_WITH_DEFAULTS)
    ref = TableRef("sink.<name>", "type", "mqtt")
    assert rows[0] == DocRow(ref, "qos", "`1`", 4)
    assert [r.key for r in rows] == ["qos", "topic", "retain", "port", "host", "client_id", "qos"]
    assert duplicate_rows(rows) == ['[sink.<name>] type = "mqtt": `qos` is listed twice (lines 4 and 10)']


@pytest.mark.parametrize("text, values", [
    ("`5`", [5]), ('`"columns"`', ["columns"]), ("`true`", [True]), ("required", [REQUIRED]),
    ("`1883`, or `8883` with TLS", [1883, 8883]), ("the cell name", None), ("none", None), ("`0.5`", [0.5]),
])
def test_doc_defaults_reads_literals_and_required(text: str, values: list | None) -> None:
    """TOML literals in backticks, "required", or None for prose (not compared)."""
    assert doc_defaults(text) == values


def test_wrong_defaults_compares_only_definite_defaults() -> None:
    """A different literal or a required key documented with a default is reported; prose and None are not."""
    ref = TableRef("sink.<name>", "type", "mqtt")
    code = {(ref, "qos"): [1], (ref, "topic"): ["{cell}/{device}"], (ref, "retain"): [True],
            (ref, "port"): [8883], (ref, "host"): [None], (ref, "client_id"): ["edged-mqtt-x"]}
    wrong = wrong_defaults(code, doc_rows(DOC_WITH_DEFAULTS))
    assert wrong == [
        '[sink.<name>] type = "mqtt": `retain` defaults to `true` in the code, the reference says \'`false`\' '
        '(line 6)',
        '[sink.<name>] type = "mqtt": `qos` defaults to `1` in the code, the reference says \'`2`\' (line 10)']
    assert wrong_defaults({(ref, "host"): [REQUIRED]}, doc_rows(DOC_WITH_DEFAULTS)) == []
    assert wrong_defaults({(ref, "client_id"): [REQUIRED]}, doc_rows(DOC_WITH_DEFAULTS)) == [
        '[sink.<name>] type = "mqtt": `client_id` is required, the reference says \'edged-mqtt-<sink name>\' '
        '(line 9)']


def test_the_recorder_keeps_the_defaults_the_code_passes() -> None:
    """Required keys, literal defaults; the Section methods are restored afterwards."""
    before = Section.raw
    with KeyRecorder() as rec:
        rec.load({"cell": {"name": "n"}}, "mem.toml")
    assert Section.raw is before
    assert rec.defaults[(TableRef("cell"), "name")] == [REQUIRED]
    assert rec.defaults[(TableRef("cell"), "heartbeat_s")] != []
