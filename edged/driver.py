"""The Driver interface every protocol implements, its statistics, its emulator, and the entry-point registry."""
from __future__ import annotations

import abc
import enum
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Callable, ClassVar

from edged.errors import WriteFailed
from edged.schema import Section
from edged.tag import DataType, Reading, Tag

ENTRY_POINT_GROUP = "edged.drivers"
EMULATOR_GROUP = "edged.emulators"

Deliver = Callable[[list[Reading]], None]


@dataclass(slots=True)
class DeviceSpec:
    """Driver-independent settings of one device (the ``device.<name>`` table)."""

    name: str
    driver: str
    timeout_s: float = 1.0
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    description: str = ""
    # interval of every scan group of this device's tags (group name -> seconds), set before from_config
    intervals: dict[str, float] = field(default_factory=dict)


@dataclass(slots=True)
class DriverStats:
    """Counters a driver keeps; metrics read them at scrape time.

    ``reconnects`` counts successful connects after the first one (the driver counts it in
    ``connect``); ``values`` counts values delivered; ``errors`` counts by kind.
    """

    requests: int = 0
    values: int = 0
    timeouts: int = 0
    reconnects: int = 0
    writes: int = 0
    writes_failed: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    # state of each part of a device that can fail on its own (a unit behind a Modbus gateway, an OPC UA
    # subscription): label -> "up" | "silent" | "backoff" | "down"; exported per part by the metrics
    unit_state: dict[str, str] = field(default_factory=dict)

    def error(self, kind: str) -> None:
        """Count one error of a kind (``timeout``, ``exception``, ``malformed``, ``connection``...)."""
        self.errors[kind] = self.errors.get(kind, 0) + 1


class Emulator(abc.ABC):
    """Serves emulated devices of one driver kind on loopback, for the demo, `simulate` and tests.

    Registered on its own (entry point group ``edged.emulators``, from the ``EMULATOR_CLASS`` line of a
    driver's ``__init__.py``), so the production driver never imports its emulator.
    """

    def __init__(self, drivers: list["Driver"]) -> None:
        self.drivers = drivers

    @abc.abstractmethod
    async def start(self) -> None:
        """Start serving (listening sockets, pty, ...)."""

    @abc.abstractmethod
    async def stop(self) -> None:
        """Stop serving and release every resource."""

    @abc.abstractmethod
    def set_value(self, tag: Tag, value: Any) -> None:
        """Set the engineering value the emulated device reports for a tag."""

    @abc.abstractmethod
    def get_value(self, tag: Tag) -> Any:
        """The engineering value the emulated device holds for a tag (e.g. after a write)."""

    # Fault kinds an emulator may support (see docs/simulate.md): stop, start, latency (ms), drop (share
    # 0..1), exception (code), malformed, silence-unit (unit id), clear, namespace-restart, unplug, replug,
    # plc-stop, plc-run.
    faults: ClassVar[frozenset[str]] = frozenset()

    async def inject(self, device: str, fault: str, arg: str = "") -> None:
        """Inject a fault into one emulated device (``clear`` undoes latency, drop, exception, malformed, silence)."""
        raise FaultUnsupported(f"the {type(self).__name__} cannot inject {fault!r} (it supports: "
                               f"{', '.join(sorted(self.faults)) or 'none'})")

    def writes_seen(self) -> dict[str, int]:
        """Writes each emulated device received (device name -> count), to prove what a test did not write."""
        return {}


class FaultUnsupported(Exception):
    """An emulator was asked for a fault it cannot play."""


class GroupMode(str, enum.Enum):
    """How a scan group's values reach edged: polled by the runtime's ScanGroup, or pushed by the driver."""

    POLL = "poll"
    PUSH = "push"


@dataclass(frozen=True, slots=True)
class TagInfo:
    """What a device says about a tag at connect (OPC UA DataType, array dimensions, unit, ...)."""

    dtype: DataType
    dims: tuple[int, ...] = ()
    unit: str = ""
    description: str = ""


