"""GRBL 1.1 dialect: line classification, status-report parsing, the tag fields it offers, and the conversation.

Every line GRBL sends is one of: a status report ``<...>`` (answer to the real-time ``?``), ``ok`` or
``error:N`` (the answer to one command line, in order), ``ALARM:N`` (unsolicited), a bracketed message
(``[MSG:...]`` unsolicited; ``[VER:...]``, ``[OPT:...]``, ``[GC:...]``... answers to ``$`` commands), a
setting ``$n=value`` (answer to ``$$``) or the start-up banner ``Grbl 1.1h ['$' for help]`` (after a
reset). ``parse_line`` tells them apart and checks every field; anything else raises FramingError.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable

from edged.tag import DataType

from .framing import FramingError

STATUS_QUERY = b"?"
FEED_HOLD = b"!"
CYCLE_START = b"~"
SOFT_RESET = b"\x18"
RX_BUFFER = 128  # bytes of GRBL's serial receive buffer (character-counting streaming)

STATES = ("Idle", "Run", "Hold", "Jog", "Alarm", "Door", "Check", "Home", "Sleep")
SUBSTATES = {"Hold": range(0, 2), "Door": range(0, 4)}
# normalized machine state for health monitoring (see edged/machine_state.py)
MACHINE_STATE = {"Run": "running", "Hold": "hold", "Door": "hold", "Alarm": "alarm",
                 "Idle": "idle", "Jog": "idle", "Check": "idle", "Home": "idle", "Sleep": "idle"}
AXES = "xyzabc"
PIN_LETTERS = "XYZABCPDHRS"

ERRORS = {
    1: "Expected command letter", 2: "Bad number format", 3: "Invalid statement", 4: "Value < 0",
    5: "Setting disabled", 6: "Value < 3 usec", 7: "EEPROM read fail. Using defaults", 8: "Not idle",
    9: "G-code lock", 10: "Homing not enabled", 11: "Line overflow", 12: "Step rate > 30kHz",
    13: "Check Door", 14: "Line length exceeded", 15: "Travel exceeded", 16: "Invalid jog command",
    17: "Setting disabled (laser mode requires PWM output)", 20: "Unsupported command",
    21: "Modal group violation", 22: "Undefined feed rate", 23: "Command requires integer value",
    24: "Two G-code commands that both require axis words", 25: "Repeated G-code word",
    26: "No axis words found in block for command that requires them", 27: "Line number out of range",
    28: "Missing P or L value word", 29: "G59.x work coordinate systems not supported",
    30: "G53 only allowed with G0 and G1", 31: "Axis words found in block when no command uses them",
    32: "G2/G3 arcs require at least one in-plane axis word", 33: "Motion command target is invalid",
    34: "Arc radius value is invalid", 35: "G2/G3 arcs require at least one in-plane offset word",
    36: "Unused value words found in block",
    37: "G43.1 dynamic tool length offset not assigned to configured tool length axis",
    38: "Tool number greater than max supported value",
}
ALARMS = {
    1: "Hard limit", 2: "Soft limit", 3: "Abort during cycle", 4: "Probe fail (not in expected initial state)",
    5: "Probe fail (did not contact)", 6: "Homing fail (reset during homing)",
    7: "Homing fail (door opened during homing)", 8: "Homing fail (pull off failed to clear limit switch)",
    9: "Homing fail (could not find limit switch)",
}

_FLOAT = re.compile(r"-?\d{1,9}(?:\.\d{1,9})?\Z")
_INT = re.compile(r"\d{1,9}\Z")
_BANNER = re.compile(r"Grbl (\d+\.\d+[a-z]?) \['\$' for help\]\Z")
_SETTING = re.compile(r"\$(\d{1,3})=(-?\d{1,10}(?:\.\d{1,9})?)\Z")
_BRACKET = re.compile(r"\[([A-Z][A-Z0-9.]{0,7}):(.*)\]\Z")
_CODE = re.compile(r"(error|ALARM):(\d{1,3})\Z")


def _floats(text: str, what: str, counts: tuple[int, ...]) -> tuple[float, ...]:
    parts = text.split(",")
    if len(parts) not in counts or not all(_FLOAT.match(p) for p in parts):
        raise FramingError(f"{what}: expected {' or '.join(map(str, counts))} numbers, found {text!r}")
    return tuple(float(p) for p in parts)


def _ints(text: str, what: str, count: int) -> tuple[int, ...]:
    parts = text.split(",")
    if len(parts) != count or not all(_INT.match(p) for p in parts):
        raise FramingError(f"{what}: expected {count} integers, found {text!r}")
    return tuple(int(p) for p in parts)


@dataclass(slots=True)
class StatusReport:
    """One parsed ``<...>`` status report: only what the report carried (None = absent)."""

    state: str
    substate: int | None = None
    mpos: tuple[float, ...] | None = None
    wpos: tuple[float, ...] | None = None
    wco: tuple[float, ...] | None = None
    feed: float | None = None
    spindle: float | None = None
    planner: int | None = None
    rx: int | None = None
    line: int | None = None
    pins: str = ""
    ov: tuple[int, int, int] | None = None
    acc: str = ""


def parse_status(line: str) -> StatusReport:
    """Parse ``<State|MPos:...|...>``; FramingError on anything GRBL 1.1 would not send."""
    if len(line) < 3 or line[0] != "<" or line[-1] != ">":
        raise FramingError(f"expected a status report <...>, found {line[:40]!r}")
    parts = line[1:-1].split("|")
    name, _, sub = parts[0].partition(":")
    if name not in STATES:
        raise FramingError(f"status: unknown state {parts[0]!r}")
    rep = StatusReport(name)
    if sub:
        if name not in SUBSTATES or not _INT.match(sub) or int(sub) not in SUBSTATES[name]:
            raise FramingError(f"status: bad sub-state {parts[0]!r}")
        rep.substate = int(sub)
    seen: set[str] = set()
    for part in parts[1:]:
        key, sep, val = part.partition(":")
        if not sep or key in seen:
            raise FramingError(f"status: bad or repeated field {part[:30]!r}")
        seen.add(key)
        if key in ("MPos", "WPos", "WCO"):
            nums = _floats(val, key, (3, 4, 5, 6))
            setattr(rep, key.lower(), nums)
        elif key == "FS":
            rep.feed, rep.spindle = _floats(val, key, (2,))
        elif key == "F":
            (rep.feed,) = _floats(val, key, (1,))
        elif key == "Bf":
            rep.planner, rep.rx = _ints(val, key, 2)
        elif key == "Ln":
            (rep.line,) = _ints(val, key, 1)
        elif key == "Pn":
            if not val or any(c not in PIN_LETTERS for c in val) or len(set(val)) != len(val):
                raise FramingError(f"status: bad pins {val!r}")
            rep.pins = val
        elif key == "Ov":
            rep.ov = _ints(val, key, 3)  # type: ignore[assignment]
        elif key == "A":
            if not val or any(c not in "SCFM" for c in val) or len(set(val)) != len(val):
                raise FramingError(f"status: bad accessory flags {val!r}")
            rep.acc = val
        # other keys are extensions of later builds: ignored
    if (rep.mpos is None) == (rep.wpos is None):
        raise FramingError("status: expected exactly one of MPos and WPos")
    if "FS" in seen and "F" in seen:
        raise FramingError("status: both F and FS")
    pos = rep.mpos or rep.wpos
    if rep.wco is not None and pos is not None and len(rep.wco) != len(pos):
        raise FramingError("status: WCO and position have different axis counts")
    return rep


@dataclass(frozen=True, slots=True)
class Line:
    """A classified line: ``kind`` is status, ok, error, alarm, banner, msg, bracket, setting."""

    kind: str
    text: str
    code: int = 0
    status: StatusReport | None = None
    key: str = ""  # bracket tag (VER, OPT, GC, ...) or setting number
    value: str = ""


def parse_line(text: str) -> Line:
    """Classify one line from GRBL; FramingError when it is none of GRBL 1.1's kinds."""
    if text == "ok":
        return Line("ok", text)
    if text.startswith("<"):
        return Line("status", text, status=parse_status(text))
    m = _CODE.match(text)
    if m:
        code = int(m.group(2))
        if code < 1:
            raise FramingError(f"expected a code >= 1, found {text!r}")
        return Line("error" if m.group(1) == "error" else "alarm", text, code=code)
    m = _BRACKET.match(text)
    if m:
        return Line("msg" if m.group(1) == "MSG" else "bracket", text, key=m.group(1), value=m.group(2))
    m = _SETTING.match(text)
    if m:
        return Line("setting", text, key=m.group(1), value=m.group(2))
    m = _BANNER.match(text)
    if m:
        return Line("banner", text, value=m.group(1))
    raise FramingError(f"not a GRBL 1.1 line: {text[:60]!r}")


