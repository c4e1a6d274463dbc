"""Report by exception: deadband, quality changes and heartbeat decide which readings become samples."""
import math
import random

import pytest

from edged.change import ChangeFilter, PyChangeFilter
from edged.tag import Access, DataType, Quality, Reading, Sample, Tag

IMPLS = [ChangeFilter, PyChangeFilter]


def tag(slot: int, deadband: float = 0.0, dtype: DataType = DataType.FLOAT32) -> Tag:
    return Tag("dev", f"t{slot}", "hr:0", dtype, "default", None, Access.READ, deadband=deadband, slot=slot)


@pytest.mark.parametrize("impl", IMPLS)
def test_first_value_always_passes_then_only_changes(impl) -> None:
    f = impl(2)
    a = tag(0)
    assert len(f.filter([Reading(a, 1.0, Quality.GOOD, 1)])) == 1
    assert f.filter([Reading(a, 1.0, Quality.GOOD, 2)]) == []
    out = f.filter([Reading(a, 1.5, Quality.GOOD, 3)])
    assert [(s.device, s.tag, s.value, s.quality, s.ts_ns) for s in out] == [("dev", "t0", 1.5, 0, 3)]


@pytest.mark.parametrize("impl", IMPLS)
def test_deadband_is_exclusive_and_measured_from_last_reported_value(impl) -> None:
    f = impl(1)
    a = tag(0, deadband=0.5)
    f.filter([Reading(a, 10.0, Quality.GOOD, 1)])
    assert f.filter([Reading(a, 10.5, Quality.GOOD, 2)]) == []      # exactly the deadband: no
    assert f.filter([Reading(a, 10.4, Quality.GOOD, 3)]) == []
    assert f.filter([Reading(a, 9.6, Quality.GOOD, 4)]) == []
    # creeping values: measured against the last *reported* 10.0, not the last read
    assert len(f.filter([Reading(a, 10.51, Quality.GOOD, 5)])) == 1
    assert f.filter([Reading(a, 10.9, Quality.GOOD, 6)]) == []
    assert f.suppressed == 4


@pytest.mark.parametrize("impl", IMPLS)
def test_quality_change_passes_even_inside_deadband(impl) -> None:
    f = impl(1)
    a = tag(0, deadband=5.0)
    f.filter([Reading(a, 1.0, Quality.GOOD, 1)])
    bad = f.filter([Reading(a, None, Quality.BAD, 2)])
    assert [(s.value, s.quality) for s in bad] == [(None, 2)]
    assert f.filter([Reading(a, None, Quality.BAD, 3)]) == []
    back = f.filter([Reading(a, 1.0, Quality.GOOD, 4)])
    assert [(s.value, s.quality) for s in back] == [(1.0, 0)]


@pytest.mark.parametrize("impl", IMPLS)
def test_heartbeat_repeats_unchanged_values(impl) -> None:
    f = impl(1, heartbeat_s=10.0)
    a = tag(0)
    f.filter([Reading(a, 7, Quality.GOOD, 0)])
    assert f.filter([Reading(a, 7, Quality.GOOD, 9_999_999_999)]) == []
    assert len(f.filter([Reading(a, 7, Quality.GOOD, 10_000_000_000)])) == 1
    assert f.filter([Reading(a, 7, Quality.GOOD, 10_000_000_001)]) == []


@pytest.mark.parametrize("impl", IMPLS)
def test_strings_and_bools_compare_by_equality(impl) -> None:
    f = impl(2)
    s, b = tag(0, dtype=DataType.STRING), tag(1, dtype=DataType.BOOL)
    assert len(f.filter([Reading(s, "A", Quality.GOOD, 1), Reading(b, False, Quality.GOOD, 1)])) == 2
    assert f.filter([Reading(s, "A", Quality.GOOD, 2), Reading(b, False, Quality.GOOD, 2)]) == []
    assert [x.tag for x in f.filter([Reading(s, "B", Quality.GOOD, 3), Reading(b, False, Quality.GOOD, 3)])] == ["t0"]


@pytest.mark.parametrize("impl", IMPLS)
def test_nan_is_one_value(impl) -> None:
    f = impl(1)
    a = tag(0, deadband=0.5)
    assert len(f.filter([Reading(a, 1.0, Quality.GOOD, 1)])) == 1
    assert len(f.filter([Reading(a, math.nan, Quality.GOOD, 2)])) == 1   # number -> NaN: a change
    assert f.filter([Reading(a, math.nan, Quality.GOOD, 3)]) == []       # NaN -> NaN: none
    assert len(f.filter([Reading(a, 1.0, Quality.GOOD, 4)])) == 1        # NaN -> number: a change


@pytest.mark.parametrize("impl", IMPLS)
def test_big_integers_compare_exactly(impl) -> None:
    f = impl(1)
    a = tag(0, dtype=DataType.UINT64)
    f.filter([Reading(a, 2**64 - 1, Quality.GOOD, 1)])
    assert len(f.filter([Reading(a, 2**64 - 2, Quality.GOOD, 2)])) == 1  # equal as doubles, not as integers
    assert f.filter([Reading(a, 2**64 - 2, Quality.GOOD, 3)]) == []


def test_compiled_filter_equals_the_reference_on_random_streams() -> None:
    rng = random.Random(5)
    tags = [tag(i, deadband=rng.choice([0.0, 0.0, 0.5, 2.0]),
                dtype=rng.choice([DataType.FLOAT32, DataType.INT32, DataType.BOOL, DataType.STRING]))
            for i in range(40)]
    fc, fp = ChangeFilter(40, heartbeat_s=5.0), PyChangeFilter(40, heartbeat_s=5.0)
    pool = {DataType.FLOAT32: [0.0, 0.4, 1.0, 2.5, math.nan, math.inf, None],
            DataType.INT32: [0, 1, 2, 5, -3, None], DataType.BOOL: [True, False, None],
            DataType.STRING: ["A", "B", "", None]}
    ts = 0
    for _ in range(300):
        ts += rng.randrange(0, 2_000_000_000)
        batch = [Reading(t, rng.choice(pool[t.dtype]), rng.choice([Quality.GOOD] * 5 + [Quality.BAD, Quality.UNCERTAIN]),
                         ts) for t in rng.sample(tags, 10)]
        ca: dict = {}
        cb: dict = {}
        a, b = fc.filter(batch, ca), fp.filter(batch, cb)
        assert [tuple(x) for x in a] == [tuple(x) for x in b]
        assert ca == cb == {r.tag.key: (r.value, int(r.quality), r.ts_ns) for r in batch}
        assert all(type(x) is Sample for x in a)
    assert fc.suppressed == fp.suppressed > 0
