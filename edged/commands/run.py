"""Run the daemon on a cell file until SIGTERM or SIGINT."""
from __future__ import annotations

import argparse
import asyncio
import logging
import tomllib
from pathlib import Path

from edged.cell import load_cell
from edged.runtime import Runtime
from edged.secrets import warn_readable


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of `edged run`."""
    p.add_argument("-c", "--config", required=True, metavar="CELL.toml", help="cell file")


def run(args: argparse.Namespace) -> int:
    """Load the cell (config errors exit 2) and run it."""
    cell = load_cell(args.config)
    if args.log_level is None:
        logging.getLogger().setLevel(cell.log_level.upper())
    warn_readable(cell.file, tomllib.loads(Path(cell.file).read_text(encoding="utf-8")))
    try:
        asyncio.run(Runtime(cell).run_forever())
    except OSError as exc:
        logging.getLogger("edged").error("cannot run cell %s: %s", cell.name, exc)
        return 1
    return 0
