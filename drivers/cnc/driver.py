"""CncDriver: GRBL 1.1 and Haas Q-command machines over a serial line or TCP, with their machine state."""
from __future__ import annotations

import logging
import time
from typing import Any, Callable

from edged.driver import DeviceSpec, Driver
from edged.errors import DeviceUnavailable, ReadFailed, WriteFailed
from edged.machine_state import MachineTracker
from edged.schema import Section
from edged.tag import DataType, Quality, Reading, Tag
from edged.transport.stream import StreamSettings, open_stream, parse_tcp_url

from . import grbl, haas
from .conversation import Conversation, GrblConversation, HaasConversation, RequestRefused
from .stream_job import GcodeStreamer

log = logging.getLogger("edged.drivers.cnc")

DIALECTS = ("grbl", "haas")
# dialect -> (baudrate, bytesize, parity, stopbits, xonxoff): GRBL's fixed 115200 8N1; a typical Haas port
LINE_DEFAULTS = {"grbl": (115200, 8, "N", 1, False), "haas": (9600, 7, "E", 2, True)}
COMMON_FIELDS: dict[str, DataType] = {
    "machine.state": DataType.STRING, "machine.parts": DataType.INT64, "machine.alarm": DataType.STRING,
    "machine.alarm_code": DataType.STRING,
}
STREAM_FIELDS: dict[str, DataType] = {
    "stream.state": DataType.STRING, "stream.lines": DataType.INT64, "stream.acked": DataType.INT64,
    "stream.total": DataType.INT64, "stream.progress": DataType.FLOAT64, "stream.error": DataType.STRING,
}


def _compatible(natural: DataType, given: DataType) -> bool:
    if given is natural:
        return True
    if natural.is_integer:
        return given.is_numeric
    if natural.is_float:
        return given.is_float
    return False


class CncAddress:
    """A parsed tag address: a named field of the dialect (``status.state``, ``q500.parts``, ``macro:5041``...)."""

    __slots__ = ("field", "arg")

    def __init__(self, field: str, arg: int | None = None) -> None:
        self.field = field
        self.arg = arg

    def __repr__(self) -> str:
        return self.field if self.arg is None else f"{self.field}{self.arg}"


def known_fields(dialect: str) -> list[str]:
    """Every field name a dialect offers (for error messages and the README)."""
    if dialect == "grbl":
        names = list(grbl.FIELDS) + list(grbl.COMMANDS) + ["cmd.stream", "setting:N"] + list(STREAM_FIELDS)
    else:
        names = list(haas.FIELDS) + ["macro:N"]
    return names + list(COMMON_FIELDS)


def field_type(dialect: str, name: str) -> DataType | None:
    """The natural type of a field, None when the dialect has no such field."""
    if name in COMMON_FIELDS:
        return COMMON_FIELDS[name]
    if dialect == "grbl":
        if name in grbl.FIELDS:
            return grbl.FIELDS[name][0]
        if name in grbl.COMMANDS:
            return DataType.BOOL
        if name == "cmd.stream":
            return DataType.STRING
        return STREAM_FIELDS.get(name)
    return haas.FIELDS[name][0] if name in haas.FIELDS else None


