"""Parsing of sim tag addresses and the signals they generate (pure functions of time and state)."""
from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from typing import Any

from edged.tag import DataType

KINDS = ("counter", "ramp", "sine", "square", "random", "constant")
USAGE = ("expected one of counter, counter:START, ramp:MIN:MAX:PERIOD_S, sine:AMPLITUDE:PERIOD_S, "
         "square:PERIOD_S, random:MIN:MAX, constant:VALUE")


class AddressError(ValueError):
    """A sim address that cannot be parsed; the message says what was expected."""


@dataclass(slots=True)
class Signal:
    """One parsed sim address; ``next()`` gives the raw value of the next read."""

    kind: str
    params: tuple[Any, ...] = ()
    dtype: DataType = DataType.FLOAT64
    rng: random.Random | None = field(default=None, repr=False, compare=False)
    count: int | None = field(default=None, repr=False, compare=False)

    def start(self, seed: int) -> None:
        """Reset run-time state: the counter origin and the random generator."""
        if self.kind == "counter":
            # Without a fixed start, a 64-bit counter counts from the Unix time in microseconds: a later
            # run always starts above every value of an earlier run, so a jump means a restart, not a
            # loss. Narrower types start at 0 (the time does not fit) and wrap like a PLC counter.
            if self.params:
                self.count = self.params[0]
            elif self.dtype.bits >= 64:
                self.count = time.time_ns() // 1000
            else:
                self.count = 0
        if self.kind == "random":
            self.rng = random.Random(seed)

    def next(self, t: float) -> Any:
        """The raw value at wall-clock time t (seconds); the counter increments once per call."""
        k = self.kind
        if k == "counter":
            if self.count is None:
                self.start(0)
            value = self.count
            lo, hi = self.dtype.limits  # type: ignore[misc]
            self.count = value + 1 if value < hi else int(lo)  # type: ignore[operator]
            return value
        if k == "ramp":
            lo, hi, period = self.params
            return lo + (hi - lo) * ((t % period) / period)
        if k == "sine":
            amplitude, period = self.params
            return amplitude * math.sin(2.0 * math.pi * t / period)
        if k == "square":
            (period,) = self.params
            on = (t % period) < period / 2.0
            return on if self.dtype is DataType.BOOL else int(on)
        if k == "random":
            lo, hi = self.params
            if self.rng is None:
                self.start(0)
            assert self.rng is not None
            if self.dtype.is_integer:
                return self.rng.randint(int(lo), int(hi))
            return self.rng.uniform(lo, hi)
        return self.params[0]


def _num(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise AddressError(f"expected a number for {what}, found {text!r}") from None
    if not math.isfinite(value):
        raise AddressError(f"expected a finite number for {what}, found {text!r}")
    return value


def _period(text: str) -> float:
    value = _num(text, "PERIOD_S")
    if value <= 0:
        raise AddressError(f"expected a PERIOD_S above 0, found {text!r}")
    return value


def _constant(text: str, dtype: DataType | None) -> tuple[Any, DataType]:
    low = text.lower()
    if dtype is None:
        if low in ("true", "false"):
            return low == "true", DataType.BOOL
        try:
            return int(text), DataType.INT64
        except ValueError:
            pass
        try:
            return float(text), DataType.FLOAT64
        except ValueError:
            return text, DataType.STRING
    if dtype is DataType.STRING:
        return text, dtype
    if dtype is DataType.BOOL:
        if low not in ("true", "false", "1", "0"):
            raise AddressError(f"expected true or false for a bool constant, found {text!r}")
        return low in ("true", "1"), dtype
    if dtype.is_integer:
        try:
            value = int(text)
        except ValueError:
            raise AddressError(f"expected an integer constant for type {dtype.value}, found {text!r}") from None
        lo, hi = dtype.limits  # type: ignore[misc]
        if not lo <= value <= hi:
            raise AddressError(f"expected a constant within {dtype.value} [{lo:g}, {hi:g}], found {value}")
        return value, dtype
    return _num(text, "VALUE"), dtype


def parse_address(address: str, dtype: DataType | None) -> Signal:
    """Parse ``kind[:params]`` against an optional configured type; raise AddressError saying why not."""
    kind, _, rest = address.strip().partition(":")
    kind = kind.lower()
    parts = rest.split(":") if rest else []
    if kind not in KINDS:
        raise AddressError(f"{USAGE}, found {address!r}")

    def arity(n: int, form: str) -> None:
        if len(parts) != n:
            raise AddressError(f"expected {form}, found {address!r}")

    if kind == "counter":
        if len(parts) > 1:
            raise AddressError(f"expected counter or counter:START, found {address!r}")
        start: tuple[Any, ...] = ()
        if parts:
            try:
                start = (int(parts[0]),)
            except ValueError:
                raise AddressError(f"expected an integer START, found {parts[0]!r}") from None
        dt = dtype or DataType.INT64
        if not dt.is_integer:
            raise AddressError(f"expected an integer type for a counter, found type {dt.value!r}")
        lo, hi = dt.limits  # type: ignore[misc]
        if start and not lo <= start[0] <= hi:
            raise AddressError(f"expected a START within {dt.value} [{lo:g}, {hi:g}], found {start[0]}")
        return Signal(kind, start, dt)
    if kind == "constant":
        if not rest:
            raise AddressError(f"expected constant:VALUE, found {address!r}")
        value, dt = _constant(rest, dtype)
        return Signal(kind, (value,), dt)
    if kind == "square":
        arity(1, "square:PERIOD_S")
        dt = dtype or DataType.BOOL
        if not (dt is DataType.BOOL or dt.is_integer):
            raise AddressError(f"expected type bool or an integer type for a square wave, found type {dt.value!r}")
        return Signal(kind, (_period(parts[0]),), dt)
    if kind == "ramp":
        arity(3, "ramp:MIN:MAX:PERIOD_S")
        lo, hi = _num(parts[0], "MIN"), _num(parts[1], "MAX")
        params: tuple[Any, ...] = (lo, hi, _period(parts[2]))
    elif kind == "sine":
        arity(2, "sine:AMPLITUDE:PERIOD_S")
        params = (_num(parts[0], "AMPLITUDE"), _period(parts[1]))
    else:
        arity(2, "random:MIN:MAX")
        lo, hi = _num(parts[0], "MIN"), _num(parts[1], "MAX")
        params = (lo, hi)
    if kind in ("ramp", "random") and params[1] < params[0]:
        raise AddressError(f"expected MAX >= MIN, found {address!r}")
    dt = dtype or DataType.FLOAT64
    if not dt.is_numeric:
        raise AddressError(f"expected a numeric type for {kind}, found type {dt.value!r}")
    return Signal(kind, params, dt)
