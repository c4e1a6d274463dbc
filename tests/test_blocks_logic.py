"""Table-driven semantics of the stateless and edge/latch blocks, run through the C interpreter."""
from __future__ import annotations

import math

import pytest

from edged.control.blocks_catalog import BLOCK_TYPES
from edged.control.sim import BlockSim

MS = 1_000_000


def test_op_codes_match_the_catalog() -> None:
    from edged.cext.control import OPCODES

    assert OPCODES == {name: t.code for name, t in BLOCK_TYPES.items()}


BOOL_TABLE = [
    # type, inputs, expected OUT
    ("AND", dict(IN1=1, IN2=1), True), ("AND", dict(IN1=1, IN2=0), False), ("AND", dict(IN1=0, IN2=0), False),
    ("OR", dict(IN1=0, IN2=0), False), ("OR", dict(IN1=0, IN2=1), True), ("OR", dict(IN1=1, IN2=1), True),
    ("XOR", dict(IN1=1, IN2=0), True), ("XOR", dict(IN1=1, IN2=1), False), ("XOR", dict(IN1=0, IN2=0), False),
]


@pytest.mark.parametrize("kind,inputs,expected", BOOL_TABLE)
def test_two_input_logic(kind: str, inputs: dict, expected: bool) -> None:
    assert BlockSim(kind).step(0, **inputs)["OUT"] is expected


@pytest.mark.parametrize("kind,values,expected", [
    ("AND", [1, 1, 1, 1, 1], True), ("AND", [1, 1, 0, 1, 1], False),
    ("OR", [0, 0, 0, 0, 1], True), ("OR", [0, 0, 0, 0, 0], False),
    ("XOR", [1, 1, 1, 0, 0], True), ("XOR", [1, 1, 0, 0, 0], False),   # odd parity, as IEC's extensible XOR
])
def test_extensible_logic(kind: str, values: list[int], expected: bool) -> None:
    pins = [f"IN{i + 1}" for i in range(len(values))]
    sim = BlockSim(kind, inputs=pins)
    assert sim.step(0, **dict(zip(pins, values)))["OUT"] is expected


def test_not() -> None:
    sim = BlockSim("NOT")
    assert sim.step(0, IN=0)["OUT"] is True
    assert sim.step(1, IN=1)["OUT"] is False


# comparison with hysteresis: (IN1 sequence, expected OUT sequence) for IN2 = 80, HYST = 5
HYST_TABLE = [
    ("GT", [70, 80, 81, 78, 76, 75, 74, 80.5], [False, False, True, True, True, False, False, True]),
    ("GE", [70, 80, 78, 75, 74.9, 79.9, 80], [False, True, True, True, False, False, True]),
    ("LT", [90, 80, 79, 82, 84.9, 85, 79.9], [False, False, True, True, True, False, True]),
    ("LE", [90, 80, 84, 85, 85.1, 80.1, 80], [False, True, True, True, False, False, True]),
]


@pytest.mark.parametrize("kind,seq,expected", HYST_TABLE)
def test_comparison_with_hysteresis(kind: str, seq: list[float], expected: list[bool]) -> None:
    sim = BlockSim(kind, const=dict(IN2=80.0, HYST=5.0))
    assert [sim.step(i, IN1=v)["OUT"] for i, v in enumerate(seq)] == expected


@pytest.mark.parametrize("kind,a,b,expected", [
    ("GT", 2, 1, True), ("GT", 1, 1, False), ("GE", 1, 1, True), ("GE", 0, 1, False),
    ("LT", 0, 1, True), ("LT", 1, 1, False), ("LE", 1, 1, True), ("LE", 2, 1, False),
    ("EQ", 1, 1, True), ("EQ", 1, 1.0000001, False), ("NE", 1, 2, True), ("NE", 3, 3, False),
])
def test_comparison_without_hysteresis(kind: str, a: float, b: float, expected: bool) -> None:
    assert BlockSim(kind).step(0, IN1=a, IN2=b)["OUT"] is expected


def test_eq_with_tolerance() -> None:
    sim = BlockSim("EQ", const=dict(HYST=0.5))
    assert sim.step(0, IN1=10.0, IN2=10.4)["OUT"] is True
    assert sim.step(1, IN1=10.0, IN2=10.6)["OUT"] is False
    ne = BlockSim("NE", const=dict(HYST=0.5))
    assert ne.step(0, IN1=10.0, IN2=10.6)["OUT"] is True


EDGE_TABLE = [
    # IEC: the edge memory starts FALSE, so R_TRIG fires on a first TRUE and F_TRIG on a first FALSE
    ("R_TRIG", [1, 1, 0, 1, 0, 0], [True, False, False, True, False, False]),
    ("R_TRIG", [0, 1, 1, 0], [False, True, False, False]),
    ("F_TRIG", [1, 0, 0, 1, 0], [False, True, False, False, True]),
    ("F_TRIG", [0, 0, 1], [True, False, False]),
]


@pytest.mark.parametrize("kind,clk,expected", EDGE_TABLE)
def test_edges(kind: str, clk: list[int], expected: list[bool]) -> None:
    sim = BlockSim(kind)
    assert [sim.step(i, CLK=c)["Q"] for i, c in enumerate(clk)] == expected


LATCH_TABLE = [
    # (S, R) sequence -> Q1; SR is set-dominant, RS reset-dominant
    ("SR", ["S1", "R"], [(1, 0), (0, 0), (0, 1), (1, 1), (0, 0), (0, 1)], [True, True, False, True, True, False]),
    ("RS", ["S", "R1"], [(1, 0), (0, 0), (0, 1), (1, 1), (1, 0), (0, 0)], [True, True, False, False, True, True]),
]


