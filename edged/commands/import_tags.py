"""Print TOML tag tables imported from a PLC engineering export, e.g. `edged import-tags s7 --tia DB1.xml`."""
from __future__ import annotations

import argparse
import importlib
import sys

from edged.driver import available_drivers
from edged.schema import valid_name

NAME = "import-tags"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of `edged import-tags`."""
    p.add_argument("driver", help="driver kind whose export formats to read (e.g. s7)")
    p.add_argument("--tia", action="append", default=[], metavar="EXPORT.xml",
                   help="TIA Portal DB export (XML); repeatable")
    p.add_argument("--csv", action="append", default=[], metavar="FILE.csv",
                   help="CSV tag list (columns tag, db, offset, type, optional bit and comment); repeatable")
    p.add_argument("--device", default="plc", metavar="NAME", help="device name the tags go under (default plc)")


def run(args: argparse.Namespace) -> int:
    """Import the files through the driver's tag_import module and print the TOML snippet."""
    if args.driver not in available_drivers():
        print(f"edged import-tags: unknown driver {args.driver!r} (installed: {', '.join(sorted(available_drivers()))})",
              file=sys.stderr)
        return 2
    try:
        importer = importlib.import_module(f"edged.drivers.{args.driver}.tag_import")
    except ModuleNotFoundError:
        print(f"edged import-tags: driver {args.driver!r} has no tag import", file=sys.stderr)
        return 2
    if not args.tia and not args.csv:
        print("edged import-tags: expected --tia EXPORT.xml or --csv FILE", file=sys.stderr)
        return 2
    if not valid_name(args.device):
        print(f"edged import-tags: --device: expected a name of letters, digits, '_' or '-', found {args.device!r}",
              file=sys.stderr)
        return 2
    try:
        text = importer.import_files(args.tia, args.csv, args.device)
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        print(f"edged import-tags: {exc}", file=sys.stderr)
        return 1
    sys.stdout.write(text)
    return 0