def error_text(code: int) -> str:
    """The standard text of ``error:N``."""
    return ERRORS.get(code, f"Unknown error {code}")


def alarm_text(code: int) -> str:
    """The standard text of ``ALARM:N``."""
    return ALARMS.get(code, f"Unknown alarm {code}")


@dataclass(slots=True)
class GrblModel:
    """What edged knows of one GRBL controller: the last report plus the values GRBL sends only now and then."""

    status: StatusReport | None = None
    wco: tuple[float, ...] | None = None  # sent every 10-30 reports; applies until the next one
    ov: tuple[int, int, int] | None = None  # sent every 10-20 reports (and on change)
    version: str | None = None
    build_date: str | None = None
    options: str | None = None
    opt_blocks: int | None = None
    opt_rx: int | None = None
    banner: str | None = None
    settings: dict[int, float] = field(default_factory=dict)
    last_error: int = 0
    last_alarm: int = 0
    last_msg: str = ""
    oks: int = 0
    errors: int = 0
    alarms: int = 0
    resets: int = 0

    def apply(self, rep: StatusReport) -> None:
        """Take a new report; WCO and overrides persist until the next report that carries them."""
        if rep.wco is not None:
            self.wco = rep.wco
        if rep.ov is not None:
            self.ov = rep.ov
        self.status = rep

    def position(self, which: str) -> tuple[float, ...] | None:
        """Machine (``mpos``) or work (``wpos``) position, with WPos = MPos - WCO for the one not reported."""
        rep = self.status
        if rep is None:
            return None
        own = rep.mpos if which == "mpos" else rep.wpos
        if own is not None:
            return own
        if self.wco is None:
            return None
        other = rep.wpos if which == "mpos" else rep.mpos
        if other is None or len(other) != len(self.wco):
            return None
        sign = 1.0 if which == "mpos" else -1.0
        return tuple(round(p + sign * w, 6) for p, w in zip(other, self.wco))

    def take_version(self, value: str) -> None:
        """``[VER:1.1h.20190825:]`` -> version and build date (the text after the last ':' is the build info)."""
        ver = value.split(":", 1)[0]
        num, _, date = ver.rpartition(".")
        if num and date.isdigit():
            self.version, self.build_date = num, date
        else:
            self.version, self.build_date = ver, ""

    def take_options(self, value: str) -> None:
        """``[OPT:V,15,128]`` -> option letters, planner blocks, RX buffer bytes."""
        parts = value.split(",")
        self.options = parts[0]
        if len(parts) >= 3 and parts[1].isdigit() and parts[2].isdigit():
            self.opt_blocks, self.opt_rx = int(parts[1]), int(parts[2])