class PushSink:
    """What a push driver delivers into: readings, and keep-alives of groups that had nothing to say.

    The DeviceRunner marks a push group's good values uncertain (stale) when neither readings nor a
    keep-alive arrived for it within ``Driver.stale_after_s(group)``. Calling the sink itself is
    ``deliver``.
    """

    __slots__ = ("_deliver", "seen", "_clock")

    def __init__(self, deliver: Deliver, clock: Callable[[], float]) -> None:
        self._deliver = deliver
        self._clock = clock
        self.seen: dict[str, float] = {}  # group -> clock time of its last delivery or keep-alive

    def deliver(self, readings: list[Reading]) -> None:
        """Hand readings to the runtime (the groups they belong to count as alive)."""
        if readings:
            now = self._clock()
            seen = self.seen
            for r in readings:
                seen[r.tag.scan] = now
        self._deliver(readings)

    __call__ = deliver

    def alive(self, group: str) -> None:
        """Say that a group's source is alive although no value changed (e.g. an OPC UA keep-alive)."""
        self.seen[group] = self._clock()


class Driver(abc.ABC):
    """One device connection: built from config without I/O, then connect/read/write/close.

    The contract (see docs/architecture.md, "Drivers"):

    - Load time, no I/O: ``parse_tag`` per tag table, ``from_config`` per device (the request plan is
      computed here; ``spec.intervals`` gives every scan group's interval), ``validate_cell`` across
      all devices of the kind (e.g. two devices on one serial port with different settings).
    - ``group_modes()`` says for each scan group whether the runtime polls it (``read(group)`` at
      absolute deadlines) or the driver pushes it (``run_push(sink)``, with keep-alives and
      ``stale_after_s``). A driver may do both for different groups.
    - ``capabilities`` declares what the driver can do (``read_once``: ``read(group)`` also works for a
      push group, as a one-shot read for ``edged read``).
    - ``tag_info`` holds what the device told about tags at connect (types, dimensions, units).
    - Blocking client libraries run on a ``edged.worker.BlockingWorker`` owned by the driver; serial
      and line-protocol drivers use ``edged.transport``.
    - Errors: ``DeviceUnavailable`` (connection lost or timed out: the runner reconnects with backoff),
      ``ReadFailed`` (one group failed, connection fine), ``WriteFailed`` (a write did not happen).
    """

    kind: ClassVar[str] = ""
    capabilities: ClassVar[frozenset[str]] = frozenset({"poll", "write"})

    def __init__(self, spec: DeviceSpec, tags: list[Tag]) -> None:
        self.spec = spec
        self.tags = tags
        self.stats = DriverStats()
        self.tag_info: dict[str, TagInfo] = {}  # tag name -> what the device said at connect

    # -- load time, no I/O --------------------------------------------------
    @classmethod
    @abc.abstractmethod
    def parse_tag(cls, section: Section, dtype: DataType | None) -> tuple[Any, DataType] | None:
        """Read the driver's keys of one tag table (``address`` and any others).

        ``dtype`` is the tag's ``type`` key or None when absent. Returns the parsed address and the
        data type (``DataType.ANY`` when the device will say it at connect), optionally with array
        dimensions as a third item, or None after recording issues on ``section``.
        """

    @classmethod
    @abc.abstractmethod
    def from_config(cls, spec: DeviceSpec, section: Section, tags: list[Tag]) -> "Driver | None":
        """Read the driver's keys of the device table and compute request plans, without I/O."""

    @classmethod
    def validate_cell(cls, drivers: list["Driver"], report: Callable[[str, str], None]) -> None:
        """Check the devices of this kind together (no I/O); ``report(dotted_path, message)`` records an issue."""
        return None

    def plan(self) -> dict[str, list[str]]:
        """Human-readable request plan per scan group (``edged check --plan``)."""
        return {}

    def group_modes(self) -> dict[str, GroupMode]:
        """Every scan group of this device and how it is acquired (default: all polled)."""
        return {g: GroupMode.POLL for g in sorted({t.scan for t in self.tags})}

    def polled_groups(self) -> list[str]:
        """Scan groups the runtime polls."""
        return [g for g, m in self.group_modes().items() if m is GroupMode.POLL]

    def pushed_groups(self) -> list[str]:
        """Scan groups the driver pushes from ``run_push``."""
        return [g for g, m in self.group_modes().items() if m is GroupMode.PUSH]

    def stale_after_s(self, group: str) -> float:
        """How long a pushed group may stay silent (no value, no keep-alive) before its values are stale."""
        return max(3 * self.spec.intervals.get(group, 1.0), 2 * self.spec.timeout_s, 1.0)

    # -- run time -----------------------------------------------------------
    @abc.abstractmethod
    async def connect(self) -> None:
        """Open the connection; raise DeviceUnavailable when the device cannot be reached."""

    async def read(self, group: str) -> list[Reading]:
        """Read every tag of a polled scan group once.

        Raise DeviceUnavailable when the connection is lost or timed out (the driver has
        dropped it, so no stale response can be taken for a later request); raise ReadFailed
        when the whole group failed but the connection is fine. Partial failures return
        readings with bad quality for the tags that failed.
        """
        raise NotImplementedError(f"driver {self.kind!r} does not poll")

    async def run_push(self, sink: PushSink) -> None:
        """For pushed groups: deliver readings into ``sink`` until cancelled or the connection is lost.

        Raise DeviceUnavailable on connection loss. Returning means the stream ended, which the runner
        treats as a lost connection. Only called when ``pushed_groups()`` is not empty.
        """
        raise NotImplementedError(f"driver {self.kind!r} does not push")

    async def write(self, tag: Tag, value: Any) -> None:
        """Write an engineering value to a writable tag (already range-checked by the caller).

        Raise WriteFailed when the device refused it or the value cannot be sent, DeviceUnavailable
        when the connection is lost.
        """
        raise WriteFailed(f"{tag.key}: driver {self.kind!r} cannot write", kind="refused")

    @abc.abstractmethod
    async def close(self) -> None:
        """Close the connection; safe to call when not connected."""

    def status(self) -> dict[str, Any]:
        """Driver-specific facts for the status endpoint and ``edged status`` (negotiated PDU, server state...)."""
        return {}


