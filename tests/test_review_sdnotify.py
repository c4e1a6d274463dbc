"""Review regression: a zero, negative or malformed $WATCHDOG_USEC means no watchdog (never a busy feeding loop)."""
from __future__ import annotations

import os

import pytest

from edged import sdnotify


@pytest.mark.parametrize("usec, expected", [("0", None), ("-5000000", None), ("abc", None), ("", None),
                                            ("10000000", 5.0)])
def test_watchdog_interval(monkeypatch, usec: str, expected: float | None) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", usec)
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert sdnotify.watchdog_interval_s() == expected
