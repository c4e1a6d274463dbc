"""Request planning: merge the tags of each (scan group, unit id, table) into as few read requests as fit."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from edged.tag import Tag

from .address import MAX_BITS, MAX_REGISTERS, ModbusAddress, Table

_TABLE_ORDER = {Table.COIL: 0, Table.DISCRETE: 1, Table.HOLDING: 2, Table.INPUT: 3}


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-device request limits: size of one request and the gap worth reading to merge two ranges."""

    max_registers: int = MAX_REGISTERS
    max_bits: int = MAX_BITS
    max_gap: int = 10
    max_gap_bits: int = 64

    def size(self, table: Table) -> int:
        """Most registers or bits one request of a table may cover."""
        return self.max_bits if table.is_bit else self.max_registers

    def gap(self, table: Table) -> int:
        """Largest gap (unused registers or bits) read to merge two ranges of a table."""
        return self.max_gap_bits if table.is_bit else self.max_gap


@dataclass(slots=True)
class Request:
    """One planned read: unit, table, first offset and count, and the tags it covers (by address)."""

    unit: int
    table: Table
    start: int
    count: int
    tags: list[Tag] = field(default_factory=list)
    program: Any = None  # the compiled codec program, attached by the driver
    nbytes: int = 0      # data bytes of the response (attached by the driver)
    frame: Any = None    # tid -> request bytes for edged's TCP client (attached by the driver)

    @property
    def end(self) -> int:
        """Last offset read."""
        return self.start + self.count - 1

    def span(self) -> str:
        """Range in protocol terms, e.g. ``hr 100..109``."""
        return f"{self.table.short} {self.start}" if self.count == 1 else f"{self.table.short} {self.start}..{self.end}"

    def describe(self) -> str:
        """The human plan line, e.g. ``unit 1 hr 100..109 (10 regs): oil_temp, pressure``."""
        what = ("bit" if self.count == 1 else "bits") if self.table.is_bit else ("reg" if self.count == 1 else "regs")
        names = ", ".join(t.name for t in self.tags)
        return f"unit {self.unit} {self.span()} ({self.count} {what}): {names}"


def unit_of(tag: Tag, default_unit: int) -> int:
    """The unit id a tag is read from: its own ``unit_id`` or the device's."""
    addr: ModbusAddress = tag.addr
    return default_unit if addr.unit is None else addr.unit


def build_plan(tags: list[Tag], default_unit: int, limits: Limits) -> dict[str, list[Request]]:
    """Requests per scan group, ordered by unit, table and offset; no I/O.

    Tags are sorted by address; a tag joins the current request when the gap before it is at most
    the table's gap limit and the request stays within the size limit. Overlapping tags share registers.
    Every tag must fit one request (checked by the driver before planning).
    """
    buckets: dict[tuple[str, int, Table], list[Tag]] = {}
    for tag in tags:
        addr: ModbusAddress = tag.addr
        buckets.setdefault((tag.scan, unit_of(tag, default_unit), addr.table), []).append(tag)
    plan: dict[str, list[Request]] = {}
    for (group, unit, table) in sorted(buckets, key=lambda k: (k[0], k[1], _TABLE_ORDER[k[2]])):
        members = sorted(buckets[(group, unit, table)], key=lambda t: (t.addr.offset, t.addr.end, t.name))
        plan.setdefault(group, []).extend(_merge(unit, table, members, limits))
    return dict(sorted(plan.items()))


def _merge(unit: int, table: Table, members: list[Tag], limits: Limits) -> list[Request]:
    size, gap = limits.size(table), limits.gap(table)
    out: list[Request] = []
    cur: Request | None = None
    for tag in members:
        addr: ModbusAddress = tag.addr
        if cur is not None:
            new_end = max(cur.end, addr.end)
            if addr.offset - cur.end - 1 <= gap and new_end - cur.start + 1 <= size:
                cur.count = new_end - cur.start + 1
                cur.tags.append(tag)
                continue
        cur = Request(unit=unit, table=table, start=addr.offset, count=addr.count, tags=[tag])
        out.append(cur)
    return out
