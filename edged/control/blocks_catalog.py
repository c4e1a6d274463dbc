"""The function block types: IEC 61131-3 pin names, pin kinds, defaults and the interpreter's op codes."""
from __future__ import annotations

from dataclasses import dataclass

# Pin kinds: "bool", "num" (any number, a C double), "time" (a number of milliseconds; TOML constants
# may also be time literals such as "500ms", "2s", "T#1m30s"), and "T" (generic: every "T" pin of one
# block takes the type of what feeds its inputs; used by SEL, MOVE and Z1).
# "int" is a number that holds whole values (counters); it is reported upstream as an integer.
BOOL, NUM, INT, TIME, GENERIC = "bool", "num", "int", "time", "T"
NUMERIC_KINDS = (NUM, INT, TIME)

MAX_INPUTS = 10   # must match BLK_MAX_IN in cext/control.pyx
MAX_OUTPUTS = 4   # must match BLK_MAX_OUT
MAVG_MAX_N = 4096
HUGE = 1.0e300    # default output limits of PID ("unlimited")


@dataclass(frozen=True, slots=True)
class Pin:
    """One input or output pin of a block type."""

    name: str
    kind: str
    default: float | bool | None = None   # None: must be connected (inputs only)
    const_only: bool = False              # True: must be a constant in the config


@dataclass(frozen=True, slots=True)
class BlockType:
    """A block type: op code of the C interpreter, input pins in record order, output pins."""

    name: str
    code: int
    inputs: tuple[Pin, ...]
    outputs: tuple[Pin, ...]
    extensible: bool = False   # IN1..INn: only connected inputs count, at least two
    summary: str = ""

    def input(self, name: str) -> Pin | None:
        """An input pin by name."""
        return next((p for p in self.inputs if p.name == name), None)

    def output(self, name: str) -> Pin | None:
        """An output pin by name."""
        return next((p for p in self.outputs if p.name == name), None)


def _ext(kind: str, n: int = 8) -> tuple[Pin, ...]:
    return tuple(Pin(f"IN{i}", kind) for i in range(1, n + 1))


def _p(name: str, kind: str, default: float | bool | None = None, const_only: bool = False) -> Pin:
    return Pin(name, kind, default, const_only)


_CMP_IN = (_p("IN1", NUM), _p("IN2", NUM), _p("HYST", NUM, 0.0))
_TIMER = ((_p("IN", BOOL), _p("PT", TIME)), (_p("Q", BOOL), _p("ET", TIME)))

