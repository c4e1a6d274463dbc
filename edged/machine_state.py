"""Normalized machine state for health monitoring: running, idle, hold, alarm, offline, with time in state.

Every machine of a cell reports the same kind of state, whatever its protocol: a CNC driver sets it
from the controller's own status (it keeps a ``MachineTracker`` as ``driver.machine``), and any other
device gets it from its tags through a ``[device.<name>.state]`` table of conditions::

    [device.press1.state]
    running = "running"                 # a tag that is true
    alarm = ["oil_temp > 80", "estop"]  # any of these holds
    hold = "door_open == true"
    parts = "cycle_count"               # a tag counting parts (its increments are counted)
    alarm_text = "alarm_message"        # a tag whose value names the alarm

Priority: alarm, then hold, then running, else idle; offline while the device is down or a tag the
conditions need is bad. The time in each state accumulates in a monotonic counter
(``edged_machine_state_seconds_total{device,state}``), so availability over any window is one PromQL
query (see README.md).
"""
from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterator

from edged.schema import Section
from edged.tag import Quality, Reading

if TYPE_CHECKING:
    from edged.runtime import Runtime

STATES = ("running", "idle", "hold", "alarm", "offline")
RULE_STATES = ("alarm", "hold", "running")  # in priority order; idle when none holds
OPS = ("==", "!=", "<=", ">=", "<", ">")


