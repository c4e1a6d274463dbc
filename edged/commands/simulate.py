"""Serve emulated devices for a cell file (all or some devices) until SIGTERM, e.g. to commission or test a cell."""
from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from collections import defaultdict
from typing import Any

from edged.driver import emulator_for
from edged.cell import Cell, load_cell
from edged.errors import ConfigError, ConfigIssue


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of `edged simulate`."""
    p.add_argument("-c", "--config", required=True, metavar="CELL.toml", help="cell file")
    p.add_argument("--device", action="append", default=[], metavar="NAME", help="emulate only these devices")
    p.add_argument("--set", action="append", default=[], metavar="DEVICE.TAG=VALUE",
                   help="initial value (JSON literal or bare string)")
    p.add_argument("--animate", action="store_true", help="move numeric values along slow ramps")


def initial_values(cell: Cell, items: list[str]) -> list[tuple[Any, Any]]:
    """Parse --set options into (tag, value) pairs; unknown tags are usage errors."""
    out, bad = [], []
    for item in items:
        key, sep, raw = item.partition("=")
        tag = cell.tags.get(key)
        if not sep or tag is None:
            bad.append(ConfigIssue("(command line)", f"--set {item}", "expected DEVICE.TAG=VALUE for a tag of the cell"))
            continue
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        out.append((tag, value))
    if bad:
        raise ConfigError(bad)
    return out


async def serve(cell: Cell, devices: list[str], values: list[tuple[Any, Any]], animate: bool) -> None:
    """Start one emulator per driver kind for the chosen devices; stop on SIGTERM/SIGINT."""
    by_kind: dict[str, list[Any]] = defaultdict(list)
    for name in devices:
        dev = cell.devices[name]
        by_kind[dev.spec.driver].append(dev)
    emus: dict[str, Any] = {}
    started = []
    try:
        for devs in by_kind.values():
            emu = emulator_for([d.driver for d in devs])
            await emu.start()
            started.append(emu)
            for d in devs:
                emus[d.spec.name] = emu
        for tag, value in values:
            if tag.device in emus:
                emus[tag.device].set_value(tag, value)
        print(f"edged simulate: serving {', '.join(devices)}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        t = 0
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), 0.5)
            except asyncio.TimeoutError:
                pass
            if animate:
                t += 1
                for name in devices:
                    for tag in cell.devices[name].tags:
                        if tag.dtype.is_numeric and not tag.writable:
                            emus[name].set_value(tag, (t % 100) * (tag.scale if tag.scaled else 1.0))
    finally:
        for emu in started:
            await emu.stop()


def run(args: argparse.Namespace) -> int:
    """Load the cell and serve its devices."""
    cell = load_cell(args.config)
    unknown = [d for d in args.device if d not in cell.devices]
    if unknown:
        raise ConfigError([ConfigIssue("(command line)", f"--device {d}", "expected a device of the cell")
                           for d in unknown])
    values = initial_values(cell, args.set)
    try:
        asyncio.run(serve(cell, args.device or list(cell.devices), values, args.animate))
    except Exception as exc:  # OSError, termios.error, a port already taken: say it, no traceback
        print(f"edged simulate: cannot serve the devices: {exc}", file=sys.stderr)
        return 1
    return 0
