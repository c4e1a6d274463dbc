"""Read tags once with the daemon's driver code and print value, quality and timestamp."""
from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import math
import sys
from typing import Any

from edged.cell import Cell, load_cell
from edged.driver import Driver, PushSink, TagInfo
from edged.errors import ConfigError, ConfigIssue, DeviceUnavailable, ReadFailed
from edged.tag import DataType, Quality, Reading, Tag


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of `edged read`."""
    p.add_argument("-c", "--config", required=True, metavar="CELL.toml", help="cell file")
    p.add_argument("--json", action="store_true", help="print one JSON array")
    p.add_argument("tags", nargs="*", metavar="DEVICE.TAG", help="tags to read (default: all)")


def select_tags(cell: Cell, names: list[str]) -> list[Tag]:
    """The tags named on the command line (``device.tag`` or a whole ``device``), or all."""
    if not names:
        return list(cell.tags.values())
    out: list[Tag] = []
    bad = []
    for n in names:
        if n in cell.tags:
            out.append(cell.tags[n])
        elif n in cell.devices:
            out.extend(cell.devices[n].tags)
        else:
            bad.append(ConfigIssue("(command line)", n, "expected DEVICE.TAG or DEVICE of the cell, found no such tag"))
    if bad:
        raise ConfigError(bad)
    return out


async def read_tags(cell: Cell, tags: list[Tag]) -> tuple[list[Reading], dict[str, str]]:
    """Read the given tags once, device by device concurrently; returns readings and errors by device."""
    wanted = {t.key for t in tags}
    errors: dict[str, str] = {}

    async def one(name: str) -> list[Reading]:
        dev = cell.devices[name]
        drv = dev.driver
        groups = sorted({t.scan for t in dev.tags if t.key in wanted})
        polled = set(drv.polled_groups())
        once = "read_once" in drv.capabilities
        out: list[Reading] = []
        try:
            await drv.connect()
            pushed = []
            for g in groups:
                if g not in polled and not once:
                    pushed.append(g)
                    continue
                try:
                    out.extend(r for r in await drv.read(g) if r.tag.key in wanted)
                except ReadFailed as exc:
                    errors[name] = str(exc)
            if pushed:
                out.extend(await _collect_pushed(drv, pushed, wanted))
        except (DeviceUnavailable, OSError) as exc:
            errors[name] = str(exc) or type(exc).__name__
        finally:
            try:
                await drv.close()
            except Exception:
                pass
        return out

    devs = sorted({t.device for t in tags})
    results = await asyncio.gather(*(one(d) for d in devs))
    got = {r.tag.key: r for rs in results for r in rs}
    now = __import__("time").time_ns()
    readings = [got.get(t.key) or Reading(t, None, Quality.BAD, now) for t in tags]
    return readings, errors


async def _collect_pushed(drv: Driver, groups: list[str], wanted: set[str]) -> list[Reading]:
    """Run a push driver until every wanted tag of the groups delivered a value, or its stale time passed."""
    keys = {t.key for t in drv.tags if t.scan in groups and t.key in wanted}
    got: dict[str, Reading] = {}
    done = asyncio.Event()

    def take(readings: list[Reading]) -> None:
        for r in readings:
            if r.tag.key in keys:
                got[r.tag.key] = r
        if len(got) == len(keys):
            done.set()

    sink = PushSink(take, asyncio.get_running_loop().time)
    stream = asyncio.create_task(drv.run_push(sink))
    waiter = asyncio.create_task(done.wait())
    limit = max(drv.stale_after_s(g) for g in groups)
    try:
        finished, _ = await asyncio.wait([stream, waiter], timeout=limit, return_when=asyncio.FIRST_COMPLETED)
        if stream in finished and not stream.cancelled() and stream.exception() is not None:
            raise stream.exception()  # type: ignore[misc]
    finally:
        for t in (stream, waiter):
            t.cancel()
        await asyncio.gather(stream, waiter, return_exceptions=True)
    return list(got.values())


def iso(ts_ns: int) -> str:
    """RFC 3339 UTC timestamp with microseconds."""
    return dt.datetime.fromtimestamp(ts_ns / 1e9, dt.timezone.utc).isoformat(timespec="microseconds").replace(
        "+00:00", "Z")


def as_dict(r: Reading, info: TagInfo | None = None) -> dict[str, Any]:
    """A reading as a JSON-ready dict (type and unit as the device reported them at connect, if it did)."""
    value = r.value
    if isinstance(value, float) and not math.isfinite(value):
        value = str(value)  # "nan", "inf", "-inf" as in the JSON lines sink: JSON has no literal for them
    dtype = info.dtype if info is not None and r.tag.dtype is DataType.ANY else r.tag.dtype
    out = {"tag": r.tag.key, "value": value, "quality": Quality(r.quality).label, "ts": iso(r.ts_ns),
           "unit": r.tag.unit or (info.unit if info is not None else ""), "type": dtype.value}
    dims = r.tag.dims or (info.dims if info is not None else ())
    if dims:
        out["dims"] = list(dims)
    return out


def run(args: argparse.Namespace) -> int:
    """Read and print; exit 1 when any device could not be read."""
    cell = load_cell(args.config)
    tags = select_tags(cell, args.tags)
    readings, errors = asyncio.run(read_tags(cell, tags))
    if args.json:
        infos = {t.key: cell.devices[t.device].driver.tag_info.get(t.name) for t in tags}
        json.dump([as_dict(r, infos[r.tag.key]) for r in readings], sys.stdout, indent=1, default=str, allow_nan=False)
        print()
    else:
        width = max((len(t.key) for t in tags), default=10)
        for r in readings:
            val = "-" if r.value is None else (f"{r.value:.6g}" if isinstance(r.value, float) else str(r.value))
            print(f"{r.tag.key:<{width}}  {val:>14} {r.tag.unit:<6} {Quality(r.quality).label:<9} {iso(r.ts_ns)}")
    for dev, err in sorted(errors.items()):
        prefix = "" if err.startswith(f"device {dev}") else f"device {dev}: "
        print(f"edged: {prefix}{err}", file=sys.stderr)
    return 1 if errors else 0
