"""Run the built-in demo cell: emulated devices plus the daemon; Ctrl-C stops both."""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import socket
import sys
import tomllib
from collections import defaultdict
from importlib import resources
from pathlib import Path
from typing import Any

from edged.driver import emulator_for
from edged.cell import Cell, load_cell, parse_cell
from edged.demo.animate import DemoAnimation
from edged.runtime import Runtime
from edged.statelock import StateDirBusy, StateLock

log = logging.getLogger("edged.demo")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of `edged demo`."""
    p.add_argument("--state-dir", default="demo-state", help="where the spool and samples.jsonl go (default: "
                                                              "./demo-state)")
    p.add_argument("--metrics-port", type=int, default=9108, help="metrics port on 127.0.0.1 (default 9108; a free "
                                                                  "port is used when it is taken)")
    p.add_argument("--mqtt", metavar="HOST:PORT", default=None, type=host_port,
                   help="also forward to this MQTT broker (topics demo-cell/<device>/<tag>)")
    p.add_argument("--print-config", action="store_true", help="print the demo cell TOML and exit")
    p.add_argument("--seconds", type=float, default=0, help="stop after this many seconds (default: until Ctrl-C)")


def host_port(text: str) -> str:
    """Check an MQTT broker address HOST[:PORT] for --mqtt (argparse type: a bad one is a usage error)."""
    host, sep, port = text.rpartition(":") if ":" in text else (text, "", "1883")
    if not host or any(c.isspace() or c in "\"'\\[]" for c in host) or not (port.isascii() and port.isdigit()) \
            or not 1 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT such as 127.0.0.1:1883, found {text!r}")
    return f"{host}:{int(port)}"


def free_port(preferred: int = 0) -> int:
    """The preferred loopback TCP port when it is free, else one the OS picks."""
    for port in ([preferred] if preferred else []) + [0]:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return s.getsockname()[1]
    raise OSError("no free port")


def demo_toml(state_dir: Path, metrics_port: int, modbus_port: int, mqtt: str | None, s7_port: int = 0,
              opcua_port: int = 0) -> str:
    """The demo cell TOML with its placeholders filled in."""
    text = resources.files("edged.demo").joinpath("cell.toml").read_text()
    # CNC machines on loopback TCP ports (a GRBL router behind a serial-to-Ethernet converter, a Haas mill)
    text = text.replace("{grbl_port}", str(free_port())).replace("{haas_port}", str(free_port()))
    # json.dumps gives a valid TOML basic string for any path (quotes and backslashes escaped)
    text = (text.replace('"{state_dir}"', json.dumps(str(state_dir))).replace("{metrics_port}", str(metrics_port))
            .replace("{modbus_port}", str(modbus_port)))
    text = text.replace("{s7_port}", str(s7_port or free_port()))  # S7 PLC (conveyor1)
    text = text.replace("{opcua_port}", str(opcua_port or free_port()))
    control = resources.files("edged.demo").joinpath("control.toml")
    if control.is_file():
        text += "\n" + control.read_text()
    if mqtt:
        host, _, port = host_port(mqtt).rpartition(":")
        text += (f'\n[sink.upstream]\ntype = "mqtt"\nhost = "{host}"\nport = {int(port)}\n'
                 f'client_id = "edged-demo"\n')
    return text


async def run_demo(cell: Cell, seconds: float) -> None:
    """Start the emulators, the animation and the runtime; stop all on signal or after `seconds`."""
    by_kind: dict[str, list[Any]] = defaultdict(list)
    for dev in cell.devices.values():
        by_kind[dev.spec.driver].append(dev)
    emulators: dict[str, Any] = {}
    started = []
    anim_task: asyncio.Task | None = None
    rt = Runtime(cell)
    try:
        for kind, devs in by_kind.items():
            emu = emulator_for([d.driver for d in devs])
            await emu.start()
            started.append(emu)
            for d in devs:
                emulators[d.spec.name] = emu
        anim = DemoAnimation(cell, emulators)
        anim.step(0.0)
        anim_task = asyncio.create_task(anim.run())
        await _run_runtime(rt, cell, seconds)
    finally:
        if anim_task is not None:
            anim_task.cancel()
            await asyncio.gather(anim_task, return_exceptions=True)
        for emu in started:
            await emu.stop()


async def _run_runtime(rt: Runtime, cell: Cell, seconds: float) -> None:
    """Start the runtime, print where things are, run until a signal or `seconds`, stop it (also after a failed start)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await rt.start()
    except BaseException:
        await rt.stop()
        raise
    sinks = ", ".join(f"{s.name} ({s.spec.kind})" for s in rt.sinks)
    data = cell.state_dir / "samples.jsonl"
    print(f"edged demo: cell {cell.name!r} with {len(cell.devices)} emulated devices, {len(cell.tags)} tags",
          flush=True)
    print(f"  metrics: {rt.metrics_url}", flush=True)
    print(f"  data:    {data}  (sinks: {sinks})", flush=True)
    print("  Ctrl-C stops the daemon and the emulated devices.", flush=True)
    try:
        if seconds:
            try:
                await asyncio.wait_for(stop.wait(), seconds)
            except asyncio.TimeoutError:
                pass
        else:
            await stop.wait()
    finally:
        await rt.stop()


def run(args: argparse.Namespace) -> int:
    """Build the demo cell and run it."""
    state_dir = Path(args.state_dir).resolve()
    metrics_port = free_port(args.metrics_port)
    modbus_port = free_port()
    text = demo_toml(state_dir, metrics_port, modbus_port, args.mqtt)
    if args.print_config:
        sys.stdout.write(text)
        return 0
    cell = parse_cell(tomllib.loads(text), "(built-in demo cell)")
    try:
        lock = StateLock.acquire(cell.state_dir)  # two demos on one state folder would share a spool
    except (StateDirBusy, OSError) as exc:
        print(f"edged demo: {exc}", file=sys.stderr)
        return 1
    try:
        # the demo's cell as a file in its state folder, so `kill -HUP` / `edged reload` apply an edited copy
        path = cell.state_dir / "demo-cell.toml"
        path.write_text(text)
        cell = load_cell(path)
        asyncio.run(run_demo(cell, args.seconds))
    except OSError as exc:  # an unusable state dir, a port taken meanwhile: say it, no traceback
        print(f"edged demo: {exc}", file=sys.stderr)
        return 1
    finally:
        lock.release()
    return 0