class MachineTracker:
    """One machine's normalized state, cumulative seconds per state, part counter and last alarm."""

    def __init__(self, device: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.device = device
        self._clock = clock
        self.state = "offline"
        self.since = clock()
        self._acc = {s: 0.0 for s in STATES}
        self.parts = 0  # parts counted by edged: increments of the machine's counter, or completed cycles
        self._counter: int | None = None
        self.alarms = 0
        self.alarm_code = ""
        self.alarm_text = ""
        self.alarm_time = 0.0  # Unix time of the last alarm

    def set_state(self, state: str) -> None:
        """Enter a state (the time so far goes to the previous one); unknown names are a bug."""
        if state not in self._acc:
            raise ValueError(f"unknown machine state {state!r}")
        if state == self.state:
            return
        now = self._clock()
        self._acc[self.state] += now - self.since
        self.state, self.since = state, now

    def seconds(self) -> dict[str, float]:
        """Cumulative seconds per state, the current state's time included (they add up to the tracked time)."""
        out = dict(self._acc)
        out[self.state] += self._clock() - self.since
        return out

    def count_parts(self, counter: int) -> None:
        """Take the machine's own part counter: its increments are counted; a lower value is a counter reset."""
        if self._counter is not None and counter > self._counter:
            self.parts += counter - self._counter
        self._counter = counter

    def add_parts(self, n: int = 1) -> None:
        """Count parts the driver saw completed (e.g. a GRBL cycle that ran to its end)."""
        self.parts += n

    def alarm(self, code: Any, text: str) -> None:
        """Record an alarm (a new one, not the same one reported again)."""
        self.alarms += 1
        self.alarm_code = str(code)
        self.alarm_text = text
        self.alarm_time = time.time()

    def snapshot(self) -> dict[str, Any]:
        """State, parts and last alarm as a dict (for status output and tests)."""
        return {"state": self.state, "parts": self.parts, "alarms": self.alarms, "alarm_code": self.alarm_code,
                "alarm_text": self.alarm_text, "seconds": self.seconds()}


@dataclass(frozen=True, slots=True)
class Condition:
    """``TAG``, ``not TAG`` or ``TAG OP VALUE`` on one tag of the device."""

    tag: str
    op: str = "truthy"
    value: Any = None

    def holds(self, v: Any) -> bool:
        """Whether the condition holds for the tag's current value."""
        if self.op == "truthy":
            return bool(v)
        if self.op == "not":
            return not v
        try:
            if self.op == "==":
                return v == self.value
            if self.op == "!=":
                return v != self.value
            if self.op == "<":
                return v < self.value
            if self.op == "<=":
                return v <= self.value
            if self.op == ">":
                return v > self.value
            return v >= self.value
        except TypeError:  # a string compared with a number: does not hold
            return False


_COND = re.compile(r"\s*(?:(not)\s+)?([A-Za-z0-9_.-]+)\s*(?:(==|!=|<=|>=|<|>)\s*(.+?))?\s*\Z")


def parse_condition(text: str) -> Condition:
    """Parse one condition; ValueError with the expected form otherwise."""
    m = _COND.match(text)
    if not m or (m.group(1) and m.group(3)):
        raise ValueError(f"expected TAG, not TAG, or TAG OP VALUE with OP one of {', '.join(OPS)}, found {text!r}")
    neg, tag, op, raw = m.groups()
    if op is None:
        return Condition(tag, "not" if neg else "truthy")
    try:
        value = json.loads(raw)  # numbers, true/false, "quoted strings"
    except json.JSONDecodeError:
        raise ValueError(f"expected a number, true, false or a \"quoted string\" after {op}, found {raw!r}") from None
    if isinstance(value, (list, dict)) or value is None:
        raise ValueError(f"expected a number, true, false or a \"quoted string\" after {op}, found {raw!r}")
    return Condition(tag, op, value)


@dataclass(slots=True)
class StateRules:
    """A ``[device.<name>.state]`` table: conditions per state, the part-counter tag, the alarm-text tag."""

    conditions: dict[str, list[Condition]] = field(default_factory=dict)
    parts: str | None = None
    alarm_text: str | None = None

    def tags(self) -> set[str]:
        """Names of the device's tags the rules read."""
        out = {c.tag for cs in self.conditions.values() for c in cs}
        return out | ({self.parts} if self.parts else set()) | ({self.alarm_text} if self.alarm_text else set())


def parse_state_table(sec: Section, tag_names: set[str]) -> StateRules | None:
    """Read ``[device.<name>.state]`` (no I/O); issues are recorded on the section."""
    rules = StateRules()
    ok = True
    for state in RULE_STATES:
        raw = sec.raw(state, None)
        if raw is None:
            continue
        items = [raw] if isinstance(raw, str) else raw
        if not isinstance(items, list) or not items or not all(isinstance(i, str) for i in items):
            sec.error(state, f"expected a condition string or a non-empty list of them, found {raw!r}")
            ok = False
            continue
        conds = []
        for text in items:
            try:
                cond = parse_condition(text)
            except ValueError as exc:
                sec.error(state, str(exc))
                ok = False
                continue
            if cond.tag not in tag_names:
                sec.error(state, f"expected a tag of this device ({', '.join(sorted(tag_names))}), found {cond.tag!r}")
                ok = False
                continue
            conds.append(cond)
        rules.conditions[state] = conds
    for key in ("parts", "alarm_text"):
        name = sec.get_str(key, None)
        if name is not None and name not in tag_names:
            sec.error(key, f"expected a tag of this device ({', '.join(sorted(tag_names))}), found {name!r}")
            ok = False
        elif name is not None:
            setattr(rules, key, name)
    sec.finish()
    if not rules.conditions and ok:
        sec.error("running", "expected at least one of running, hold, alarm")
        return None
    return rules if ok else None


class RuleTracker:
    """Feeds a MachineTracker from the readings of a device with a ``[device.<name>.state]`` table."""

    def __init__(self, device: str, rules: StateRules, tracker: MachineTracker | None = None) -> None:
        self.rules = rules
        self.tracker = tracker or MachineTracker(device)
        self._needed = rules.tags()
        self._values: dict[str, tuple[Any, int]] = {}
        self._alarmed = False

    def update(self, readings: list[Reading]) -> None:
        """Take a batch of readings of the device and re-evaluate the state."""
        needed = self._needed
        touched = False
        for r in readings:
            if r.tag.name in needed:
                self._values[r.tag.name] = (r.value, int(r.quality))
                touched = True
        if touched:
            self.evaluate()

    def evaluate(self) -> None:
        """Apply the rules to the current values."""
        rules, values, t = self.rules, self._values, self.tracker
        cond_tags = {c.tag for cs in rules.conditions.values() for c in cs}
        if any(values.get(n, (None, Quality.BAD))[1] == Quality.BAD for n in cond_tags):
            t.set_state("offline")
            self._alarmed = False
            return
        state = "idle"
        for s in RULE_STATES:
            if any(c.holds(values[c.tag][0]) for c in rules.conditions.get(s, ())):
                state = s
                break
        if state == "alarm" and not self._alarmed:
            text = ""
            if rules.alarm_text:
                v, q = values.get(rules.alarm_text, (None, Quality.BAD))
                text = "" if q == Quality.BAD or v is None else str(v)
            t.alarm(text, text or ", ".join(
                f"{c.tag} {c.op} {c.value}" if c.op not in ("truthy", "not") else c.tag
                for c in rules.conditions["alarm"] if c.holds(values[c.tag][0])))
        self._alarmed = state == "alarm"
        t.set_state(state)
        if rules.parts:
            v, q = values.get(rules.parts, (None, Quality.BAD))
            if q != Quality.BAD and isinstance(v, (int, float)) and not isinstance(v, bool):
                t.count_parts(int(v))


def attach(runner: Any) -> MachineTracker | None:
    """The machine tracker of one device runner, or None.

    A rule-based tracker (the device's ``[device.<name>.state]`` table) is fed from the runner's readings by
    wrapping its ``deliver``; otherwise the tracker a driver keeps itself (``driver.machine``).
    """
    rules = getattr(runner.device, "state", None)
    if rules is not None:
        rt = RuleTracker(runner.name, rules)
        inner = runner.deliver

        def deliver(readings: list[Reading]) -> None:
            rt.update(readings)
            inner(readings)

        runner.deliver = deliver  # the runner's only way out for readings
        return rt.tracker
    own = getattr(runner.driver, "machine", None)
    return own if isinstance(own, MachineTracker) else None


def metric_families(trackers: dict[str, MachineTracker]) -> Iterator[Any]:
    """Prometheus families of the machine states (at scrape time)."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily

    if not trackers:
        return
    secs = CounterMetricFamily("edged_machine_state_seconds", "Cumulative seconds each machine spent in each "
                                                               "normalized state.", labels=["device", "state"])
    cur = GaugeMetricFamily("edged_machine_state", "Normalized machine state: 1 for the current one.",
                            labels=["device", "state"])
    parts = CounterMetricFamily("edged_machine_parts", "Parts counted (increments of the machine's counter, or "
                                                       "completed cycles).", labels=["device"])
    alarms = CounterMetricFamily("edged_machine_alarms", "Alarms the machine raised.", labels=["device"])
    last = InfoMetricFamily("edged_machine_last_alarm", "The machine's last alarm: code and text.",
                            labels=["device"])
    for name, t in sorted(trackers.items()):
        for state, s in t.seconds().items():
            secs.add_metric([name, state], s)
            cur.add_metric([name, state], 1.0 if t.state == state else 0.0)
        parts.add_metric([name], t.parts)
        alarms.add_metric([name], t.alarms)
        if t.alarms:
            last.add_metric([name], {"code": t.alarm_code, "text": t.alarm_text[:120]})
    yield from (secs, cur, parts, alarms, last)