Getter = Callable[[GrblModel], Any]


def _status(fn: Callable[[StatusReport], Any]) -> Getter:
    return lambda m: None if m.status is None else fn(m.status)


def _axis(which: str, i: int) -> Getter:
    def get(m: GrblModel) -> Any:
        if which == "wco":
            pos = m.wco
        else:
            pos = m.position(which)
        return None if pos is None or i >= len(pos) else pos[i]
    return get


def _ov(i: int) -> Getter:
    return lambda m: None if m.ov is None else m.ov[i]


def _pin(letter: str) -> Getter:
    return _status(lambda s: letter in s.pins)


def _acc(letter: str) -> Getter:
    return _status(lambda s: letter in s.acc)


# field name -> (type, getter, what it needs: "status", "build" ($I), "settings" ($$), "" (events))
FIELDS: dict[str, tuple[DataType, Getter, str]] = {
    "status.state": (DataType.STRING, _status(lambda s: s.state), "status"),
    "status.substate": (DataType.INT16, _status(lambda s: -1 if s.substate is None else s.substate), "status"),
    "fs.feed": (DataType.FLOAT64, _status(lambda s: s.feed), "status"),
    "fs.spindle": (DataType.FLOAT64, _status(lambda s: s.spindle), "status"),
    "bf.planner": (DataType.INT32, _status(lambda s: s.planner), "status"),
    "bf.rx": (DataType.INT32, _status(lambda s: s.rx), "status"),
    "ln": (DataType.INT32, _status(lambda s: 0 if s.line is None else s.line), "status"),
    "pins": (DataType.STRING, _status(lambda s: s.pins), "status"),
    "acc": (DataType.STRING, _status(lambda s: s.acc), "status"),
    "acc.spindle_cw": (DataType.BOOL, _acc("S"), "status"),
    "acc.spindle_ccw": (DataType.BOOL, _acc("C"), "status"),
    "acc.flood": (DataType.BOOL, _acc("F"), "status"),
    "acc.mist": (DataType.BOOL, _acc("M"), "status"),
    "ov.feed": (DataType.INT32, _ov(0), "status"),
    "ov.rapid": (DataType.INT32, _ov(1), "status"),
    "ov.spindle": (DataType.INT32, _ov(2), "status"),
    "build.version": (DataType.STRING, lambda m: m.version, "build"),
    "build.date": (DataType.STRING, lambda m: m.build_date, "build"),
    "build.options": (DataType.STRING, lambda m: m.options, "build"),
    "build.planner_blocks": (DataType.INT32, lambda m: m.opt_blocks, "build"),
    "build.rx_buffer": (DataType.INT32, lambda m: m.opt_rx, "build"),
    "banner": (DataType.STRING, lambda m: m.banner, ""),
    "error.code": (DataType.INT32, lambda m: m.last_error, ""),
    "error.text": (DataType.STRING, lambda m: error_text(m.last_error) if m.last_error else "", ""),
    "alarm.code": (DataType.INT32, lambda m: m.last_alarm, ""),
    "alarm.text": (DataType.STRING, lambda m: alarm_text(m.last_alarm) if m.last_alarm else "", ""),
    "msg": (DataType.STRING, lambda m: m.last_msg, ""),
    "count.ok": (DataType.UINT64, lambda m: m.oks, ""),
    "count.error": (DataType.UINT64, lambda m: m.errors, ""),
    "count.alarm": (DataType.UINT64, lambda m: m.alarms, ""),
    "count.reset": (DataType.UINT64, lambda m: m.resets, ""),
}
for _i, _a in enumerate(AXES):
    for _which in ("mpos", "wpos", "wco"):
        FIELDS[f"{_which}.{_a}"] = (DataType.FLOAT64, _axis(_which, _i), "status")
for _l in PIN_LETTERS:
    FIELDS[f"pin.{_l.lower()}"] = (DataType.BOOL, _pin(_l), "status")

# writable command fields: writing true sends the real-time character
COMMANDS = {"cmd.feed_hold": FEED_HOLD, "cmd.cycle_start": CYCLE_START, "cmd.reset": SOFT_RESET}
SETTING_PREFIX = "setting:"
