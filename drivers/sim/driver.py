"""SimDriver: a device without I/O whose tags are generated signals; polled, or pushed like a subscription."""
from __future__ import annotations

import asyncio
import logging
import time
import zlib
from typing import Any

from edged.driver import DeviceSpec, Driver, Emulator, GroupMode, PushSink
from edged.schema import Section
from edged.tag import DataType, Quality, Reading, Tag

from .signals import AddressError, Signal, parse_address

log = logging.getLogger("edged.drivers.sim")


class SimDriver(Driver):
    """Generates tag values on every read, or pushes changes every scan interval (see drivers/sim/README.md)."""

    kind = "sim"
    capabilities = frozenset({"poll", "push", "write", "read_once"})

    def __init__(self, spec: DeviceSpec, tags: list[Tag], seed: int = 0, mode: str = "poll") -> None:
        super().__init__(spec, tags)
        self.seed = seed
        self.mode = GroupMode(mode)
        self.paused = False  # push mode: deliver nothing, not even keep-alives (a subscription that stopped)
        self.end_stream = False  # push mode: end the stream at the next interval (a server closing it)
        self.written: dict[str, Any] = {}
        self.last: dict[str, Any] = {}
        self.connected = False
        self._announced = False
        self._groups: dict[str, list[Tag]] = {}
        for tag in tags:
            self._groups.setdefault(tag.scan, []).append(tag)
        for tag in tags:
            tag.addr.start(self._tag_seed(tag))

    def _tag_seed(self, tag: Tag) -> int:
        return self.seed ^ zlib.crc32(tag.key.encode())

    @classmethod
    def parse_tag(cls, section: Section, dtype: DataType | None) -> tuple[Any, DataType] | None:
        """Read ``address`` (a signal) and check it against the tag's type."""
        address = section.get_str("address")
        if address is None:
            return None
        try:
            signal = parse_address(address, dtype)
        except AddressError as exc:
            section.error("address", str(exc))
            return None
        return signal, signal.dtype

    @classmethod
    def from_config(cls, spec: DeviceSpec, section: Section, tags: list[Tag]) -> "SimDriver":
        """Read the device keys (``seed`` for random signals); no I/O."""
        seed = section.get_int("seed", 0, min=0, max=2**63 - 1)
        mode = section.get_str("mode", "poll", choices=["poll", "push"]) or "poll"
        return cls(spec, tags, seed or 0, mode)

    def group_modes(self) -> dict[str, GroupMode]:
        """Every group polled, or every group pushed (``mode = "push"``)."""
        return {g: self.mode for g in sorted(self._groups)}

    def plan(self) -> dict[str, list[str]]:
        """One line per tag: its signal."""
        return {g: [f"{t.name}: {t.address} ({t.dtype.value})" for t in ts] for g, ts in self._groups.items()}

    async def connect(self) -> None:
        """Nothing to connect to; the first time, log where each counter starts (to tell restarts from loss)."""
        if not self._announced:
            self._announced = True
            for tag in self.tags:
                sig: Signal = tag.addr
                if sig.kind == "counter":
                    log.info("sim: %s counts from %d", tag.key, sig.count)
        self.connected = True

    async def read(self, group: str) -> list[Reading]:
        """Generate the next value of every tag of the group."""
        now_ns = time.time_ns()
        t = now_ns / 1e9
        out = []
        for tag in self._groups.get(group, ()):
            if tag.key in self.written:
                value = self.written[tag.key]
            else:
                sig: Signal = tag.addr
                raw = sig.next(t)
                if tag.dtype.is_integer and isinstance(raw, float):
                    raw = round(raw)
                value = tag.to_engineering(raw)
            self.last[tag.key] = value
            out.append(Reading(tag, value, Quality.GOOD, now_ns))
        self.stats.requests += 1
        self.stats.values += len(out)
        return out

    async def run_push(self, sink: PushSink) -> None:
        """Push mode: every scan interval, deliver the values that changed, or a keep-alive when none did."""
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(self._push_group(g, sink, loop) for g in self._groups))

    async def _push_group(self, group: str, sink: PushSink, loop: asyncio.AbstractEventLoop) -> None:
        interval = self.spec.intervals.get(group, 1.0)
        sent: dict[str, Any] = {}
        deadline = loop.time()
        while not self.end_stream:
            deadline += interval
            await asyncio.sleep(max(0.0, deadline - loop.time()))
            if self.paused:
                continue
            changed = [r for r in await self.read(group) if sent.get(r.tag.key, _UNSET) != r.value]
            for r in changed:
                sent[r.tag.key] = r.value
            if changed:
                sink.deliver(changed)
            else:
                sink.alive(group)

    async def write(self, tag: Tag, value: Any) -> None:
        """Keep the value: later reads return it."""
        self.written[tag.key] = value
        self.last[tag.key] = value
        self.stats.writes += 1

    async def close(self) -> None:
        """Nothing to close."""
        self.connected = False



_UNSET = object()


class SimEmulator(Emulator):
    """No sockets: sim devices are their own emulation. Values set here override the generated ones."""

    def __init__(self, drivers: list[Driver]) -> None:
        super().__init__(drivers)
        self.devices = {d.spec.name: d for d in drivers if isinstance(d, SimDriver)}

    async def start(self) -> None:
        """Nothing to serve."""

    async def stop(self) -> None:
        """Nothing to release."""

    def set_value(self, tag: Tag, value: Any) -> None:
        """Make the device report this value for the tag from now on."""
        d = self.devices[tag.device]
        d.written[tag.key] = value
        d.last[tag.key] = value

    def get_value(self, tag: Tag) -> Any:
        """The value last reported or written for the tag (None before the first read)."""
        return self.devices[tag.device].last.get(tag.key)
