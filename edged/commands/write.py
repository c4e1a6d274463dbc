"""Write one value to a writable tag with the daemon's checks and driver code."""
from __future__ import annotations

import argparse
import asyncio
import json
import sys

from edged.cell import load_cell
from edged.errors import DeviceUnavailable, ReadFailed, WriteFailed, WriteRefused
from edged.writes import check_write


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of `edged write`."""
    p.add_argument("-c", "--config", required=True, metavar="CELL.toml", help="cell file")
    p.add_argument("tag", metavar="DEVICE.TAG")
    p.add_argument("value", help="value (JSON literal: 12.5, true, \"text\"; bare words are strings)")


def run(args: argparse.Namespace) -> int:
    """Check and write; exit 2 for a refused write, 1 when the device fails."""
    cell = load_cell(args.config)
    tag = cell.tags.get(args.tag)
    if tag is None:
        print(f"edged: {args.tag}: no such tag in {args.config}", file=sys.stderr)
        return 2
    try:
        value = json.loads(args.value)
    except json.JSONDecodeError:
        value = args.value
    try:
        checked = check_write(tag, value)
    except WriteRefused as exc:
        print(f"edged: write refused: {exc}", file=sys.stderr)
        return 2
    drv = cell.devices[tag.device].driver

    async def go() -> None:
        try:
            await drv.connect()
            await drv.write(tag, checked)
        finally:
            await drv.close()

    try:
        asyncio.run(go())
    except (DeviceUnavailable, WriteFailed, ReadFailed, OSError) as exc:
        print(f"edged: write {tag.key} failed: {exc}", file=sys.stderr)
        return 1
    print(f"{tag.key} = {checked!r}")
    return 0
