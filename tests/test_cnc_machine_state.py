"""Normalized machine state: the tracker's time accounting, part counting and alarms, and the
[device.<name>.state] rules that give PLC machines the same state from their tags."""
from __future__ import annotations

import tomllib

import pytest

from edged.cell import parse_cell
from edged.errors import ConfigError
from edged.machine_state import MachineTracker, RuleTracker, parse_condition
from edged.tag import DataType, Quality, Reading, Tag


class Clock:
    """A hand-moved clock."""

    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_time_in_state_adds_up_to_the_tracked_time() -> None:
    """Every second goes to exactly one state, the current one included."""
    clock = Clock()
    t = MachineTracker("m", clock)
    for state, dt in [("idle", 2.0), ("running", 5.0), ("hold", 1.0), ("running", 3.0), ("alarm", 0.5),
                      ("offline", 4.0), ("idle", 0.25)]:
        t.set_state(state)
        clock.t += dt
    secs = t.seconds()
    assert secs == {"running": 8.0, "idle": 2.25, "hold": 1.0, "alarm": 0.5, "offline": 4.0}
    assert sum(secs.values()) == pytest.approx(clock.t - 100.0)
    with pytest.raises(ValueError):
        t.set_state("walking")


def test_parts_follow_the_machine_counter_through_resets() -> None:
    """Increments count; a lower value is a counter reset, not negative parts."""
    t = MachineTracker("m")
    for counter in (4523, 4523, 4525, 10, 12):
        t.count_parts(counter)
    assert t.parts == 4
    t.add_parts()
    assert t.parts == 5


@pytest.mark.parametrize("text,value,holds", [
    ("run", True, True), ("run", 0, False), ("not run", False, True), ("temp > 80", 81.5, True),
    ("temp > 80", "hot", False), ("code != 0", 0, False), ("mode == \"AUTO\"", "AUTO", True),
    ("flag == true", True, True), ("level <= 3", 3, True),
])
def test_conditions(text: str, value: object, holds: bool) -> None:
    """Each condition form against a value."""
    c = parse_condition(text)
    assert c.holds(value) is holds


@pytest.mark.parametrize("text", ["", "a b", "not a == 1", "a == b", "a == [1]", "a >> 1", "a == null"])
def test_bad_conditions(text: str) -> None:
    """Malformed conditions are refused with the expected form."""
    with pytest.raises(ValueError, match="expected"):
        parse_condition(text)


CELL = """
[cell]
name = "x"
[device.p]
driver = "sim"
[device.p.tag.run]
address = "constant:true"
[device.p.tag.door]
address = "constant:false"
[device.p.tag.fault]
address = "constant:0"
type = "int32"
[device.p.tag.count]
address = "counter"
[device.p.tag.text]
address = "constant:none"
[device.p.state]
"""


def _cell(state: str):
    return parse_cell(tomllib.loads(CELL + state), "x.toml")


def test_rules_priority_offline_parts_and_alarm_text() -> None:
    """alarm > hold > running > idle; a bad tag makes the machine offline; parts and alarm text from tags."""
    cell = _cell('running = "run"\nhold = ["door"]\nalarm = "fault != 0"\nparts = "count"\nalarm_text = "text"\n')
    rules = cell.devices["p"].state
    tags = {t.name: t for t in cell.devices["p"].tags}
    rt = RuleTracker("p", rules)

    def feed(**values: object) -> str:
        rt.update([Reading(tags[k], v, Quality.BAD if v is None else Quality.GOOD, 0) for k, v in values.items()])
        return rt.tracker.state

    assert feed(run=False, door=False, fault=0, count=5, text="") == "idle"
    assert feed(run=True) == "running"
    assert feed(door=True) == "hold"
    assert feed(fault=7, text="E07 oil pressure") == "alarm"
    assert rt.tracker.alarms == 1 and rt.tracker.alarm_text == "E07 oil pressure"
    assert feed(fault=7) == "alarm" and rt.tracker.alarms == 1  # the same alarm, not a new one
    assert feed(fault=0, door=False, count=8) == "running" and rt.tracker.parts == 3
    assert feed(run=None) == "offline"


@pytest.mark.parametrize("state,message", [
    ('running = "nosuch"', "device.p.state.running: expected a tag of this device"),
    ('running = 5', "device.p.state.running: expected a condition string"),
    ('running = "run"\nparts = "nosuch"', "device.p.state.parts: expected a tag of this device"),
    ('running = "run"\nrunnning = "run"', "device.p.state.runnning: unknown key"),
    ('parts = "count"', "expected at least one of running, hold, alarm"),
    ('hold = ["run >> 1"]', "device.p.state.hold: expected a number"),
])
def test_state_table_config_errors(state: str, message: str) -> None:
    """A bad state table fails at load with its dotted path."""
    with pytest.raises(ConfigError) as err:
        _cell(state)
    assert message in str(err.value), str(err.value)


def test_tag_helper_type() -> None:
    """Readings of tags outside the rules do not change the state."""
    cell = _cell('running = "run"\n')
    rt = RuleTracker("p", cell.devices["p"].state)
    other = Tag("p", "zzz", "x", DataType.INT32, "default", addr=None)
    rt.update([Reading(other, 1, Quality.GOOD, 0)])
    assert rt.tracker.state == "offline"