class CncDriver(Driver):
    """One CNC controller: polls its status (and the fields the tags name), tracks its machine state."""

    kind = "cnc"
    capabilities = frozenset({"poll", "write", "read_once"})

    def __init__(self, spec: DeviceSpec, tags: list[Tag], dialect: str, settings: StreamSettings,
                 allow_reset: bool = False, stream_dir: str | None = None) -> None:
        super().__init__(spec, tags)
        self.dialect = dialect
        self.settings = settings
        self.allow_reset = allow_reset
        self.machine = MachineTracker(spec.name)
        self.conv: Conversation | None = None
        self._groups: dict[str, list[Tag]] = {}
        for t in tags:
            self._groups.setdefault(t.scan, []).append(t)
        # the machine state comes with the fastest group's poll (always, whatever its tags are)
        self.state_group = min(self._groups, key=lambda g: (spec.intervals.get(g, 1.0), g)) if self._groups else ""
        self._connected_once = False
        self._last_grbl_state = ""
        self._haas: dict[tuple[int, int | None], haas.Answer] = {}
        self._haas_full500: haas.Answer | None = None
        self.streamer = GcodeStreamer(stream_dir) if dialect == "grbl" else None

    # -- load time --------------------------------------------------------------
    @classmethod
    def parse_tag(cls, section: Section, dtype: DataType | None) -> tuple[Any, DataType] | None:
        """Read ``address``: a field of the device's dialect (checked against the dialect in from_config)."""
        address = section.get_str("address")
        if address is None:
            return None
        arg = None
        name = address
        for prefix in (grbl.SETTING_PREFIX, haas.MACRO_PREFIX):
            if address.startswith(prefix):
                num = address[len(prefix):]
                if not (num.isascii() and num.isdigit()) or int(num) > haas.MACRO_MAX:
                    section.error("address", f"expected {prefix}N with N a number 0 to {haas.MACRO_MAX}, "
                                             f"found {address!r}")
                    return None
                name, arg = prefix, int(num)
        natural = None
        for dialect in DIALECTS:
            natural = natural or field_type(dialect, name)
        if name == grbl.SETTING_PREFIX or name == haas.MACRO_PREFIX:
            natural = DataType.FLOAT64
        if natural is None:
            known = sorted(set(known_fields("grbl")) | set(known_fields("haas")))
            section.error("address", f"expected a field of the dialect ({', '.join(known)}), found {address!r}")
            return None
        if dtype is not None and not _compatible(natural, dtype):
            section.error("type", f"expected {natural.value} for {address!r} (or a compatible type), "
                                  f"found {dtype.value!r}")
            return None
        return CncAddress(name, arg), dtype or natural

    @classmethod
    def from_config(cls, spec: DeviceSpec, section: Section, tags: list[Tag]) -> "CncDriver | None":
        """Read the device keys (dialect, port and line settings, allow_reset, stream_dir); no I/O."""
        dialect = section.get_str("dialect", choices=list(DIALECTS))
        port = section.get_str("port")
        d = LINE_DEFAULTS.get(dialect or "grbl", LINE_DEFAULTS["grbl"])
        baud = section.get_int("baudrate", d[0], min=50, max=4_000_000)
        bytesize = section.get_int("bytesize", d[1], min=5, max=8)
        parity = section.get_str("parity", d[2], choices=["N", "E", "O", "M", "S"])
        stopbits = section.get_int("stopbits", d[3], min=1, max=2)
        xonxoff = section.get_bool("xonxoff", d[4])
        rtscts = section.get_bool("rtscts", False)
        dtr = section.get_bool("dtr", None)
        rts = section.get_bool("rts", None)
        allow_reset = section.get_bool("allow_reset", False)
        stream_dir = section.get_str("stream_dir", None)
        if port is not None and port.startswith("tcp://"):
            try:
                parse_tcp_url(port)
            except ValueError as exc:
                section.error("port", str(exc))
                port = None
        if dialect is None or port is None:
            return None
        ok = True
        allowed = set(known_fields(dialect))
        for t in tags:
            name = t.addr.field
            shown = name + "N" if t.addr.arg is not None else name
            if shown not in allowed:
                section.error(f"tag.{t.name}.address", f"expected a field of dialect {dialect!r} "
                                                       f"({', '.join(known_fields(dialect))}), found {t.address!r}")
                ok = False
                continue
            is_cmd = name in grbl.COMMANDS or name == "cmd.stream"
            if t.writable and not is_cmd:
                section.error(f"tag.{t.name}.access", f"expected \"read\": {t.address!r} is not writable (only "
                                                      f"{', '.join(sorted(grbl.COMMANDS))} and cmd.stream are), "
                                                      f"found \"write\"")
                ok = False
            if name == "cmd.reset" and t.writable and not allow_reset:
                section.error("allow_reset", f"expected allow_reset = true for the writable tag {t.name!r} "
                                             f"(cmd.reset sends a soft reset, which stops the machine), found "
                                             f"{'false' if section.has('allow_reset') else 'no allow_reset'}")
                ok = False
            if name == "cmd.stream" and t.writable and stream_dir is None:
                section.error("stream_dir", f"expected a folder of G-code files for the writable tag {t.name!r} "
                                            f"(cmd.stream streams a file from it), found none")
                ok = False
        if not ok:
            return None
        settings = StreamSettings(port, baudrate=baud or d[0], bytesize=bytesize or d[1], parity=parity or d[2],
                                  stopbits=stopbits or d[3], xonxoff=bool(xonxoff), rtscts=bool(rtscts),
                                  dtr=dtr, rts=rts)
        return cls(spec, tags, dialect, settings, bool(allow_reset), stream_dir)

    @classmethod
    def validate_cell(cls, drivers: list[Driver], report: Callable[[str, str], None]) -> None:
        """A CNC line carries one controller: two devices on one port are an error."""
        seen: dict[str, str] = {}
        for d in drivers:
            assert isinstance(d, CncDriver)
            url = d.settings.url
            if url in seen:
                report(f"device.{d.spec.name}.port", f"expected a port of its own (GRBL and Haas lines carry no "
                                                     f"device address), found {url!r}, also used by device "
                                                     f"{seen[url]}")
            else:
                seen[url] = d.spec.name

    def plan(self) -> dict[str, list[str]]:
        """Per scan group, the requests one poll sends."""
        return {g: self._requests(g) for g in self._groups}

    def _requests(self, group: str) -> list[str]:
        if self.dialect == "grbl":
            needs = self._grbl_needs(group)
            out = ["? (status report)"] if "status" in needs else []
            if "build" in needs:
                out.append("$I (once per connection)")
            if "settings" in needs:
                out.append("$$ (when idle)")
            return out
        return [f"?Q{n}" + (f" {a}" if a is not None else "") for n, a in self._haas_needs(group)]

    # -- run time -----------------------------------------------------------
    async def connect(self) -> None:
        """Open the line and check that a controller of the dialect answers."""
        if self.conv is not None:
            await self.close()
        try:
            stream = await open_stream(self.settings, self.spec.timeout_s)
        except (OSError, TimeoutError, ValueError) as exc:
            raise DeviceUnavailable(f"device {self.spec.name}: cannot open {self.settings.describe()}: {exc}") from None
        conv_cls = GrblConversation if self.dialect == "grbl" else HaasConversation
        self.conv = conv_cls(self.spec.name, stream, self.stats, self.spec.timeout_s, self._event)
        self.conv.start()
        try:
            if isinstance(self.conv, GrblConversation):
                await self._grbl_status()
            else:
                ans = await self.conv.ask(500, first=True)
                self._haas_take(ans)
        except (ReadFailed, RequestRefused) as exc:
            await self.close()
            raise DeviceUnavailable(f"device {self.spec.name}: no {self.dialect} controller answers on "
                                    f"{self.settings.describe()}: {exc}") from None
        except DeviceUnavailable:
            await self.close()
            raise
        if self._connected_once:
            self.stats.reconnects += 1
        self._connected_once = True

    def _event(self, kind: str, value: Any) -> None:
        """Unsolicited GRBL events: alarms go to the machine state, resets are logged."""
        if kind == "alarm":
            self.machine.alarm(value, grbl.alarm_text(value))
            self.machine.set_state("alarm")
            self.stats.error("alarm")
            log.warning("device %s: ALARM:%s (%s)", self.spec.name, value, grbl.alarm_text(value))
        elif kind == "error":
            self.stats.error("refused")
        elif kind == "reset":
            log.warning("device %s: the controller reset (%s); continuing", self.spec.name, value)
            if self.streamer is not None:
                self.streamer.abort("controller reset")

    async def read(self, group: str) -> list[Reading]:
        """Poll what the group's tags need and return their values."""
        conv = self.conv
        if conv is None or conv.lost is not None:
            raise DeviceUnavailable(f"device {self.spec.name}: not connected")
        if isinstance(conv, GrblConversation):
            return await self._grbl_read(group, conv)
        return await self._haas_read(group, conv)  # type: ignore[arg-type]

    # GRBL ---------------------------------------------------------------------------
    def _grbl_needs(self, group: str) -> set[str]:
        needs = set()
        for t in self._groups.get(group, ()):
            f = t.addr.field
            if f in grbl.FIELDS:
                needs.add(grbl.FIELDS[f][2])
            elif f == grbl.SETTING_PREFIX:
                needs.add("settings")
            elif f in grbl.COMMANDS or f.startswith("machine."):
                needs.add("status")
        if group == self.state_group:
            needs.add("status")
        needs.discard("")
        return needs

    async def _grbl_status(self) -> grbl.StatusReport:
        conv = self.conv
        assert isinstance(conv, GrblConversation)
        rep = await conv.status()
        state = grbl.MACHINE_STATE[rep.state]
        if self._last_grbl_state == "Run" and rep.state == "Idle":
            self.machine.add_parts(1)  # a cycle ran to its end
        self._last_grbl_state = rep.state
        self.machine.set_state(state)
        return rep

    async def _grbl_read(self, group: str, conv: GrblConversation) -> list[Reading]:
        needs = self._grbl_needs(group)
        m = conv.model
        streaming = self.streamer is not None and self.streamer.active  # command lines would queue behind it
        if "status" in needs:
            await self._grbl_status()
        try:
            if "build" in needs and m.version is None and not streaming:
                self._grbl_take(await conv.command("$I"))
            # $$ is answered only when idle or in alarm (error:8 otherwise): settings keep their last values
            if "settings" in needs and not streaming and m.status is not None and m.status.state in ("Idle", "Alarm"):
                self._grbl_take(await conv.command("$$"))
        except RequestRefused as exc:
            raise ReadFailed(f"device {self.spec.name}: {exc}", kind="refused") from None
        now = time.time_ns()
        out = []
        for t in self._groups.get(group, ()):
            out.append(self._reading(t, self._grbl_value(t, m), now))
        self.stats.values += len(out)
        return out

    def _grbl_take(self, lines: list[grbl.Line]) -> None:
        m = self.conv.model  # type: ignore[union-attr]
        for line in lines:
            if line.kind == "bracket" and line.key == "VER":
                m.take_version(line.value)
            elif line.kind == "bracket" and line.key == "OPT":
                m.take_options(line.value)
            elif line.kind == "setting":
                m.settings[int(line.key)] = float(line.value)

    def _grbl_value(self, t: Tag, m: grbl.GrblModel) -> Any:
        f = t.addr.field
        if f in grbl.FIELDS:
            return grbl.FIELDS[f][1](m)
        if f == grbl.SETTING_PREFIX:
            return m.settings.get(t.addr.arg)
        if f in grbl.COMMANDS:
            if m.status is None:
                return None
            return {"cmd.feed_hold": m.status.state == "Hold", "cmd.cycle_start": m.status.state == "Run",
                    "cmd.reset": False}[f]
        if f == "cmd.stream" or f in STREAM_FIELDS:
            return self.streamer.value(f) if self.streamer is not None else None
        return self._machine_value(f)

    def _machine_value(self, f: str) -> Any:
        mt = self.machine
        return {"machine.state": mt.state, "machine.parts": mt.parts, "machine.alarm": mt.alarm_text,
                "machine.alarm_code": mt.alarm_code}.get(f)

    # Haas ---------------------------------------------------------------------------
    def _haas_needs(self, group: str) -> list[tuple[int, int | None]]:
        needs: list[tuple[int, int | None]] = []
        if group == self.state_group:
            needs.append((500, None))
        for t in self._groups.get(group, ()):
            f = t.addr.field
            key = (600, t.addr.arg) if f == haas.MACRO_PREFIX else (haas.FIELDS[f][1], None) \
                if f in haas.FIELDS else (500, None)
            if key not in needs:
                needs.append(key)
        return needs

    def _haas_take(self, ans: haas.Answer) -> None:
        key = (ans.number, ans.arg)
        self._haas[key] = ans
        if ans.number != 500:
            return
        state = haas.machine_state(ans)
        if ans.values.get("status") != "BUSY":
            self._haas_full500 = ans
            self.machine.count_parts(ans.values["parts"])
        if state == "alarm" and self.machine.state != "alarm":
            program = ans.values.get("program", "")
            self.machine.alarm("ALARM ON", f"ALARM ON (program {program})")
            self.stats.error("alarm")
        self.machine.set_state(state)

    async def _haas_read(self, group: str, conv: HaasConversation) -> list[Reading]:
        refused: set[tuple[int, int | None]] = set()
        for number, arg in self._haas_needs(group):
            try:
                self._haas_take(await conv.ask(number, arg))
            except RequestRefused as exc:
                refused.add((number, arg))
                self.stats.error("refused")
                log.debug("device %s: ?Q%d refused: %s", self.spec.name, number, exc)
        now = time.time_ns()
        out = []
        for t in self._groups.get(group, ()):
            f = t.addr.field
            if f.startswith("machine."):
                out.append(self._reading(t, self._machine_value(f), now))
                continue
            key = (600, t.addr.arg) if f == haas.MACRO_PREFIX else (haas.FIELDS[f][1], None)
            ans = self._haas.get(key)
            if key in refused or ans is None:
                out.append(Reading(t, None, Quality.BAD, now))
                continue
            vkey = "value" if f == haas.MACRO_PREFIX else haas.FIELDS[f][2]
            if key[0] == 500 and vkey in ("program", "parts") and vkey not in ans.values:
                # STATUS, BUSY: a running program; program and parts are the last ones the machine sent
                full = self._haas_full500
                if full is None:
                    out.append(Reading(t, None, Quality.BAD, now))
                else:
                    out.append(Reading(t, t.to_engineering(self._coerce(t, full.values[vkey])), Quality.UNCERTAIN,
                                       now))
                continue
            out.append(self._reading(t, ans.values.get(vkey), now))
        self.stats.values += len(out)
        return out

    # common ---------------------------------------------------------------------------
    def _coerce(self, t: Tag, v: Any) -> Any:
        if t.dtype.is_integer and isinstance(v, float):
            return round(v)
        if t.dtype.is_float and isinstance(v, int) and not isinstance(v, bool):
            return float(v)
        return v

    def _reading(self, t: Tag, v: Any, now: int) -> Reading:
        if v is None:
            return Reading(t, None, Quality.BAD, now)
        return Reading(t, t.to_engineering(self._coerce(t, v)), Quality.GOOD, now)

    async def write(self, tag: Tag, value: Any) -> None:
        """GRBL commands:

        ``cmd.feed_hold``/``cmd.cycle_start``/``cmd.reset`` (true sends the real-time character), ``cmd.stream`` (a
        file name in ``stream_dir``: stream it; ``""`` stops the stream).
        """
        conv = self.conv
        if not isinstance(conv, GrblConversation) or conv.lost is not None:
            raise DeviceUnavailable(f"device {self.spec.name}: not connected")
        f = tag.addr.field
        if f in grbl.COMMANDS:
            if value is not True:
                raise WriteFailed(f"{tag.key}: write true to send the command, found {value!r}", kind="refused")
            if f == "cmd.reset" and not self.allow_reset:  # also checked at load
                raise WriteFailed(f"{tag.key}: soft reset needs allow_reset = true", kind="refused")
            conv.realtime(grbl.COMMANDS[f])
            self.stats.writes += 1
            log.info("device %s: sent %s", self.spec.name, f)
            return
        if f == "cmd.stream" and self.streamer is not None:
            try:
                self.streamer.start(conv, str(value))
            except ValueError as exc:
                raise WriteFailed(f"{tag.key}: {exc}", kind="refused") from None
            self.stats.writes += 1
            return
        raise WriteFailed(f"{tag.key}: not writable", kind="refused")

    async def close(self) -> None:
        """Close the line; the machine is offline until the next connect."""
        conv, self.conv = self.conv, None
        if self.streamer is not None:
            self.streamer.abort("connection closed")
        if conv is not None:
            await conv.close()
        self.machine.set_state("offline")
        self._last_grbl_state = ""

    def status(self) -> dict[str, Any]:
        """Dialect, line and what the controller says about itself (``info``), late and malformed answers, and

        the machine's normalized state.
        """
        info: dict[str, Any] = {"dialect": self.dialect, "line": self.settings.describe()}
        conv = self.conv
        if isinstance(conv, GrblConversation) and conv.model.version:
            info["version"] = conv.model.version
        for key, (number, vkey) in {"model": (102, "value"), "version": (101, "value"),
                                    "serial": (100, "value")}.items():
            ans = self._haas.get((number, None))
            if ans is not None:
                info[key] = ans.values.get(vkey)
        out: dict[str, Any] = {"info": info, "machine": self.machine.snapshot()}
        if conv is not None:
            out.update(late_answers=conv.late, malformed_lines=conv.malformed)
        return out