BLOCK_TYPES: dict[str, BlockType] = {t.name: t for t in [
    BlockType("AND", 1, _ext(BOOL), (_p("OUT", BOOL),), True, "logical AND of IN1..IN8"),
    BlockType("OR", 2, _ext(BOOL), (_p("OUT", BOOL),), True, "logical OR of IN1..IN8"),
    BlockType("XOR", 3, _ext(BOOL), (_p("OUT", BOOL),), True, "true when an odd number of inputs is true"),
    BlockType("NOT", 4, (_p("IN", BOOL),), (_p("OUT", BOOL),), summary="logical negation"),
    BlockType("GT", 10, _CMP_IN, (_p("OUT", BOOL),), summary="IN1 > IN2; falls when IN1 <= IN2 - HYST"),
    BlockType("GE", 11, _CMP_IN, (_p("OUT", BOOL),), summary="IN1 >= IN2; falls when IN1 < IN2 - HYST"),
    BlockType("LT", 12, _CMP_IN, (_p("OUT", BOOL),), summary="IN1 < IN2; falls when IN1 >= IN2 + HYST"),
    BlockType("LE", 13, _CMP_IN, (_p("OUT", BOOL),), summary="IN1 <= IN2; falls when IN1 > IN2 + HYST"),
    BlockType("EQ", 14, _CMP_IN, (_p("OUT", BOOL),), summary="|IN1 - IN2| <= HYST"),
    BlockType("NE", 15, _CMP_IN, (_p("OUT", BOOL),), summary="|IN1 - IN2| > HYST"),
    BlockType("R_TRIG", 20, (_p("CLK", BOOL),), (_p("Q", BOOL),), summary="rising edge, one cycle"),
    BlockType("F_TRIG", 21, (_p("CLK", BOOL),), (_p("Q", BOOL),), summary="falling edge, one cycle"),
    BlockType("TON", 30, *_TIMER, summary="on-delay timer"),
    BlockType("TOF", 31, *_TIMER, summary="off-delay timer"),
    BlockType("TP", 32, *_TIMER, summary="pulse timer"),
    BlockType("CTU", 40, (_p("CU", BOOL), _p("R", BOOL, False), _p("PV", INT, 0)),
              (_p("Q", BOOL), _p("CV", INT)), summary="up counter"),
    BlockType("CTD", 41, (_p("CD", BOOL), _p("LD", BOOL, False), _p("PV", INT, 0)),
              (_p("Q", BOOL), _p("CV", INT)), summary="down counter"),
    BlockType("CTUD", 42, (_p("CU", BOOL, False), _p("CD", BOOL, False), _p("R", BOOL, False),
                           _p("LD", BOOL, False), _p("PV", INT, 0)),
              (_p("QU", BOOL), _p("QD", BOOL), _p("CV", INT)), summary="up/down counter"),
    BlockType("SR", 50, (_p("S1", BOOL), _p("R", BOOL)), (_p("Q1", BOOL),), summary="set-dominant latch"),
    BlockType("RS", 51, (_p("S", BOOL), _p("R1", BOOL)), (_p("Q1", BOOL),), summary="reset-dominant latch"),
    BlockType("ADD", 60, _ext(NUM), (_p("OUT", NUM),), True, "IN1 + IN2 + ..."),
    BlockType("SUB", 61, (_p("IN1", NUM), _p("IN2", NUM)), (_p("OUT", NUM),), summary="IN1 - IN2"),
    BlockType("MUL", 62, _ext(NUM), (_p("OUT", NUM),), True, "IN1 * IN2 * ..."),
    BlockType("DIV", 63, (_p("IN1", NUM), _p("IN2", NUM)), (_p("OUT", NUM),),
              summary="IN1 / IN2; division by zero holds OUT with bad quality"),
    BlockType("MIN", 64, _ext(NUM), (_p("OUT", NUM),), True, "smallest input"),
    BlockType("MAX", 65, _ext(NUM), (_p("OUT", NUM),), True, "largest input"),
    BlockType("LIMIT", 66, (_p("MN", NUM), _p("IN", NUM), _p("MX", NUM)), (_p("OUT", NUM),),
              summary="IN clamped to [MN, MX]"),
    BlockType("SEL", 67, (_p("G", BOOL), _p("IN0", GENERIC), _p("IN1", GENERIC)), (_p("OUT", GENERIC),),
              summary="IN0 when G is false, else IN1"),
    BlockType("MOVE", 68, (_p("IN", GENERIC),), (_p("OUT", GENERIC),), summary="OUT := IN"),
    BlockType("SCALE", 69, (_p("IN", NUM), _p("IN_MIN", NUM), _p("IN_MAX", NUM), _p("OUT_MIN", NUM),
                            _p("OUT_MAX", NUM)), (_p("OUT", NUM),),
              summary="linear map of [IN_MIN, IN_MAX] onto [OUT_MIN, OUT_MAX] (not clamped)"),
    BlockType("PID", 80, (_p("AUTO", BOOL, True), _p("PV", NUM), _p("SP", NUM), _p("X0", NUM, 0.0),
                          _p("KP", NUM, 1.0), _p("TR", TIME, 0.0), _p("TD", TIME, 0.0),
                          _p("XMIN", NUM, -HUGE), _p("XMAX", NUM, HUGE), _p("PONM", BOOL, False, True)),
              (_p("XOUT", NUM),), summary="PID with anti-windup, output limits, bumpless AUTO/manual"),
    BlockType("RAMP", 81, (_p("IN", NUM), _p("RATE", NUM), _p("FALL", NUM, 0.0)),
              (_p("OUT", NUM), _p("BUSY", BOOL)), summary="OUT follows IN at most RATE units/s (FALL down)"),
    BlockType("LPF", 82, (_p("IN", NUM), _p("T", TIME)), (_p("OUT", NUM),), summary="first-order low-pass"),
    BlockType("MAVG", 83, (_p("IN", NUM), _p("N", INT, None, True)), (_p("OUT", NUM),),
              summary="moving average of the last N cycles"),
    BlockType("Z1", 90, (_p("IN", GENERIC),), (_p("OUT", GENERIC),),
              summary="one-cycle delay: OUT is IN of the previous cycle (breaks feedback loops)"),
    BlockType("QUALITY", 91, (_p("IN", GENERIC),), (_p("GOOD", BOOL), _p("Q", INT)),
              summary="quality of IN as values: GOOD is true when it is good; Q is 0 good, 1 uncertain, 2 bad"),
    BlockType("HEARTBEAT", 92, (_p("PT", TIME, 0.0),), (_p("Q", BOOL),),
              summary="Q toggles every PT ms (PT = 0: every cycle): a life sign for a device-side watchdog"),
]}

RETAINABLE = frozenset({"R_TRIG", "F_TRIG", "TON", "TOF", "TP", "CTU", "CTD", "CTUD", "SR", "RS", "PID", "Z1"})
"""Block types whose state `retain = true` keeps across restarts (IEC 61131-3 RETAIN)."""


def block_type(name: str) -> BlockType | None:
    """A block type by its (upper-case) name."""
    return BLOCK_TYPES.get(name)
