"""Report by exception: deadband, quality changes and heartbeat decide which readings become samples."""
from edged.change import ChangeFilter
from edged.tag import Access, DataType, Quality, Reading, Tag


def tag(slot: int, deadband: float = 0.0, dtype: DataType = DataType.FLOAT32) -> Tag:
    return Tag("dev", f"t{slot}", "hr:0", dtype, "default", None, Access.READ, deadband=deadband, slot=slot)


def test_first_value_always_passes_then_only_changes() -> None:
    f = ChangeFilter(2)
    a = tag(0)
    assert len(f.filter([Reading(a, 1.0, Quality.GOOD, 1)])) == 1
    assert f.filter([Reading(a, 1.0, Quality.GOOD, 2)]) == []
    out = f.filter([Reading(a, 1.5, Quality.GOOD, 3)])
    assert [(s.device, s.tag, s.value, s.quality, s.ts_ns) for s in out] == [("dev", "t0", 1.5, 0, 3)]


def test_deadband_is_exclusive_and_measured_from_last_reported_value() -> None:
    f = ChangeFilter(1)
    a = tag(0, deadband=0.5)
    f.filter([Reading(a, 10.0, Quality.GOOD, 1)])
    assert f.filter([Reading(a, 10.5, Quality.GOOD, 2)]) == []      # exactly the deadband: no
    assert f.filter([Reading(a, 10.4, Quality.GOOD, 3)]) == []
    assert f.filter([Reading(a, 9.6, Quality.GOOD, 4)]) == []
    # creeping values: measured against the last *reported* 10.0, not the last read
    assert len(f.filter([Reading(a, 10.51, Quality.GOOD, 5)])) == 1
    assert f.filter([Reading(a, 10.9, Quality.GOOD, 6)]) == []
    assert f.suppressed == 4


def test_quality_change_passes_even_inside_deadband() -> None:
    f = ChangeFilter(1)
    a = tag(0, deadband=5.0)
    f.filter([Reading(a, 1.0, Quality.GOOD, 1)])
    bad = f.filter([Reading(a, None, Quality.BAD, 2)])
    assert [(s.value, s.quality) for s in bad] == [(None, 2)]
    assert f.filter([Reading(a, None, Quality.BAD, 3)]) == []
    back = f.filter([Reading(a, 1.0, Quality.GOOD, 4)])
    assert [(s.value, s.quality) for s in back] == [(1.0, 0)]


def test_heartbeat_repeats_unchanged_values() -> None:
    f = ChangeFilter(1, heartbeat_s=10.0)
    a = tag(0)
    f.filter([Reading(a, 7, Quality.GOOD, 0)])
    assert f.filter([Reading(a, 7, Quality.GOOD, 9_999_999_999)]) == []
    assert len(f.filter([Reading(a, 7, Quality.GOOD, 10_000_000_000)])) == 1
    assert f.filter([Reading(a, 7, Quality.GOOD, 10_000_000_001)]) == []


def test_strings_and_bools_compare_by_equality() -> None:
    f = ChangeFilter(2)
    s, b = tag(0, dtype=DataType.STRING), tag(1, dtype=DataType.BOOL)
    assert len(f.filter([Reading(s, "A", Quality.GOOD, 1), Reading(b, False, Quality.GOOD, 1)])) == 2
    assert f.filter([Reading(s, "A", Quality.GOOD, 2), Reading(b, False, Quality.GOOD, 2)]) == []
    assert [x.tag for x in f.filter([Reading(s, "B", Quality.GOOD, 3), Reading(b, False, Quality.GOOD, 3)])] == ["t0"]
