"""Animates the demo cell's emulated devices: a press that cycles, heats up and cools, and a robot."""
from __future__ import annotations

import asyncio
import math
import time
from typing import Any

from edged.cell import Cell


class DemoAnimation:
    """Moves emulated device values along a deterministic production pattern."""

    def __init__(self, cell: Cell, emulators: dict[str, Any]) -> None:
        self.cell = cell
        self.emulators = emulators  # device name -> Emulator
        self.cycles = 0

    def _set(self, key: str, value: Any) -> None:
        tag = self.cell.tags.get(key)
        if tag is not None:
            self.emulators[tag.device].set_value(tag, value)

    def step(self, t: float) -> None:
        """Set every animated value for time t (seconds since start)."""
        phase = t % 60.0
        running = phase < 45.0  # 45 s production, 15 s pause
        self._set("press1.running", running)
        self._set("press1.spindle_speed", 1450.0 + 30.0 * math.sin(t / 3.0) if running else 0.0)
        self._set("press1.oil_temp", 42.0 + 20.0 * (1 - math.exp(-phase / 20.0)) if running
                  else 62.0 - (phase - 45.0) * 0.5)
        stroke = running and (t % 2.0) < 0.6
        self._set("press1.part_sensor", stroke)
        self._set("press1.hydraulic_pressure", (180.0 + 20.0 * math.sin(t * 2.0)) if stroke else 12.0)
        if running and int(t * 10) % 20 == 0:
            self.cycles += 1
        self._set("press1.cycle_count", self.cycles)
        self._set("robot1.program", "PICK01" if running else "HOME")
        self._set("robot1.joint_temp", 35.0 + 5.0 * math.sin(t / 10.0))
        self._set("robot1.gripper_closed", running and (t % 4.0) < 2.0)
        # S7 conveyor (conveyor1): runs with the press, one part every 2 s
        self._set("conveyor1.running", running)
        self._set("conveyor1.speed", 18.0 + 0.5 * math.sin(t) if running else 0.0)
        self._set("conveyor1.part_count", self.cycles)

    async def run(self, period_s: float = 0.1) -> None:
        """Step until cancelled."""
        t0 = time.monotonic()
        while True:
            self.step(time.monotonic() - t0)
            await asyncio.sleep(period_s)
