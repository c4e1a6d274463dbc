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
from edged.statelock import StateDirBusy, StateLock


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of `edged run`."""
    p.add_argument("-c", "--config", required=True, metavar="CELL.toml", help="cell file")
    p.add_argument("--read-only", action="store_true",
                   help="refuse every write (upstream commands included) and run no control task, e.g. to "
                        "commission against a live plant")


def run(args: argparse.Namespace) -> int:
    """Load the cell (config errors exit 2) and run it."""
    cell = load_cell(args.config)
    if args.log_level is None:
        logging.getLogger().setLevel(cell.log_level.upper())
    warn_readable(cell.file, tomllib.loads(Path(cell.file).read_text(encoding="utf-8")))
    try:
        lock = StateLock.acquire(cell.state_dir)  # before anything else touches the state folder
    except (StateDirBusy, OSError) as exc:
        logging.getLogger("edged").error("cannot run cell %s: %s", cell.name, exc)
        return 1
    try:
        asyncio.run(Runtime(cell, read_only=args.read_only).run_forever())
    except OSError as exc:
        logging.getLogger("edged").error("cannot run cell %s: %s", cell.name, exc)
        return 1
    finally:
        lock.release()
    return 0
