"""GRBL and Haas line parsers and the shared framing: every field, the examples of real controllers, and
property-based tests (arbitrary bytes never raise anything but FramingError, and never desynchronize)."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edged.drivers.cnc import grbl, haas
from edged.drivers.cnc.framing import FramingError, LineSplitter


# -- GRBL ------------------------------------------------------------------------------
def test_grbl_status_report_with_every_field() -> None:
    """A report with every optional field: each value lands in its place."""
    rep = grbl.parse_status("<Hold:1|WPos:1.000,-2.500,3.250|Bf:14,120|Ln:42|FS:500.5,12000|Pn:XZP|"
                            "WCO:10.000,20.000,-5.000|Ov:110,50,90|A:SFM>")
    assert (rep.state, rep.substate) == ("Hold", 1)
    assert rep.wpos == (1.0, -2.5, 3.25) and rep.mpos is None
    assert (rep.planner, rep.rx, rep.line) == (14, 120, 42)
    assert (rep.feed, rep.spindle) == (500.5, 12000.0)
    assert rep.pins == "XZP" and rep.acc == "SFM"
    assert rep.wco == (10.0, 20.0, -5.0) and rep.ov == (110, 50, 90)


def test_grbl_real_examples_and_positions() -> None:
    """The reports of a real 1.1h build parse; WPos = MPos - WCO (and back) with WCO kept across reports."""
    m = grbl.GrblModel()
    m.apply(grbl.parse_status("<Idle|MPos:0.000,0.000,0.000|FS:0,0|WCO:0.000,0.000,0.000>"))
    m.apply(grbl.parse_status("<Run|MPos:19.656,5.000,0.000|FS:128,0|WCO:1.000,2.000,3.000>"))
    m.apply(grbl.parse_status("<Run|MPos:20.000,5.000,0.000|F:128>"))  # no WCO: the last one applies
    assert m.position("mpos") == (20.0, 5.0, 0.0)
    assert m.position("wpos") == (19.0, 3.0, -3.0)
    m.apply(grbl.parse_status("<Idle|WPos:1.000,1.000,1.000|FS:0,0>"))
    assert m.position("mpos") == (2.0, 3.0, 4.0)
    assert grbl.FIELDS["fs.spindle"][1](m) == 0.0
    m.apply(grbl.parse_status("<Idle|WPos:1.000,1.000,1.000|F:0>"))
    assert grbl.FIELDS["fs.spindle"][1](m) is None  # F only: the spindle was not reported


def test_grbl_every_field_has_a_value_after_a_full_conversation() -> None:
    """Every FIELDS entry yields a value once status, $I and events have been seen."""
    m = grbl.GrblModel()
    m.apply(grbl.parse_status("<Door:2|MPos:1,2,3,4,5,6|Bf:15,128|Ln:7|FS:1,2|Pn:XYZABCPDHRS|"
                              "WCO:0,0,0,0,0,0|Ov:100,100,100|A:SCFM>"))
    m.take_version("1.1h.20190825:")
    m.take_options("V,15,128")
    missing = [name for name, (_t, get, _n) in grbl.FIELDS.items() if get(m) is None]
    assert missing == ["banner"]
    assert (m.version, m.build_date, m.options, m.opt_blocks, m.opt_rx) == ("1.1h", "20190825", "V", 15, 128)


@pytest.mark.parametrize("line,kind,code", [
    ("ok", "ok", 0), ("error:22", "error", 22), ("ALARM:1", "alarm", 1), ("[MSG:Caution: Unlocked]", "msg", 0),
    ("[VER:1.1h.20190825:]", "bracket", 0), ("$110=500.000", "setting", 0),
    ("Grbl 1.1h ['$' for help]", "banner", 0), ("[GC:G0 G54 G17 G21 G90 G94 M5 M9 T0 F0 S0]", "bracket", 0),
])
def test_grbl_line_kinds(line: str, kind: str, code: int) -> None:
    """Each kind of GRBL line is classified with its code."""
    got = grbl.parse_line(line)
    assert (got.kind, got.code) == (kind, code)


@pytest.mark.parametrize("line", [
    "<Idle>", "<Idle|MPos:1,2,3|WPos:1,2,3>", "<Walk|MPos:1,2,3>", "<Hold:7|MPos:1,2,3>", "<Idle|MPos:1,2>",
    "<Idle|MPos:nan,1,2>", "<Idle|MPos:1,2,3|Bf:1>", "<Idle|MPos:1,2,3|Pn:Q>", "<Idle|MPos:1,2,3|FS:1>",
    "<Idle|MPos:1,2,3|MPos:1,2,3>", "error:0", "error:x", "okay", "Grbl 9", "<Idle|MPos:1,2,3|WCO:1,2,3,4>",
])
def test_grbl_malformed_lines_are_framing_errors(line: str) -> None:
    """What GRBL 1.1 never sends is refused, not half-parsed."""
    with pytest.raises(FramingError):
        grbl.parse_line(line)


def test_grbl_error_and_alarm_texts() -> None:
    """The standard texts, and a readable one for codes outside the table."""
    assert grbl.error_text(22) == "Undefined feed rate"
    assert grbl.alarm_text(1) == "Hard limit"
    assert grbl.alarm_text(99) == "Unknown alarm 99"


# -- Haas ------------------------------------------------------------------------------
@pytest.mark.parametrize("text,number,values", [
    ("SERIAL NUMBER, 1234567", 100, {"value": "1234567"}),
    ("SOFTWARE VERSION, 100.20.000.1110", 101, {"value": "100.20.000.1110"}),
    ("MODEL, VF2D", 102, {"value": "VF2D"}),
    ("MODE, (ZERO RET)", 104, {"value": "ZERO RET"}),
    ("TOOL CHANGES, 23", 200, {"value": 23}),
    ("USING TOOL, 1", 201, {"value": 1}),
    ("P.O. TIME, 00027:50:59", 300, {"value": 27 * 3600 + 50 * 60 + 59}),
    ("C.S. TIME, 00003:02:57", 301, {"value": 3 * 3600 + 2 * 60 + 57}),
    ("LAST CYCLE, 000:00:42", 303, {"value": 42}),
    ("PREV CYCLE, 000:01:00", 304, {"value": 60}),
    ("M30 #1, 553", 402, {"value": 553}),
    ("M30 #2, 554", 403, {"value": 554}),
    ("PROGRAM, O00110, IDLE, PARTS, 4523", 500, {"program": "O00110", "status": "IDLE", "parts": 4523}),
    ("PROGRAM, O00110, FEED HOLD, PARTS, 4523", 500, {"program": "O00110", "status": "FEED HOLD", "parts": 4523}),
    ("PROGRAM, O00110, ALARM ON, PARTS, 4523", 500, {"program": "O00110", "status": "ALARM ON", "parts": 4523}),
    ("STATUS, BUSY", 500, {"status": "BUSY"}),
    ("MACRO, 5041, -12.500000", 600, {"value": -12.5}),
    ("UNKNOWN", 0, {"error": "UNKNOWN"}),
])
def test_haas_every_answer(text: str, number: int, values: dict) -> None:
    """Each Q command's answer parses to its values."""
    ans = haas.parse_answer(text)
    assert (ans.number, ans.values) == (number, values)


