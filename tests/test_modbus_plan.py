"""Request planning: the exact plan for given tag sets (gaps, limits, unit ids, scan groups, coils)."""
from __future__ import annotations

from edged.drivers.modbus.address import Table
from modbus_support import load_devices, tcp_device

SCANS = "[scan.fast]\ninterval_ms = 100\n[scan.slow]\ninterval_ms = 1000\n"


def plan_of(tags: dict[str, dict], **keys: object) -> dict[str, list[str]]:
    devices, _ = load_devices(SCANS + tcp_device("press1", 5020, tags, **keys))
    return devices["press1"].driver.plan()


def test_contiguous_and_near_ranges_merge() -> None:
    plan = plan_of({
        "oil_temp": {"address": "hr:100", "type": "float32"},
        "pressure": {"address": "hr:102", "type": "int16"},
        "flow": {"address": "hr:106", "type": "uint32"},       # gap of 3 (103..105): merged
        "level": {"address": "hr:119", "type": "uint16"},      # gap of 11 (108..118): new request
    })
    assert plan == {"default": ["unit 1 hr 100..107 (8 regs): oil_temp, pressure, flow",
                                "unit 1 hr 119 (1 reg): level"]}


def test_gap_limit_is_inclusive_and_configurable() -> None:
    tags = {"a": {"address": "hr:0"}, "b": {"address": "hr:11"}}   # gap of exactly 10
    assert plan_of(tags) == {"default": ["unit 1 hr 0..11 (12 regs): a, b"]}
    assert plan_of(tags, max_gap=9) == {"default": ["unit 1 hr 0 (1 reg): a", "unit 1 hr 11 (1 reg): b"]}
    assert plan_of(tags, max_gap=0) == {"default": ["unit 1 hr 0 (1 reg): a", "unit 1 hr 11 (1 reg): b"]}
    assert plan_of({"a": {"address": "hr:0"}, "b": {"address": "hr:1"}}, max_gap=0) == \
        {"default": ["unit 1 hr 0..1 (2 regs): a, b"]}


def test_max_registers_splits_requests() -> None:
    tags = {f"r{i}": {"address": f"hr:{i * 2}", "type": "float32"} for i in range(70)}   # 140 registers
    plan = plan_of(tags)
    assert plan["default"][0].startswith("unit 1 hr 0..123 (124 regs): r0, r1,")   # 62 float32 = 124 regs
    assert plan["default"][1] == "unit 1 hr 124..139 (16 regs): r62, r63, r64, r65, r66, r67, r68, r69"
    small = plan_of({"a": {"address": "hr:0", "type": "float64"}, "b": {"address": "hr:4", "type": "float64"},
                     "c": {"address": "hr:8", "type": "float64"}}, max_registers=8)
    assert small == {"default": ["unit 1 hr 0..7 (8 regs): a, b", "unit 1 hr 8..11 (4 regs): c"]}


def test_value_never_split_across_requests() -> None:
    plan = plan_of({"a": {"address": "hr:0", "type": "uint16"}, "b": {"address": "hr:4", "type": "uint64"}},
                   max_registers=6)
    assert plan == {"default": ["unit 1 hr 0 (1 reg): a", "unit 1 hr 4..7 (4 regs): b"]}


def test_several_unit_ids_on_one_connection() -> None:
    plan = plan_of({
        "a": {"address": "hr:0"},
        "b": {"address": "hr:1", "unit_id": 3},
        "c": {"address": "hr:2", "unit_id": 3},
        "d": {"address": "hr:1", "unit_id": 1},
    }, unit_id=2)
    assert plan == {"default": ["unit 1 hr 1 (1 reg): d",
                                "unit 2 hr 0 (1 reg): a",
                                "unit 3 hr 1..2 (2 regs): b, c"]}


def test_several_scan_groups_and_tables() -> None:
    plan = plan_of({
        "run": {"address": "co:0", "scan": "fast"},
        "jog": {"address": "co:5", "scan": "fast"},
        "door": {"address": "10001", "scan": "fast"},
        "speed": {"address": "ir:0", "scan": "fast"},
        "temp": {"address": "hr:0", "type": "float32", "scan": "slow"},
        "count": {"address": "hr:2", "type": "uint32"},
        "alarm": {"address": "hr:3.4", "scan": "slow"},
    })
    assert plan == {
        "default": ["unit 1 hr 2..3 (2 regs): count"],
        "fast": ["unit 1 co 0..5 (6 bits): run, jog",
                 "unit 1 di 0 (1 bit): door",
                 "unit 1 ir 0 (1 reg): speed"],
        "slow": ["unit 1 hr 0..3 (4 regs): temp, alarm"],
    }


def test_coils_use_bit_gap_and_bit_limit() -> None:
    tags = {"a": {"address": "co:0"}, "b": {"address": "co:64"}, "c": {"address": "co:130"}}   # gaps of 63 and 65 bits
    assert plan_of(tags) == {"default": ["unit 1 co 0..64 (65 bits): a, b", "unit 1 co 130 (1 bit): c"]}
    assert plan_of(tags, max_gap_bits=64, max_bits=64) == \
        {"default": ["unit 1 co 0 (1 bit): a", "unit 1 co 64 (1 bit): b", "unit 1 co 130 (1 bit): c"]}
    wide = {f"c{i}": {"address": f"co:{i}"} for i in range(0, 2100, 100)}
    assert plan_of(wide, max_gap_bits=100) == {"default": [
        "unit 1 co 0..1900 (1901 bits): " + ", ".join(f"c{i}" for i in range(0, 2000, 100)),
        "unit 1 co 2000 (1 bit): c2000"]}


def test_overlapping_tags_share_registers() -> None:
    plan = plan_of({
        "word": {"address": "hr:10", "type": "uint16"},
        "bit0": {"address": "hr:10.0"},
        "bit15": {"address": "40011.15"},
        "both": {"address": "hr:10", "type": "uint32"},
    })
    assert plan == {"default": ["unit 1 hr 10..11 (2 regs): bit0, bit15, word, both"]}


def test_reference_and_prefix_styles_plan_alike() -> None:
    a = plan_of({"x": {"address": "40101"}, "y": {"address": "400103"}, "z": {"address": "hr:104"}})
    assert a == {"default": ["unit 1 hr 100..104 (5 regs): x, y, z"]}


def test_plan_requests_decode_program_covers_every_tag() -> None:
    devices, _ = load_devices(SCANS + tcp_device("press1", 5020, {
        "t": {"address": "hr:3", "type": "float64", "order": "DCBA"}, "u": {"address": "ir:0"}}))
    drv = devices["press1"].driver
    (req_hr, req_ir) = drv.requests["default"]
    assert (req_hr.table, req_hr.start, req_hr.count, req_hr.program.size) == (Table.HOLDING, 3, 4, 1)
    assert (req_ir.table, req_ir.start, req_ir.count, req_ir.program.size) == (Table.INPUT, 0, 1, 1)
