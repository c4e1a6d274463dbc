"""Config of cycle tasks: valid wiring, execution order, and every error kind at its exact dotted path."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from edged.cell import load_cell
from edged.control.config import parse_time_ms
from edged.control.graph import compile_task
from edged.control.sim import load_tasks
from edged.errors import ConfigError
from edged.tag import Access, DataType, Tag


def _tag(name: str, dtype: str, access: str = "read", slot: int = 0) -> Tag:
    return Tag("press1", name, "x", DataType(dtype), "default", None, Access(access), slot=slot)


TAGS = {t.key: t for t in [
    _tag("running", "bool", "write", 0), _tag("part_sensor", "bool", slot=1), _tag("spindle_speed", "float32", slot=2),
    _tag("oil_temp", "float32", slot=3), _tag("good_parts", "uint32", "write", 4),
    _tag("machine_state", "uint16", "write", 5), _tag("program", "string", slot=6),
]}

GOOD = """
[task.fast]
period_us = 10000
[task.fast.block.parts]
type = "CTU"
in = { CU = "part_edge.Q", R = false, PV = 1000 }
out = { CV = "press1.good_parts" }
safe = { CV = 0 }
bad_after_ms = 2000
[task.fast.block.part_edge]
type = "R_TRIG"
in = { CLK = "press1.part_sensor" }
[task.slow]
period_us = 100000
[task.slow.block.hot]
type = "GT"
in = { IN1 = "press1.oil_temp", IN2 = 80.0, HYST = 5.0 }
[task.slow.block.t]
type = "TON"
in = { IN = "hot.OUT", PT = "T#1m30s" }
"""


def errors(text: str) -> dict[str, str]:
    """path -> message of every issue."""
    with pytest.raises(ConfigError) as exc:
        load_tasks(textwrap.dedent(text), TAGS)
    return {i.path: i.message for i in exc.value.issues}


def test_valid_tasks_are_ordered_by_data_flow_and_period() -> None:
    spec = load_tasks(GOOD, TAGS)
    assert [t.name for t in spec.tasks] == ["fast", "slow"]
    assert [b.name for b in spec.tasks[0].blocks] == ["part_edge", "parts"]
    parts = spec.tasks[0].blocks[1]
    assert parts.outputs["CV"].key == "press1.good_parts"
    assert parts.safe == {"CV": 0.0} and parts.bad_after_ms == 2000
    assert spec.tasks[1].blocks[1].inputs["PT"].value == 90_000.0
    assert spec.base_period_us == 10000
    lay = compile_task(spec.tasks[0])
    assert lay.out_tags == [TAGS["press1.good_parts"]]
    assert lay.tag_inputs == [(1, lay.pins["press1.part_sensor"])]
    assert lay.report_names == ["part_edge.Q", "parts.Q", "parts.CV"]
    lay.program()   # the C side accepts the layout


@pytest.mark.parametrize("text,ms", [("500ms", 500.0), ("2.5s", 2500.0), ("T#1m30s", 90_000.0),
                                     ("TIME#100us", 0.1), ("t#1h", 3_600_000.0), ("1d", 86_400_000.0)])
def test_time_literals(text: str, ms: float) -> None:
    assert parse_time_ms(text) == pytest.approx(ms)


@pytest.mark.parametrize("text", ["", "5", "ms", "5 s", "1x", "T#", "press1.x"])
def test_not_time_literals(text: str) -> None:
    assert parse_time_ms(text) is None


def test_algebraic_loop_names_the_loop() -> None:
    errs = errors("""
        [task.fast]
        period_us = 1000
        [task.fast.block.a]
        type = "AND"
        in = { IN1 = "press1.part_sensor", IN2 = "b.OUT" }
        [task.fast.block.b]
        type = "OR"
        in = { IN1 = "a.OUT", IN2 = "press1.running" }
    """)
    assert list(errs) == ["task.fast.block.a.in.IN2"]
    assert "algebraic loop" in errs["task.fast.block.a.in.IN2"]
    assert "a <- b <- a" in errs["task.fast.block.a.in.IN2"]


def test_self_loop_is_a_loop() -> None:
    errs = errors("""
        [task.fast]
        period_us = 1000
        [task.fast.block.acc]
        type = "ADD"
        in = { IN1 = "acc.OUT", IN2 = 1 }
    """)
    assert "acc <- acc" in errs["task.fast.block.acc.in.IN1"]


def test_z1_breaks_a_loop() -> None:
    spec = load_tasks("""
        [task.fast]
        period_us = 1000
        [task.fast.block.acc]
        type = "ADD"
        in = { IN1 = "prev.OUT", IN2 = 1 }
        [task.fast.block.prev]
        type = "Z1"
        in = { IN = "acc.OUT" }
    """, TAGS)
    lay = compile_task(spec.tasks[0])
    prog = lay.program()
    for k in range(5):
        prog.step(k)
    assert prog.get(lay.pins["acc.OUT"])[0] == 5.0


def test_bad_references_and_pins() -> None:
    errs = errors("""
        [task.fast]
        period_us = 1000
        [task.fast.block.a]
        type = "AND"
        in = { IN1 = "press1.nope", IN2 = "ghost.OUT", IN9 = true }
        [task.fast.block.b]
        type = "TON"
        in = { IN = "a.Q", PT = "soon" }
        out = { ET = "press1.machine_state", XX = "press1.good_parts" }
        [task.fast.block.c]
        type = "Frobnicate"
        [task.fast.block.d]
        type = "CTU"
        in = { CU = "nodot" }
        colour = "red"
    """)
    assert errs == {
        "task.fast.block.a.in.IN1": "expected a tag (device.tag), a block output (block.PIN) or a constant, "
                                    "found 'press1.nope', which is neither a tag nor a block of this task",
        "task.fast.block.a.in.IN2": "expected a tag (device.tag), a block output (block.PIN) or a constant, "
                                    "found 'ghost.OUT', which is neither a tag nor a block of this task",
        "task.fast.block.a.in.IN9": "expected an input pin of AND (IN1, IN2, IN3, IN4, IN5, IN6, IN7, IN8), "
                                    "found 'IN9'",
        "task.fast.block.b.in.IN": "expected an output pin of block 'a' (AND: OUT), found 'Q'",
        "task.fast.block.b.in.PT": "expected a tag (device.tag), a block output (block.PIN) or a constant, "
                                   "found string 'soon'",
        "task.fast.block.b.out.XX": "expected an output pin of TON (Q, ET), found 'XX'",
        "task.fast.block.c.type": "expected one of 'AND', 'OR', 'XOR', 'NOT', 'GT', 'GE', 'LT', 'LE', 'EQ', "
                                  "'NE', 'R_TRIG', 'F_TRIG', 'TON', 'TOF', 'TP', 'CTU', 'CTD', 'CTUD', 'SR', "
                                  "'RS', 'ADD', 'SUB', 'MUL', 'DIV', 'MIN', 'MAX', 'LIMIT', 'SEL', 'MOVE', "
                                  "'SCALE', 'PID', 'RAMP', 'LPF', 'MAVG', 'Z1', 'QUALITY', 'HEARTBEAT', "
                                  "found 'Frobnicate'",
        "task.fast.block.d.in.CU": "expected a tag (device.tag), a block output (block.PIN) or a constant, "
                                   "found string 'nodot'",
        "task.fast.block.d.colour": "unknown key (allowed here: bad_after_ms, deadband, in, out, report, retain, safe, "
                                    "type)",
    }


def test_type_mismatches() -> None:
    errs = errors("""
        [task.fast]
        period_us = 1000
        [task.fast.block.a]
        type = "AND"
        in = { IN1 = "press1.oil_temp", IN2 = 1 }
        [task.fast.block.cmp]
        type = "GT"
        in = { IN1 = "press1.running", IN2 = true }
        [task.fast.block.cnt]
        type = "CTU"
        in = { CU = "cmp.OUT", PV = 2.5 }
        out = { CV = "press1.running", Q = "press1.good_parts" }
        [task.fast.block.sel]
        type = "SEL"
        in = { G = "cmp.OUT", IN0 = "press1.part_sensor", IN1 = 3 }
        [task.fast.block.s]
        type = "MOVE"
        in = { IN = "press1.program" }
    """)
    assert errs == {
        "task.fast.block.a.in.IN1": "expected a bool for input IN1, found tag 'press1.oil_temp' of type 'float32'",
        "task.fast.block.a.in.IN2": "expected a bool (true or false), found integer 1",
        "task.fast.block.cmp.in.IN1": "expected a number for input IN1, found tag 'press1.running' of type 'bool'",
        "task.fast.block.cmp.in.IN2": "expected a number, found boolean true",
        "task.fast.block.cnt.in.PV": "expected a whole number, found number 2.5",
        "task.fast.block.cnt.out.CV": "expected a bool output for tag 'press1.running' of type 'bool', "
                                      "found CV (a number)",
        "task.fast.block.cnt.out.Q": "expected a numeric output for tag 'press1.good_parts' of type 'uint32', "
                                     "found Q (a bool)",
        "task.fast.block.sel.in.IN1": "expected a bool like the block's other inputs, found constant 3.0 (a number)",
        "task.fast.block.s.in.IN": "expected a bool or numeric tag (strings are not in the process image), "
                                   "found 'press1.program' of type 'string'",
    }


def test_outputs_must_be_writable_and_bound_once() -> None:
    errs = errors("""
        [task.fast]
        period_us = 1000
        [task.fast.block.a]
        type = "MOVE"
        in = { IN = 1.5 }
        out = { OUT = "press1.oil_temp" }
        [task.fast.block.b]
        type = "MOVE"
        in = { IN = 1 }
        out = { OUT = "press1.good_parts" }
        [task.slow]
        period_us = 2000
        [task.slow.block.c]
        type = "MOVE"
        in = { IN = 2 }
        out = { OUT = "press1.good_parts" }
    """)
    assert errs == {
        "task.fast.block.a.out.OUT": "expected a writable tag, found 'press1.oil_temp' with access = \"read\" "
                                     "(set access = \"write\" on the tag to let control write it)",
        "task.slow.block.c.out.OUT": "expected each tag to be written by one output only, found "
                                     "'press1.good_parts' already bound at task.fast.block.b.out.OUT",
    }


def test_missing_inputs_and_task_settings() -> None:
    errs = errors("""
        [task.fast]
        period_us = 50
        priority = 120
        overrun = "catch-up"
        [task.fast.block.t]
        type = "TON"
        in = { IN = "press1.running" }
        [task.fast.block.o]
        type = "OR"
        in = { IN1 = "press1.running" }
        [task.fast.block.m]
        type = "MAVG"
        in = { IN = "press1.oil_temp", N = 100000 }
        bad_after_ms = 10
        [task.empty]
        period_us = 1000
    """)
    assert errs == {
        "task.fast.period_us": "expected a value between 100 and 10000000, found 50",
        "task.fast.priority": "expected a value between 0 and 99, found 120",
        "task.fast.overrun": "expected one of 'skip', 'delay', found 'catch-up'",
        "task.fast.block.t.in.PT": "missing required input of TON",
        "task.fast.block.o.in": "expected at least two inputs (IN1, IN2, ... IN8) for OR, found 1",
        "task.fast.block.m.in.N": "expected a window between 1 and 4096 cycles, found 100000",
        "task.fast.block.m.bad_after_ms": "expected bad_after_ms only together with safe values "
                                          "(safe = { PIN = value })",
        "task.empty.block": "expected at least one block table (task.<name>.block.<block>)",
    }


def test_periods_must_be_multiples_of_the_fastest() -> None:
    errs = errors("""
        [task.fast]
        period_us = 4000
        [task.fast.block.a]
        type = "NOT"
        in = { IN = "press1.running" }
        [task.odd]
        period_us = 10000
        [task.odd.block.b]
        type = "NOT"
        in = { IN = "press1.running" }
    """)
    assert errs == {"task.odd.period_us": "expected an integer multiple of the fastest task's period "
                                          "(fast: 4000 us), found 10000"}


def test_ambiguous_reference() -> None:
    errs = errors("""
        [task.fast]
        period_us = 1000
        [task.fast.block.press1]
        type = "CTU"
        in = { CU = true }
        [task.fast.block.b]
        type = "NOT"
        in = { IN = "press1.running" }
    """)
    assert "names both a block output and a tag" in errs["task.fast.block.b.in.IN"]


def test_control_tasks_in_a_cell_file(tmp_path: Path) -> None:
    cell = tmp_path / "cell.toml"
    cell.write_text(textwrap.dedent("""
        [cell]
        name = "t"
        [device.sim1]
        driver = "sim"
        [device.sim1.tag.running]
        address = "square:10"
        [device.sim1.tag.setpoint]
        address = "constant:0"
        type = "uint16"
        access = "write"
        [task.fast]
        period_us = 10000
        [task.fast.block.n]
        type = "CTU"
        in = { CU = "sim1.running", PV = 10 }
        out = { CV = "sim1.setpoint" }
    """))
    loaded = load_cell(cell)
    assert loaded.control is not None and loaded.control.tasks[0].blocks[0].name == "n"
    cell.write_text(cell.read_text().replace('out = { CV = "sim1.setpoint" }', 'out = { CV = "sim1.running" }'))
    with pytest.raises(ConfigError) as exc:
        load_cell(cell)
    assert [(i.path, i.message) for i in exc.value.issues] == [
        ("task.fast.block.n.out.CV", "expected a writable tag, found 'sim1.running' with access = \"read\" "
                                     "(set access = \"write\" on the tag to let control write it)")]


def test_report_selects_output_pins() -> None:
    spec = load_tasks("""
        [task.fast]
        period_us = 1000
        [task.fast.block.t]
        type = "TON"
        in = { IN = "press1.running", PT = "2s" }
        report = ["Q"]
        [task.fast.block.n]
        type = "NOT"
        in = { IN = "t.Q" }
        report = false
    """, TAGS)
    assert compile_task(spec.tasks[0]).report_names == ["t.Q"]
    errs = errors("""
        [task.fast]
        period_us = 1000
        [task.fast.block.t]
        type = "TON"
        in = { IN = "press1.running", PT = "2s" }
        report = ["Q", "EET"]
        [task.fast.block.n]
        type = "NOT"
        in = { IN = "t.Q" }
        report = "yes"
    """)
    assert errs == {"task.fast.block.t.report[1]": "expected an output pin of TON (Q, ET), found string 'EET'",
                    "task.fast.block.n.report": "expected true, false or an array of output pins, "
                                                "found string 'yes'"}


def test_a_block_with_a_wrong_type_is_reported_once() -> None:
    errs = errors("""
        [task.fast]
        period_us = 1000
        [task.fast.block.a]
        type = "TONN"
        in = { IN = "press1.running", PT = 10 }
        [task.fast.block.b]
        type = "NOT"
        in = { IN = "a.Q" }
    """)
    assert list(errs) == ["task.fast.block.a.type"]


def test_deadband_needs_numeric_outputs() -> None:
    errs = errors("""
        [task.fast]
        period_us = 1000
        [task.fast.block.t]
        type = "NOT"
        in = { IN = "press1.running" }
        deadband = 1.0
    """)
    assert errs == {"task.fast.block.t.deadband": "expected a deadband only on blocks with numeric outputs, found NOT"}


def test_retain_and_wake_latency_keys() -> None:
    spec = load_tasks("""
        [task.fast]
        period_us = 1000
        retain_interval_ms = 500
        cpu_dma_latency_us = 0
        [task.fast.block.n]
        type = "CTU"
        in = { CU = true }
        retain = true
        [task.fast.block.alive]
        type = "HEARTBEAT"
        in = { PT = "1s" }
    """, TAGS)
    t = spec.tasks[0]
    assert (t.retain_interval_ms, t.cpu_dma_latency_us) == (500, 0)
    lay = compile_task(t)
    assert (lay.retain, lay.retain_names, lay.retain_types) == ([0], ["n"], ["CTU"])
    assert errors("""
        [task.fast]
        period_us = 1000
        retain_interval_ms = 10
        cpu_dma_latency_us = -2
        [task.fast.block.sum]
        type = "ADD"
        in = { IN1 = 1.0, IN2 = 2.0 }
        retain = true
    """) == {
        "task.fast.retain_interval_ms": "expected a value between 100 and 3600000, found 10",
        "task.fast.cpu_dma_latency_us": "expected a value between -1 and 2000000000, found -2",
        "task.fast.block.sum.retain": "expected retain only on blocks that keep state (CTD, CTU, CTUD, F_TRIG, PID, "
                                      "RS, R_TRIG, SR, TOF, TON, TP, Z1), found ADD",
    }