@pytest.mark.parametrize("text", [
    "SERIAL", "TOOL CHANGES, x", "P.O. TIME, 27:99:00", "PROGRAM, O1, RUNNING, PARTS, 3", "STATUS, IDLE",
    "MACRO, 5041", "MACRO, x, 1", "MODE, MEM", "M30 #1, -1", "HELLO, 1",
])
def test_haas_malformed_answers(text: str) -> None:
    """Answers that fit no Q command are FramingErrors."""
    with pytest.raises(FramingError):
        haas.parse_answer(text)


def test_haas_state_mapping() -> None:
    """Q500 status words map to the normalized machine states."""
    assert haas.machine_state(haas.parse_answer("STATUS, BUSY")) == "running"
    assert haas.machine_state(haas.parse_answer("PROGRAM, O1, FEED HOLD, PARTS, 1")) == "hold"
    assert haas.machine_state(haas.parse_answer("PROGRAM, O1, ALARM ON, PARTS, 1")) == "alarm"
    assert haas.request(600, 5041) == b"?Q600 5041\r\n"


# -- framing -----------------------------------------------------------------------------
def test_splitter_line_endings_partial_lines_and_noise() -> None:
    """CR, LF and CR LF end lines; partial lines wait; noise bytes are dropped and counted."""
    sp = LineSplitter()
    assert sp.feed(b"ok\r\nerr") == ["ok"]
    assert sp.feed(b"or:1\rALARM:2\n\x00\xff\x07ok\n\n\r") == ["error:1", "ALARM:2", "ok"]
    assert sp.noise == 3
    sp.feed(b"x" * 300 + b"\nok\n")
    assert sp.overflows == 1


def test_splitter_haas_frames() -> None:
    """STX starts a frame (dropping a half line), ETB ends it, the prompt is no noise."""
    sp = LineSplitter(framed=True)
    assert sp.feed(b"\x02MODEL, VF2\x17\r\n>") == ["MODEL, VF2"]
    assert sp.pending == ">"
    assert sp.feed(b"\x02M30 #1, 5\x17\r\n>garbage\x02USING TOOL, 3\x17") == ["M30 #1, 5", "USING TOOL, 3"]
    assert sp.noise == len(b">garbage")
    assert sp.frames == 3


LINES = ["ok", "error:22", "ALARM:1", "<Idle|MPos:0.000,0.000,0.000|FS:0,0>", "[MSG:x]", "$110=500.000"]


@settings(max_examples=300, deadline=None, database=None)
@given(st.binary(max_size=400))
def test_grbl_parser_raises_only_its_own_error(data: bytes) -> None:
    """Arbitrary bytes through the splitter and the GRBL parser: lines or FramingError, nothing else."""
    sp = LineSplitter()
    for line in sp.feed(data):
        try:
            grbl.parse_line(line)
        except FramingError:
            pass


@settings(max_examples=300, deadline=None, database=None)
@given(st.binary(max_size=400))
def test_haas_parser_raises_only_its_own_error(data: bytes) -> None:
    """Arbitrary bytes through the framed splitter and the Haas parser: answers or FramingError."""
    sp = LineSplitter(framed=True)
    for line in sp.feed(data):
        try:
            haas.parse_answer(line)
        except FramingError:
            pass


@settings(max_examples=200, deadline=None, database=None)
@given(st.lists(st.sampled_from(LINES), min_size=1, max_size=8), st.binary(max_size=40).filter(
    lambda b: b"\r" not in b and b"\n" not in b), st.lists(st.integers(1, 50), max_size=10))
def test_framing_resynchronizes_after_garbage_and_any_split(lines: list[str], garbage: bytes,
                                                            cuts: list[int]) -> None:
    """Garbage without a line end costs at most the line it sticks to; every later line comes through
    intact however the bytes are split into reads."""
    wire = garbage + b"\r\n" + b"".join(ln.encode() + b"\r\n" for ln in lines)
    sp = LineSplitter()
    out, pos = [], 0
    for c in cuts:
        out += sp.feed(wire[pos:pos + c])
        pos += c
    out += sp.feed(wire[pos:])
    assert out[-len(lines):] == lines