@pytest.mark.parametrize("kind,pins,seq,expected", LATCH_TABLE)
def test_latches(kind: str, pins: list[str], seq: list[tuple[int, int]], expected: list[bool]) -> None:
    sim = BlockSim(kind)
    got = [sim.step(i, **{pins[0]: s, pins[1]: r})["Q1"] for i, (s, r) in enumerate(seq)]
    assert got == expected


ARITH_TABLE = [
    ("ADD", dict(IN1=1.5, IN2=2.25), 3.75), ("SUB", dict(IN1=1.5, IN2=2.25), -0.75),
    ("MUL", dict(IN1=1.5, IN2=-2), -3.0), ("DIV", dict(IN1=7, IN2=2), 3.5),
    ("MIN", dict(IN1=3, IN2=-1), -1.0), ("MAX", dict(IN1=3, IN2=-1), 3.0),
    ("LIMIT", dict(MN=0, IN=12, MX=10), 10.0), ("LIMIT", dict(MN=0, IN=-3, MX=10), 0.0),
    ("LIMIT", dict(MN=0, IN=4, MX=10), 4.0),
    ("SEL", dict(G=0, IN0=5, IN1=6), 5.0), ("SEL", dict(G=1, IN0=5, IN1=6), 6.0),
    ("MOVE", dict(IN=42.5), 42.5),
    ("SCALE", dict(IN=12, IN_MIN=4, IN_MAX=20, OUT_MIN=0, OUT_MAX=100), 50.0),
    ("SCALE", dict(IN=24, IN_MIN=4, IN_MAX=20, OUT_MIN=0, OUT_MAX=100), 125.0),   # linear, not clamped
]


@pytest.mark.parametrize("kind,inputs,expected", ARITH_TABLE)
def test_arithmetic(kind: str, inputs: dict, expected: float) -> None:
    sim = BlockSim(kind, inputs=list(inputs))
    assert sim.step(0, **inputs)["OUT"] == pytest.approx(expected)


def test_extensible_arithmetic_uses_only_connected_inputs() -> None:
    pins = ["IN1", "IN2", "IN3", "IN4"]
    assert BlockSim("ADD", inputs=pins).step(0, IN1=1, IN2=2, IN3=3, IN4=4)["OUT"] == 10.0
    assert BlockSim("MUL", inputs=pins).step(0, IN1=1, IN2=2, IN3=3, IN4=4)["OUT"] == 24.0
    assert BlockSim("MIN", inputs=pins).step(0, IN1=5, IN2=2, IN3=-3, IN4=4)["OUT"] == -3.0
    assert BlockSim("MAX", inputs=pins).step(0, IN1=5, IN2=2, IN3=-3, IN4=9)["OUT"] == 9.0


def test_division_by_zero_holds_the_output_with_bad_quality() -> None:
    sim = BlockSim("DIV")
    assert sim.step(0, IN1=6, IN2=3)["OUT"] == 2.0
    assert sim.quality("OUT") == 0
    assert sim.step(1, IN1=6, IN2=0)["OUT"] == 2.0
    assert sim.quality("OUT") == 2
    assert sim.step(2, IN1=9, IN2=3)["OUT"] == 3.0
    assert sim.quality("OUT") == 0


def test_output_quality_is_the_worst_input_quality() -> None:
    sim = BlockSim("ADD")
    sim.step(0, IN1=1, IN2=2)
    assert sim.quality("OUT") == 0
    sim.set_quality("IN2", 1)
    sim.step(1)
    assert sim.quality("OUT") == 1
    sim.set_quality("IN1", 2)
    sim.step(2)
    assert sim.quality("OUT") == 2


def test_safe_value_after_bad_inputs_for_the_configured_time() -> None:
    sim = BlockSim("ADD", safe={"OUT": -1.0}, bad_after_ms=100)
    assert sim.step(0, IN1=1, IN2=2)["OUT"] == 3.0
    sim.set_quality("IN1", 2)
    assert sim.step(10 * MS)["OUT"] == 3.0          # bad, but not yet for 100 ms
    assert sim.quality("OUT") == 2
    assert sim.step(109 * MS)["OUT"] == 3.0
    assert sim.step(110 * MS)["OUT"] == -1.0        # bad for 100 ms: safe value, marked uncertain
    assert sim.quality("OUT") == 1
    sim.set_quality("IN1", 0)
    assert sim.step(120 * MS)["OUT"] == 3.0         # good again: computed value at once
    assert sim.quality("OUT") == 0
    sim.set_quality("IN1", 2)
    assert sim.step(130 * MS)["OUT"] == 3.0         # a new bad period starts from zero
    assert sim.step(230 * MS)["OUT"] == -1.0


def test_nan_inputs_propagate_without_breaking_the_block() -> None:
    sim = BlockSim("MAX")
    assert math.isnan(sim.step(0, IN1=math.nan, IN2=1.0)["OUT"])
    assert sim.step(1, IN1=2.0, IN2=1.0)["OUT"] == 2.0


def test_quality_block_exposes_the_input_quality_as_good_values() -> None:
    sim = BlockSim("QUALITY")
    assert sim.step(0, IN=5.0) == {"GOOD": True, "Q": 0}
    sim.set_quality("IN", 1)
    assert sim.step(1) == {"GOOD": False, "Q": 1}
    sim.set_quality("IN", 2)
    assert sim.step(2) == {"GOOD": False, "Q": 2}
    assert sim.quality("GOOD") == 0 and sim.quality("Q") == 0   # a fact about IN, itself good
