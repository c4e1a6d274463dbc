"""Simulation: every device of a cell served by its driver's emulator, values from generators, faults on demand.

Used by `edged simulate` (and its HTTP control API) and by the HIL suite. A fault is
``DEVICE=KIND[:ARG]`` (``press1=latency:200ms``, ``gw=silence-unit:9``, ``plc1=plc-stop``); what each
emulator supports is listed by ``faults()``.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from edged.cell import Cell
from edged.driver import Emulator, FaultUnsupported, emulator_for
from edged.simulation.generators import Generator

log = logging.getLogger("edged.simulate")

STEP_S = 0.05


@dataclass(frozen=True, slots=True)
class Fault:
    """One fault request: a device, a kind, an optional argument."""

    device: str
    kind: str
    arg: str = ""

    @classmethod
    def parse(cls, text: str) -> "Fault":
        """``DEVICE=KIND[:ARG]``; ValueError when malformed."""
        device, sep, rest = text.partition("=")
        if not sep or not device.strip() or not rest.strip():
            raise ValueError(f"expected DEVICE=KIND[:ARG] such as press1=latency:200ms, found {text!r}")
        kind, _, arg = rest.partition(":")
        return cls(device.strip(), kind.strip(), arg.strip())

    def __str__(self) -> str:
        return f"{self.device}={self.kind}" + (f":{self.arg}" if self.arg else "")


class Simulation:
    """Owns the emulators of a cell's devices and steps the generators; faults go to the right emulator."""

    def __init__(self, cell: Cell, devices: list[str], generators: dict[str, Generator] | None = None,
                 animate: bool = False) -> None:
        self.cell = cell
        self.devices = devices
        self.generators = generators if generators is not None else dict(getattr(cell, "simulate", None) or {})
        self.animate = animate
        self.emulators: dict[str, Emulator] = {}  # device -> its emulator
        self._started: list[Emulator] = []
        self._task: asyncio.Task | None = None
        self.faults_applied: list[tuple[float, str]] = []

    async def start(self) -> None:
        """Start one emulator per driver kind, set initial generated values, and start stepping."""
        by_kind: dict[str, list[Any]] = defaultdict(list)
        for name in self.devices:
            dev = self.cell.devices[name]
            by_kind[dev.spec.driver].append(dev)
        try:
            for devs in by_kind.values():
                emu = emulator_for([d.driver for d in devs])
                await emu.start()
                self._started.append(emu)
                for d in devs:
                    self.emulators[d.spec.name] = emu
        except BaseException:
            await self.stop()
            raise
        self._step(0.0, 0.0)
        self._task = asyncio.create_task(self._run(), name="simulate:generators")

    async def stop(self) -> None:
        """Stop stepping and every emulator."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        started, self._started = self._started, []
        for emu in started:
            try:
                await emu.stop()
            except Exception as exc:  # stopping must release the others too
                log.warning("simulate: stopping %s failed: %r", type(emu).__name__, exc)

    # -- values ------------------------------------------------------------------------
    def read(self, key: str) -> Any:
        """The emulated value of a tag (``device.tag``)."""
        tag = self.cell.tags[key]
        return self.emulators[tag.device].get_value(tag)

    def set(self, key: str, value: Any) -> None:
        """Set the emulated value of a tag."""
        tag = self.cell.tags[key]
        self.emulators[tag.device].set_value(tag, value)

    def _step(self, t: float, dt: float) -> None:
        for key, gen in self.generators.items():
            tag = gen.tag
            emu = self.emulators.get(tag.device)
            if emu is None or (tag.writable and t > 0.0):
                continue  # a writable tag's generator gives its initial value; then it holds what is written
            try:
                emu.set_value(tag, gen.value(t, dt, self._safe_read))
            except (ValueError, TypeError, OverflowError, KeyError) as exc:
                log.debug("simulate: %s: %r", key, exc)
        if self.animate:
            n = int(t / 0.5)
            for name in self.devices:
                for tag in self.cell.devices[name].tags:
                    if tag.key not in self.generators and tag.dtype.is_numeric and not tag.writable:
                        try:
                            self.emulators[name].set_value(tag, (n % 100) * (tag.scale if tag.scaled else 1.0))
                        except (ValueError, TypeError, OverflowError):
                            pass

    def _safe_read(self, key: str) -> Any:
        try:
            return self.read(key)
        except Exception:  # a tag of a device not emulated here: no value to follow
            return None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        t0 = last = loop.time()
        while True:
            await asyncio.sleep(STEP_S)
            now = loop.time()
            self._step(now - t0, now - last)
            last = now

    # -- faults ---------------------------------------------------------------------------
    def faults(self) -> dict[str, list[str]]:
        """Per device, the fault kinds its emulator supports."""
        return {name: sorted(emu.faults) for name, emu in self.emulators.items()}

    async def inject(self, fault: Fault) -> None:
        """Apply a fault; KeyError for an unknown device, FaultUnsupported for a fault its emulator lacks."""
        emu = self.emulators.get(fault.device)
        if emu is None:
            raise KeyError(f"device {fault.device!r} is not emulated here (devices: {', '.join(self.emulators)})")
        if fault.kind not in emu.faults:
            raise FaultUnsupported(f"device {fault.device}: its emulator cannot play {fault.kind!r} (it can: "
                                   f"{', '.join(sorted(emu.faults)) or 'nothing'})")
        await emu.inject(fault.device, fault.kind, fault.arg)
        self.faults_applied.append((time.time(), str(fault)))
        log.info("simulate: fault %s", fault)


def parse_duration_s(text: str, default_unit: str = "ms") -> float:
    """``200ms``, ``1.5s`` or a bare number in ``default_unit``; ValueError when malformed."""
    t = text.strip().lower()
    for unit, factor in (("ms", 0.001), ("s", 1.0)):
        if t.endswith(unit):
            return float(t[: -len(unit)]) * factor
    return float(t) * (0.001 if default_unit == "ms" else 1.0)
