"""Helpers for the Modbus driver tests: load device tables like the cell loader, free ports, socat pty pairs."""
from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import time
import tomllib
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterator

from edged.cell import Device, _parse_devices, _parse_scans
from edged.errors import ConfigError
from edged.schema import Issues, Section
from edged.tag import Tag


def parse_devices(text: str, file: str = "cell.toml") -> tuple[dict[str, Device], dict[str, Tag], Issues]:
    """Parse the [scan] and [device] tables of a cell document exactly as the cell loader does."""
    issues = Issues(file)
    root = Section(tomllib.loads(text), "", issues)
    scans = _parse_scans(root.sections("scan"), 1000)
    devices, tags = _parse_devices(root, scans, 1000)
    return devices, tags, issues


def load_devices(text: str) -> tuple[dict[str, Device], dict[str, Tag]]:
    """Devices and tags of a valid document; ConfigError listing every issue otherwise."""
    devices, tags, issues = parse_devices(text)
    issues.raise_if_any()
    return devices, tags


def config_issues(text: str) -> list[tuple[str, str]]:
    """(dotted path, message) of every issue of a document (empty when valid)."""
    try:
        _, _, issues = parse_devices(text)
    except ConfigError as exc:  # pragma: no cover - drivers record rather than raise
        return [(i.path, i.message) for i in exc.issues]
    return [(i.path, i.message) for i in issues.items]


def free_port() -> int:
    """A TCP port on loopback that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tcp_device(name: str, port: int, tags: dict[str, dict[str, Any]], **keys: Any) -> str:
    """TOML for one Modbus/TCP device on loopback with the given tag tables and extra device keys."""
    lines = [f"[device.{name}]", 'driver = "modbus"', 'transport = "tcp"', 'host = "127.0.0.1"', f"port = {port}"]
    lines += [f"{k} = {_toml(v)}" for k, v in keys.items()]
    for tname, tkeys in tags.items():
        lines.append(f"[device.{name}.tag.{tname}]")
        lines += [f"{k} = {_toml(v)}" for k, v in tkeys.items()]
    return "\n".join(lines) + "\n"


def _toml(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(v)


@contextlib.contextmanager
def socat_pair(directory: Path) -> Iterator[tuple[str, str]]:
    """A pty pair (driver end, server end) made by socat under a directory; removed afterwards."""
    socat = shutil.which("socat")
    if socat is None:
        raise RuntimeError("socat is required for the RTU tests (apt-get install socat)")
    a, b = str(directory / "ttyA"), str(directory / "ttyB")
    proc = subprocess.Popen([socat, "-d", "-d", f"pty,raw,echo=0,link={a}", f"pty,raw,echo=0,link={b}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not (os.path.exists(a) and os.path.exists(b)):
            if proc.poll() is not None:
                raise RuntimeError(f"socat exited with {proc.returncode}")
            if time.monotonic() > deadline:
                raise RuntimeError("socat made no pty pair within 30 s")
            time.sleep(0.01)
        yield a, b
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def eventually(check: Callable[[], Awaitable[bool] | bool], timeout: float = 30.0, every: float = 0.02) -> None:
    """Poll until a condition holds (ends as soon as it does); AssertionError after a generous timeout."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(every)
