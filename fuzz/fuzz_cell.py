"""Fuzz target: cell file text through load_cell (TOML, then every table's checks); only ConfigError may come out."""
from __future__ import annotations

import atexit
import contextlib
import os
import tempfile
from pathlib import Path

from edged.cell import load_cell
from edged.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent
EXPECTED = (ConfigError,)
SEEDS = [p.read_bytes() for p in sorted(REPO.glob("config/*.toml")) + sorted(REPO.glob("drivers/*/sample.toml"))]
SEEDS += [
    b'[cell]\nname = "x"\n',
    b'[cell]\nname = "x"\n[sink.up]\ntype = "mqtt"\nmax_command_bytes = 100\n',
    b'[cell]\nname = "x"\n[sink.sp]\ntype = "sparkplug"\ngroup_id = "g"\n',
    b'[cell]\nname = "x"\n[device.d]\ndriver = "sim"\n[device.d.tag.t]\naddress = "ramp:0:10:5"\n',
    b'[cell]\nname = "x"\n[task.t]\nperiod_us = 1000\n[task.t.block.b]\ntype = "ADD"\nin = { IN1 = 1, IN2 = 2 }\n',
    b'[cell]\nname = "x"\nx = [[[[[[[[1]]]]]]]]\n',
]

_fd, _name = tempfile.mkstemp(prefix="fuzz-cell-", suffix=".toml")
os.close(_fd)
CELL = Path(_name)  # one scratch file per process, rewritten for every input


@atexit.register
def _remove() -> None:
    with contextlib.suppress(OSError):
        CELL.unlink()


def TARGET(data: bytes) -> None:  # noqa: N802 - the harness convention
    """Load one cell file; every problem must be a ConfigError."""
    CELL.write_bytes(data)
    load_cell(CELL)
