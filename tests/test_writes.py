"""Write safety: read-only tags, types and ranges are refused before any driver sees the value."""
import pytest

from edged.errors import WriteRefused
from edged.tag import Access, DataType, Tag
from edged.writes import check_write


def tag(dtype: DataType, access: Access = Access.WRITE, **kw) -> Tag:
    return Tag("dev", "t", "hr:0", dtype, "default", None, access, **kw)


@pytest.mark.parametrize("dtype,value,expected", [
    (DataType.UINT16, 65535, 65535),
    (DataType.INT16, -32768, -32768),
    (DataType.INT32, "12", 12),
    (DataType.FLOAT32, 1.5, 1.5),
    (DataType.BOOL, True, True),
    (DataType.BOOL, 0, False),
    (DataType.BOOL, "on", True),
    (DataType.STRING, "ABC", "ABC"),
    (DataType.UINT64, 2**64 - 1, 2**64 - 1),
])
def test_accepted(dtype: DataType, value: object, expected: object) -> None:
    assert check_write(tag(dtype), value) == expected


@pytest.mark.parametrize("t,value,fragment", [
    (tag(DataType.UINT16, Access.READ), 1, "read-only"),
    (tag(DataType.UINT16), 65536, "outside the range of uint16"),
    (tag(DataType.UINT16), -1, "outside the range of uint16"),
    (tag(DataType.INT16), 1.5, "expected an integer"),
    (tag(DataType.INT16), True, "expected a number"),
    (tag(DataType.FLOAT32), float("nan"), "finite"),
    (tag(DataType.FLOAT32), "abc", "expected a number"),
    (tag(DataType.BOOL), 2, "expected a boolean"),
    (tag(DataType.STRING), 5, "expected a string"),
    (tag(DataType.FLOAT32, min=0.0, max=10.0), 10.5, "above max 10"),
    (tag(DataType.FLOAT32, min=0.0, max=10.0), -0.1, "below min 0"),
    (tag(DataType.INT16, scale=0.1), 3276.8, "outside the range of int16"),
])
def test_refused(t: Tag, value: object, fragment: str) -> None:
    with pytest.raises(WriteRefused, match=fragment):
        check_write(t, value)


def test_scaled_write_is_converted_back_by_the_driver_side() -> None:
    t = tag(DataType.INT16, scale=0.1)
    assert check_write(t, 12.3) == 12.3
    assert t.to_raw(12.3) == 123


def test_arrays_datetimes_records_and_learned_types_are_checked_before_any_driver() -> None:
    from edged.tag import Access, DataType, Tag

    arr = Tag("d", "a", "x", DataType.INT16, "g", None, access=Access.WRITE, dims=(3,), min=0, max=10)
    assert check_write(arr, [1, 2, "3"]) == [1, 2, 3]
    for bad in ([1, 2], [1, 2, 11], "x", [1, 2, True]):
        with pytest.raises(WriteRefused):
            check_write(arr, bad)
    when = Tag("d", "t", "x", DataType.DATETIME, "g", None, access=Access.WRITE)
    assert check_write(when, "2026-12-02T10:00:00Z") == "2026-12-02T10:00:00Z"
    with pytest.raises(WriteRefused, match="RFC 3339"):
        check_write(when, "soon")
    rec = Tag("d", "r", "x", DataType.STRUCT, "g", None, access=Access.WRITE)
    assert check_write(rec, {"a": 1}) == {"a": 1}
    with pytest.raises(WriteRefused, match="record"):
        check_write(rec, [1])
    anyt = Tag("d", "v", "x", DataType.ANY, "g", None, access=Access.WRITE, max=100)
    assert check_write(anyt, 5.5) == 5.5 and check_write(anyt, "RUN") == "RUN"
    with pytest.raises(WriteRefused, match="above max"):
        check_write(anyt, 101)
    with pytest.raises(WriteRefused, match="finite"):
        check_write(anyt, float("nan"))
