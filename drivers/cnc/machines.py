"""Simulated GRBL 1.1 and Haas controllers for the emulator: bytes in, bytes out, on a simulated clock.

A program that runs moves the axes and counts a part at its end; feed hold, alarms and resets behave
as the real controllers do (a reset prints the banner). ``auto`` makes the machine run cycles on its
own (demo and ``edged simulate``); tests drive it with ``start_program``, ``feed_hold``, ``alarm``.
"""
from __future__ import annotations

import math
import re
import time
from typing import Callable

from . import grbl

BANNER = b"Grbl 1.1h ['$' for help]\r\n"
GRBL_SETTINGS = {0: 10, 1: 25, 2: 0, 3: 0, 4: 0, 5: 0, 6: 0, 10: 1, 11: 0.010, 12: 0.002, 13: 0, 20: 0, 21: 0,
                 22: 0, 23: 0, 24: 25.000, 25: 500.000, 26: 250, 27: 1.000, 30: 1000, 31: 0, 32: 0,
                 100: 250.000, 101: 250.000, 102: 250.000, 110: 500.000, 111: 500.000, 112: 500.000,
                 120: 10.000, 121: 10.000, 122: 10.000, 130: 200.000, 131: 200.000, 132: 200.000}


class GrblMachine:
    """A GRBL 1.1h controller with a 3-axis machine."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, auto: bool = False,
                 cycle_s: float = 4.0, idle_s: float = 2.0) -> None:
        self.clock = clock
        self.auto = auto
        self.cycle_s = cycle_s
        self.idle_s = idle_s
        self.state = "Idle"
        self.substate: int | None = None
        self.mpos = [0.0, 0.0, 0.0]
        self.wco = (10.0, 20.0, -5.0)
        self.ov = [100, 100, 100]
        self.feed = 0.0
        self.spindle = 0.0
        self.pins = ""
        self.line_no = 0
        self.parts = 0
        self.reports = 0
        self.settings = dict(GRBL_SETTINGS)
        self._rx = bytearray()
        self._run_started = 0.0
        self._run_elapsed = 0.0  # run time of the current cycle before a hold
        self._idle_since = clock()
        self.out: list[bytes] = []  # unsolicited output (alarms), taken by the emulator
        self.lines_received = 0
        self.modal_feed = 0.0

    # -- hooks -----------------------------------------------------------------
    def start_program(self) -> None:
        """Cycle start of a program: Run until cycle_s of motion have passed, then a part is done."""
        if self.state in ("Idle",):
            self.state, self.substate = "Run", None
            self._run_started, self._run_elapsed = self.clock(), 0.0

    def feed_hold(self) -> None:
        """``!``: a running program holds (Hold:0 while decelerating, then Hold:1)."""
        if self.state == "Run":
            self._run_elapsed += self.clock() - self._run_started
            self.state, self.substate = "Hold", 1
            self.feed = 0.0

    def cycle_start(self) -> None:
        """``~``: resume a held program, or start one."""
        if self.state == "Hold":
            self.state, self.substate = "Run", None
            self._run_started = self.clock()
        elif self.state == "Idle":
            self.start_program()

    def alarm(self, code: int = 1) -> None:
        """Raise ``ALARM:code`` (e.g. 1 hard limit): motion stops, the machine is locked."""
        self.state, self.substate = "Alarm", None
        self.feed = self.spindle = 0.0
        self.out.append(f"ALARM:{code}\r\n".encode())

    def reset(self) -> bytes:
        """Ctrl-X: abort, print the banner (an alarm or a run in progress leaves the machine in Alarm)."""
        out = b""
        was = self.state
        if was in ("Run", "Hold"):
            out += b"ALARM:3\r\n"
        self._rx.clear()
        self.feed = self.spindle = 0.0
        self.state, self.substate = ("Alarm" if was in ("Run", "Hold", "Alarm") else "Idle"), None
        out += b"\r\n" + BANNER
        if self.state == "Alarm":
            out += b"[MSG:'$H'|'$X' to unlock]\r\n"
        self._idle_since = self.clock()
        return out

    # -- simulation ------------------------------------------------------------
    def tick(self) -> None:
        """Advance the simulated machine to now."""
        now = self.clock()
        if self.state == "Run":
            t = self._run_elapsed + now - self._run_started
            if t >= self.cycle_s:
                self.state, self.parts = "Idle", self.parts + 1
                self.feed = self.spindle = 0.0
                self.mpos = [0.0, 0.0, 0.0]
                self._idle_since = now
                return
            phase = 2 * math.pi * t / self.cycle_s
            self.mpos = [round(50 * math.sin(phase), 3), round(30 * (1 - math.cos(phase)), 3), -2.0]
            self.feed = 1000.0 * self.ov[0] / 100
            self.spindle = 12000.0 * self.ov[2] / 100
            self.line_no = 10 + int(t * 10)
        elif self.state == "Idle" and self.auto and now - self._idle_since >= self.idle_s:
            self.start_program()

    def status_report(self) -> bytes:
        """``<...>`` as GRBL 1.1 sends it ($10=1: MPos and buffer state); WCO and Ov every 10th report."""
        self.tick()
        self.reports += 1
        state = self.state if self.substate is None else f"{self.state}:{self.substate}"
        pos = ",".join(f"{p:.3f}" for p in self.mpos)
        parts = [state, f"MPos:{pos}", "Bf:15,128", f"FS:{self.feed:g},{self.spindle:g}"]
        if self.state == "Run":
            parts.append(f"Ln:{self.line_no}")
        if self.pins:
            parts.append(f"Pn:{self.pins}")
        if self.reports % 10 == 1:
            parts.append("WCO:" + ",".join(f"{w:.3f}" for w in self.wco))
        elif self.reports % 10 == 2:
            parts.append("Ov:" + ",".join(map(str, self.ov)))
            if self.spindle:
                parts.append("A:SF")
        return ("<" + "|".join(parts) + ">\r\n").encode()

    def feed_bytes(self, data: bytes) -> bytes:
        """Process received bytes: real-time characters at once, command lines at their end."""
        out = b""
        for b in data:
            c = bytes([b])
            if c == grbl.STATUS_QUERY:
                out += self.status_report()
            elif c == grbl.FEED_HOLD:
                self.feed_hold()
            elif c == grbl.CYCLE_START:
                self.cycle_start()
            elif c == grbl.SOFT_RESET:
                out += self.reset()
            elif c in (b"\n", b"\r"):
                if self._rx:
                    line = self._rx.decode("ascii", "replace").strip()
                    self._rx.clear()
                    out += self.command(line)
            elif len(self._rx) < 255:
                self._rx.append(b)
        if self.out:
            out, self.out = b"".join(self.out) + out, []
        return out

    def command(self, line: str) -> bytes:
        """Answer one command line."""
        self.lines_received += 1
        self.tick()
        up = line.upper().replace(" ", "")
        if up == "$I":
            return b"[VER:1.1h.20190825:]\r\n[OPT:V,15,128]\r\nok\r\n"
        if up == "$$":
            if self.state not in ("Idle", "Alarm"):
                return b"error:8\r\n"
            return b"".join(f"${k}={v:g}\r\n".encode() if isinstance(v, int) else f"${k}={v:.3f}\r\n".encode()
                            for k, v in sorted(self.settings.items())) + b"ok\r\n"
        if up == "$X":
            if self.state == "Alarm":
                self.state = "Idle"
                self._idle_since = self.clock()
                return b"[MSG:Caution: Unlocked]\r\nok\r\n"
            return b"ok\r\n"
        if up == "$H":
            self.mpos = [0.0, 0.0, 0.0]
            self.state = "Idle"
            return b"ok\r\n"
        if up.startswith("$"):
            return b"error:3\r\n"
        if self.state == "Alarm":
            return b"error:9\r\n"
        if up in ("M2", "M30"):
            self.parts += 1
            return b"ok\r\n"
        if up[:1] in ("G", "M", "X", "Y", "Z", "F", "S", "N", "T"):
            words = dict(re.findall(r"([A-Z])(-?[\d.]+)", up))
            if "F" in words:
                self.modal_feed = float(words["F"])
            gs = {float(g) for g in re.findall(r"G([\d.]+)", up)}
            if gs & {1.0, 2.0, 3.0} and not self.modal_feed:
                return b"error:22\r\n"  # a feed move without a feed rate
            return b"ok\r\n"
        return b"error:20\r\n"


class HaasMachine:
    """A Haas mill answering Q commands (framed STX ... ETB CR LF ``>``)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, auto: bool = False,
                 cycle_s: float = 4.0, idle_s: float = 2.0) -> None:
        self.clock = clock
        self.auto = auto
        self.cycle_s = cycle_s
        self.idle_s = idle_s
        self.serial = "1234567"
        self.version = "100.20.000.1110"
        self.model = "VF2SSYT"
        self.mode = "MEM"
        self.program = "O00110"
        self.status = "IDLE"  # IDLE, BUSY (running), FEED HOLD, ALARM ON
        self.parts = 4523
        self.m30 = [553, 553]
        self.tool_changes = 23
        self.tool = 1
        self.macros: dict[int, float] = {5041: 12.5, 5042: -3.25, 100: 0.0}
        self.power_on = 100_259.0
        self.cycle_time = 10_977.0
        self.last_cycle = 0
        self.prev_cycle = 0
        self.first_command_lost = True  # the first command after a connection gets no answer
        self._run_started = 0.0
        self._run_elapsed = 0.0
        self._idle_since = clock()
        self._rx = bytearray()
        self._t0 = clock()
        self.commands = 0

    def connected(self) -> None:
        """A new connection (or the line came up): its first command will be ignored."""
        self.first_command_lost = True
        self._rx.clear()

    def start_program(self) -> None:
        """Cycle start: BUSY until cycle_s of run time passed, then a part is counted (M30)."""
        if self.status == "IDLE":
            self.status = "BUSY"
            self._run_started, self._run_elapsed = self.clock(), 0.0

    def feed_hold(self) -> None:
        """Feed hold of a running program."""
        if self.status == "BUSY":
            self._run_elapsed += self.clock() - self._run_started
            self.status = "FEED HOLD"

    def cycle_start(self) -> None:
        """Resume a held program, or start one."""
        if self.status == "FEED HOLD":
            self.status = "BUSY"
            self._run_started = self.clock()
        else:
            self.start_program()

    def alarm(self, code: int = 1) -> None:
        """An alarm stops the program."""
        self.status = "ALARM ON"

    def reset(self) -> None:
        """Reset clears an alarm."""
        self.status = "IDLE"
        self._idle_since = self.clock()

    def tick(self) -> None:
        """Advance the simulated machine to now."""
        now = self.clock()
        if self.status == "BUSY":
            t = self._run_elapsed + now - self._run_started
            if t >= self.cycle_s:
                self.status = "IDLE"
                self.parts += 1
                self.m30 = [self.m30[0] + 1, self.m30[1] + 1]
                self.prev_cycle, self.last_cycle = self.last_cycle, round(t)
                self.cycle_time += t
                self._idle_since = now
        elif self.status == "IDLE" and self.auto and now - self._idle_since >= self.idle_s:
            self.start_program()

    @staticmethod
    def _hms(seconds: float, width: int) -> str:
        s = int(seconds)
        return f"{s // 3600:0{width}d}:{s % 3600 // 60:02d}:{s % 60:02d}"

    def answer(self, line: str) -> str:
        """The text of the answer to one request line."""
        self.tick()
        parts = line.strip().split()
        if not parts or not parts[0].upper().startswith("?Q"):
            return "UNKNOWN"
        q = parts[0].upper()[2:]
        if q == "600":
            if len(parts) != 2 or not parts[1].isdigit():
                return "INVALID NUMBER"
            n = int(parts[1])
            return f"MACRO, {n}, {self.macros.get(n, 0.0):.6f}"
        table = {
            "100": f"SERIAL NUMBER, {self.serial}", "101": f"SOFTWARE VERSION, {self.version}",
            "102": f"MODEL, {self.model}", "104": f"MODE, ({self.mode})",
            "200": f"TOOL CHANGES, {self.tool_changes}", "201": f"USING TOOL, {self.tool}",
            "300": f"P.O. TIME, {self._hms(self.power_on + self.clock() - self._t0, 5)}",
            "301": f"C.S. TIME, {self._hms(self.cycle_time, 5)}",
            "303": f"LAST CYCLE, {self._hms(self.last_cycle, 3)}", "304": f"PREV CYCLE, {self._hms(self.prev_cycle, 3)}",
            "402": f"M30 #1, {self.m30[0]}", "403": f"M30 #2, {self.m30[1]}",
            "500": "STATUS, BUSY" if self.status == "BUSY" else
                   f"PROGRAM, {self.program}, {self.status}, PARTS, {self.parts}",
        }
        return table.get(q, "UNKNOWN")

    def feed_bytes(self, data: bytes) -> bytes:
        """Process received bytes; each request line gets one framed answer (the first one may be lost)."""
        out = b""
        for b in data:
            if b in (0x0A, 0x0D):
                if not self._rx:
                    continue
                line = self._rx.decode("ascii", "replace")
                self._rx.clear()
                self.commands += 1
                if self.first_command_lost:
                    self.first_command_lost = False
                    continue
                out += b"\x02" + self.answer(line).encode("ascii") + b"\x17\r\n>"
            elif len(self._rx) < 255:
                self._rx.append(b)
        return out