def available_drivers() -> dict[str, metadata.EntryPoint]:
    """The driver entry points installed, by name (nothing is imported)."""
    return {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}


_loaded: dict[str, type[Driver]] = {}


def load_driver(name: str) -> type[Driver]:
    """Import and return the driver class registered under a name."""
    if name not in _loaded:
        eps = available_drivers()
        if name not in eps:
            raise KeyError(name)
        cls = eps[name].load()
        if not (isinstance(cls, type) and issubclass(cls, Driver)):
            raise TypeError(f"entry point {name!r} is not a Driver subclass")
        _loaded[name] = cls
    return _loaded[name]


_emulators: dict[str, type[Emulator]] = {}


def load_emulator(name: str) -> type[Emulator]:
    """Import and return the emulator class registered for a driver kind (KeyError when it has none)."""
    if name not in _emulators:
        eps = {ep.name: ep for ep in metadata.entry_points(group=EMULATOR_GROUP)}
        if name not in eps:
            raise KeyError(name)
        cls = eps[name].load()
        if not (isinstance(cls, type) and issubclass(cls, Emulator)):
            raise TypeError(f"emulator entry point {name!r} is not an Emulator subclass")
        _emulators[name] = cls
    return _emulators[name]


def emulator_for(drivers: list[Driver]) -> Emulator:
    """An emulator serving the given devices (all of one driver kind) at their configured endpoints."""
    kinds = {d.kind for d in drivers}
    if len(kinds) != 1:
        raise ValueError(f"emulator_for needs devices of one driver kind, found {sorted(kinds)}")
    kind = kinds.pop()
    try:
        cls = load_emulator(kind)
    except KeyError:
        raise NotImplementedError(f"driver {kind!r} has no emulator") from None
    return cls(drivers)
