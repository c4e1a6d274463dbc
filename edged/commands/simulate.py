"""Serve emulated devices for every device of a cell (any driver), with value generators, faults and a control API."""
from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import tempfile
import tomllib
from pathlib import Path
from typing import Any

from edged.cell import Cell, load_cell, parse_cell
from edged.driver import FaultUnsupported
from edged.errors import ConfigError, ConfigIssue
from edged.simulation.control import ControlServer
from edged.simulation.rewrite import dump_cell, foreign_endpoints, rewrite_cell
from edged.simulation.server import Fault, Simulation


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of `edged simulate`."""
    p.add_argument("-c", "--config", required=True, metavar="CELL.toml", help="cell file")
    p.add_argument("--rewrite", metavar="OUT.toml",
                   help="write a copy of the cell pointed at the emulators (loopback ports, ptys) and serve that; "
                        "needed when the cell names real IP addresses, serial ports or endpoints")
    p.add_argument("--device", action="append", default=[], metavar="NAME", help="emulate only these devices")
    p.add_argument("--set", action="append", default=[], metavar="DEVICE.TAG=VALUE",
                   help="initial value (JSON literal or bare string)")
    p.add_argument("--animate", action="store_true", help="move numeric values without a generator along ramps")
    p.add_argument("--fault", action="append", default=[], metavar="DEVICE=KIND[:ARG]",
                   help="inject a fault at start, e.g. press1=latency:200ms (see docs/simulate.md)")
    p.add_argument("--control-port", type=int, default=None, metavar="PORT",
                   help="serve the control API (faults, values) on 127.0.0.1:PORT (0: a free port)")


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


def prepare(config: str, rewrite: str | None) -> Cell:
    """Load the cell to emulate: as it is (loopback endpoints only), or rewritten to loopback into ``rewrite``."""
    path = Path(config)
    cell = load_cell(path)  # validates first: a broken cell is a config error, exit 2
    data = tomllib.loads(path.read_text())
    if rewrite is None:
        foreign = foreign_endpoints(data)
        if foreign:
            raise ConfigError([ConfigIssue(str(path), f.split(" = ")[0], f"expected a loopback endpoint to emulate "
                                           f"in place, found {f.split(' = ', 1)[1]}: use --rewrite OUT.toml to "
                                           "serve a copy of the cell on loopback") for f in foreign])
        return cell
    out = Path(rewrite).resolve()
    pty_dir = Path(tempfile.mkdtemp(prefix="edged-sim-"))
    new = rewrite_cell(data, pty_dir)
    cell_sec = dict(new.get("cell") or {})
    # a relative state_dir (and replay files) stay where they were, whatever folder OUT.toml is in
    cell_sec["state_dir"] = str(cell.state_dir)
    new["cell"] = cell_sec
    for dev in (new.get("simulate") or {}).values():
        for gen in (dev.values() if isinstance(dev, dict) else ()):
            if isinstance(gen, dict) and isinstance(gen.get("file"), str):
                gen["file"] = str((path.resolve().parent / gen["file"]).resolve())
    out.write_text(f"# {out.name}: {path} pointed at `edged simulate` emulators (written by edged simulate "
                   "--rewrite)\n" + dump_cell(new))
    return parse_cell(tomllib.loads(out.read_text()), str(out), base_dir=out.parent)


async def serve(cell: Cell, devices: list[str], values: list[tuple[Any, Any]], animate: bool,
                faults: list[Fault], control_port: int | None) -> None:
    """Run the simulation until SIGTERM/SIGINT."""
    sim = Simulation(cell, devices, animate=animate)
    control: ControlServer | None = None
    await sim.start()
    try:
        for tag, value in values:
            sim.set(tag.key, value)
        for fault in faults:
            await sim.inject(fault)
        if control_port is not None:
            control = ControlServer(sim, control_port)
            await control.start()
            print(f"edged simulate: control API {control.url}", flush=True)
        print(f"edged simulate: serving {', '.join(devices)}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    finally:
        if control is not None:
            await control.stop()
        await sim.stop()


def run(args: argparse.Namespace) -> int:
    """Load (and rewrite) the cell and serve its devices."""
    cell = prepare(args.config, args.rewrite)
    unknown = [d for d in args.device if d not in cell.devices]
    if unknown:
        raise ConfigError([ConfigIssue("(command line)", f"--device {d}", "expected a device of the cell")
                           for d in unknown])
    values = initial_values(cell, args.set)
    try:
        faults = [Fault.parse(f) for f in args.fault]
    except ValueError as exc:
        raise ConfigError([ConfigIssue("(command line)", "--fault", str(exc))]) from None
    try:
        asyncio.run(serve(cell, args.device or list(cell.devices), values, args.animate, faults, args.control_port))
    except (KeyError, FaultUnsupported) as exc:
        print(f"edged simulate: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # OSError, termios.error, a port already taken: say it, no traceback
        print(f"edged simulate: cannot serve the devices: {exc}", file=sys.stderr)
        return 1
    return 0
