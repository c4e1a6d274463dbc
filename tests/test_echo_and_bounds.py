"""Bounds on what comes from outside: escaped, bounded echoes; string writes within the tag's length;
command payloads parsed within a size and a depth (issue 8, items 7-9), without a broker."""
from __future__ import annotations

from dataclasses import dataclass

import pytest

from edged.echo import ECHO_CHARS, echo, message, token
from edged.errors import WriteRefused
from edged.sinks.mqtt import MAX_REQUEST_ID, Refusal, Request, parse_command
from edged.tag import Access, DataType, Tag
from edged.writes import MAX_STRING_WRITE, check_write, string_limit


@dataclass
class _Addr:
    length: int


def string_tag(addr: object = None) -> Tag:
    return Tag("dev", "label", "hr:0", DataType.STRING, "default", addr, Access.WRITE)


# -- echo ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("value", ['"}\n{"inj":1', "a\rb", "\x1b[31mred", "line\u2028sep", b"\n\x00"])
def test_echo_escapes_every_line_break_and_control_character(value: object) -> None:
    """repr escapes them: an echoed value never starts a new log line or moves the terminal cursor."""
    shown = echo(value)
    assert shown.isprintable() and "\n" not in shown and "\r" not in shown


def test_echo_is_bounded_and_says_it_was_cut() -> None:
    """A megabyte string is shown as its first characters and '...'."""
    shown = echo("A" * 1_000_000)
    assert len(shown) == ECHO_CHARS and shown.endswith("...") and shown.startswith("'AAA")
    assert echo(12.5) == "12.5" and echo("ok") == "'ok'"
    assert len(echo(list(range(100_000)))) == ECHO_CHARS


def test_echo_survives_a_repr_that_fails() -> None:
    """A value nested too deeply for repr is shown by its type."""
    deep: list = []
    for _ in range(100_000):
        deep = [deep]
    assert echo(deep) == "<list>"


def test_token_is_bare_for_plain_words_and_escaped_otherwise() -> None:
    """``key=value`` fields: ``mqtt:up`` stays as is; spaces, quotes, '=' or newlines are quoted."""
    assert token("mqtt:up") == "mqtt:up" and token("sparkplug:sp:DCMD/press1") == "sparkplug:sp:DCMD/press1"
    assert token("a b") == "'a b'" and token("x=1") == "'x=1'" and token('"}\n{') == "'\"}\\n{'"
    assert len(token("r" * 500)) == ECHO_CHARS


def test_message_keeps_printable_text_and_escapes_the_rest() -> None:
    """Free text: as is when printable and short."""
    assert message("press1.sp: 5000 is above max 1000") == "press1.sp: 5000 is above max 1000"
    assert "\n" not in message("two\nlines")
    assert len(message("x" * 10_000)) == 400


# -- string writes ------------------------------------------------------------------------------------------
def test_a_string_longer_than_the_drivers_length_is_refused() -> None:
    """Modbus says ``length`` (characters) on its parsed address: one more character is refused."""
    tag = string_tag(_Addr(8))
    assert string_limit(tag) == 8
    assert check_write(tag, "12345678") == "12345678"
    with pytest.raises(WriteRefused, match="at most 8 characters, got 9 characters"):
        check_write(tag, "123456789")


def test_a_string_beyond_the_generic_bound_is_refused_and_not_echoed_in_full() -> None:
    """Without a driver bound, MAX_STRING_WRITE applies; the message quotes at most ECHO_CHARS of the value."""
    tag = string_tag()
    assert string_limit(tag) == MAX_STRING_WRITE
    assert check_write(tag, "x" * MAX_STRING_WRITE) == "x" * MAX_STRING_WRITE
    with pytest.raises(WriteRefused) as info:
        check_write(tag, "x" * 1_000_000)
    assert f"at most {MAX_STRING_WRITE} characters, got 1000000 characters" in str(info.value)
    assert len(str(info.value)) < 250


def test_a_string_with_a_lone_surrogate_is_refused() -> None:
    """JSON allows "\\udddd"; no device or answer can carry it (found by fuzz/fuzz_mqtt_command.py)."""
    with pytest.raises(WriteRefused, match="lone surrogate"):
        check_write(string_tag(), "ok\udddd")


def test_a_huge_number_in_a_refusal_is_bounded() -> None:
    """A 4000-digit integer above max is quoted cut (and never converted to a 4000-character string)."""
    tag = Tag("dev", "sp", "hr:0", DataType.INT64, "default", None, Access.WRITE, min=0, max=10)
    with pytest.raises(WriteRefused) as info:
        check_write(tag, 10 ** 4000)
    assert len(str(info.value)) < 250


# -- MQTT command payloads ----------------------------------------------------------------------------------
def test_a_payload_over_the_size_is_refused_unread() -> None:
    """500,000 brackets: too large, not parsed."""
    r = parse_command(b"[" * 500_000, 4096)
    assert isinstance(r, Refusal) and r.reason == "too_large" and "500000 bytes" in r.error


@pytest.mark.parametrize("payload, fragment", [
    (b"[" * 3000, "nested too deeply"),
    (b"{" * 100, "Expecting property name"),
    (b"\xff\xfe\x00", ""),
    (b"[1, 2]", ""),
    (b'{"id": "x"}', ""),
    (b'{"value": 1, "id": {"a": 1}}', 'expected "id" to be a string'),
    (b'{"value": 1, "id": true}', 'expected "id" to be a string'),
    (12, "found a int payload"),
])
def test_bad_payloads_are_bad_requests(payload: object, fragment: str) -> None:
    """Anything but a JSON object with a value, within the size, is a bad request that says what is expected."""
    r = parse_command(payload, 4096)
    assert isinstance(r, Refusal) and r.reason == "bad_request"
    assert r.error.startswith('expected a JSON object {"value": ..., "id": "..."}') and fragment in r.error
    assert len(r.error) < 300


@pytest.mark.parametrize("payload, value, request_id", [
    (b'{"value": 55.0, "id": "req-42"}', 55.0, "req-42"),
    ('{"value": "on"}', "on", ""),
    (bytearray(b'{"value": null, "id": 7}'), None, "7"),
    (b'{"value": 1, "id": "' + b"r" * 500 + b'"}', 1, "r" * MAX_REQUEST_ID),
    (b'{"value": 1, "id": "a\\udddd"}', 1, "a?"),
])
def test_good_payloads_give_the_value_and_a_bounded_utf8_id(payload: object, value: object, request_id: str) -> None:
    """The id is cut to MAX_REQUEST_ID characters and made encodable (a lone surrogate becomes '?')."""
    assert parse_command(payload, 4096) == Request(value, request_id)
