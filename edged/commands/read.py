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
from edged.errors import ConfigError, ConfigIssue, DeviceUnavailable, ReadFailed
from edged.tag import Quality, Reading, Tag


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
        out: list[Reading] = []
        try:
            await drv.connect()
            for g in groups:
                if g not in drv.polled_groups():
                    continue
                try:
                    out.extend(r for r in await drv.read(g) if r.tag.key in wanted)
                except ReadFailed as exc:
                    errors[name] = str(exc)
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


def iso(ts_ns: int) -> str:
    """RFC 3339 UTC timestamp with microseconds."""
    return dt.datetime.fromtimestamp(ts_ns / 1e9, dt.timezone.utc).isoformat(timespec="microseconds").replace(
        "+00:00", "Z")


def as_dict(r: Reading) -> dict[str, Any]:
    """A reading as a JSON-ready dict."""
    value = r.value
    if isinstance(value, float) and not math.isfinite(value):
        value = str(value)  # "nan", "inf", "-inf" as in the JSON lines sink: JSON has no literal for them
    return {"tag": r.tag.key, "value": value, "quality": Quality(r.quality).label, "ts": iso(r.ts_ns),
            "unit": r.tag.unit}


def run(args: argparse.Namespace) -> int:
    """Read and print; exit 1 when any device could not be read."""
    cell = load_cell(args.config)
    tags = select_tags(cell, args.tags)
    readings, errors = asyncio.run(read_tags(cell, tags))
    if args.json:
        json.dump([as_dict(r) for r in readings], sys.stdout, indent=1, default=str, allow_nan=False)
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
