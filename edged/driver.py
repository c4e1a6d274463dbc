"""The Driver interface every protocol implements, its statistics, its emulator, and the entry-point registry."""
from __future__ import annotations

import abc
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Awaitable, Callable, ClassVar

from edged.schema import Section
from edged.tag import DataType, Reading, Tag

ENTRY_POINT_GROUP = "edged.drivers"

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
    """Serves emulated devices of one driver kind on loopback, for the demo, `simulate` and tests."""

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


class Driver(abc.ABC):
    """One device connection: built from config without I/O, then connect/read/write/close.

    Polled drivers (Modbus, S7) read a scan group through a request plan computed at load.
    Push drivers (OPC UA subscriptions, serial CNC unsolicited lines) deliver values from
    ``run_push``. One driver instance serves one device; drivers sharing a line serialize on it.
    """

    kind: ClassVar[str] = ""

    def __init__(self, spec: DeviceSpec, tags: list[Tag]) -> None:
        self.spec = spec
        self.tags = tags
        self.stats = DriverStats()

    # -- load time, no I/O --------------------------------------------------
    @classmethod
    @abc.abstractmethod
    def parse_tag(cls, section: Section, dtype: DataType | None) -> tuple[Any, DataType] | None:
        """Read the driver's keys of one tag table (``address`` and any others).

        ``dtype`` is the tag's ``type`` key or None when absent. Returns the parsed address
        and the data type, or None after recording issues on ``section``.
        """

    @classmethod
    @abc.abstractmethod
    def from_config(cls, spec: DeviceSpec, section: Section, tags: list[Tag]) -> "Driver":
        """Read the driver's keys of the device table and compute request plans, without I/O."""

    def plan(self) -> dict[str, list[str]]:
        """Human-readable request plan per scan group (``edged check --plan``)."""
        return {}

    def polled_groups(self) -> list[str]:
        """Scan groups this driver reads by polling (push-only tags are left out)."""
        return sorted({t.scan for t in self.tags})

    # -- run time -----------------------------------------------------------
    @abc.abstractmethod
    async def connect(self) -> None:
        """Open the connection; raise DeviceUnavailable when the device cannot be reached."""

    @abc.abstractmethod
    async def read(self, group: str) -> list[Reading]:
        """Read every tag of a scan group once.

        Raise DeviceUnavailable when the connection is lost or timed out (the driver has
        dropped it, so no stale response can be taken for a later request); raise ReadFailed
        when the whole group failed but the connection is fine. Partial failures return
        readings with bad quality for the tags that failed.
        """

    @abc.abstractmethod
    async def write(self, tag: Tag, value: Any) -> None:
        """Write an engineering value to a writable tag (already range-checked by the caller)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Close the connection; safe to call when not connected."""

    async def run_push(self, deliver: Deliver) -> None:
        """For push drivers: deliver values until cancelled or the connection is lost.

        Raise DeviceUnavailable on connection loss. Polled drivers return at once.
        """
        return None

    # -- emulation ----------------------------------------------------------
    @classmethod
    def emulator(cls, drivers: list["Driver"]) -> Emulator:
        """An emulator serving the given devices of this driver kind at their configured endpoints."""
        raise NotImplementedError(f"driver {cls.kind!r} has no emulator")


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


AsyncWrite = Callable[[Tag, Any], Awaitable[None]]
