"""Validate a cell file without any I/O (exit 0 valid, 2 invalid); --plan prints the request plans."""
from __future__ import annotations

import argparse

from edged.cell import load_cell


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of `edged check`."""
    p.add_argument("-c", "--config", required=True, metavar="CELL.toml", help="cell file")
    p.add_argument("--plan", action="store_true", help="print the request plan of every device and scan group")


def run(args: argparse.Namespace) -> int:
    """Load the cell (raising ConfigError on problems) and report."""
    cell = load_cell(args.config)
    ntags = len(cell.tags)
    print(f"{args.config}: ok: cell {cell.name!r}, {len(cell.devices)} device(s), {ntags} tag(s), "
          f"{len(cell.sinks)} sink(s)")
    if args.plan:
        for name, dev in cell.devices.items():
            print(f"device {name} ({dev.spec.driver}):")
            for group, lines in dev.driver.plan().items():
                scan = cell.scans[group]
                print(f"  scan {group} every {scan.interval_s * 1000:g} ms: {len(lines)} request(s)")
                for line in lines:
                    print(f"    {line}")
    return 0
