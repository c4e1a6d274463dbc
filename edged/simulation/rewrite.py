"""Point a cell at emulators: loopback ports and ptys in place of the plant's IP addresses, serial ports and endpoints.

`edged simulate --rewrite OUT.toml` writes the rewritten copy; everything else in the cell (tags,
scan groups, tasks, sinks) is unchanged, so `edged run -c OUT.toml` runs the real daemon against
the emulated cell. Without ``--rewrite``, a cell whose endpoints are not loopback is refused:
emulating it would need the plant's addresses on this machine.
"""
from __future__ import annotations

import ipaddress
import os
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

URL_KEYS = ("endpoint", "url")


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def is_loopback_host(host: str) -> bool:
    """True for localhost and loopback addresses (127.0.0.0/8, ::1)."""
    h = host.strip("[]").lower()
    if h in ("localhost", "localhost.localdomain", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


def foreign_endpoints(data: dict[str, Any]) -> list[str]:
    """The endpoints of a parsed cell that emulators on this machine cannot serve as they are, as
    ``device.<name>.<key> = value`` strings (empty when the cell is loopback-only)."""
    out: list[str] = []
    for name, dev in (data.get("device") or {}).items():
        if not isinstance(dev, dict):
            continue
        host = dev.get("host")
        if isinstance(host, str) and not is_loopback_host(host):
            out.append(f"device.{name}.host = {host!r}")
        for key in URL_KEYS + ("port",):
            val = dev.get(key)
            if isinstance(val, str) and "://" in val:
                h = urlsplit(val).hostname or ""
                if not is_loopback_host(h):
                    out.append(f"device.{name}.{key} = {val!r}")
            elif key == "port" and isinstance(val, str) and os.path.exists(val):
                out.append(f"device.{name}.port = {val!r} (an existing serial port)")
    return out


def rewrite_cell(data: dict[str, Any], pty_dir: Path) -> dict[str, Any]:
    """A copy of a parsed cell whose every device endpoint is on loopback: TCP hosts become 127.0.0.1 with a
    free port, URLs get 127.0.0.1 and a free port, serial ports become pty paths under ``pty_dir``."""
    out = {k: v for k, v in data.items()}
    devices = {}
    for name, dev in (data.get("device") or {}).items():
        if not isinstance(dev, dict):
            devices[name] = dev
            continue
        d = dict(dev)
        if isinstance(d.get("host"), str):
            d["host"] = "127.0.0.1"
            d["port"] = free_port()
        for key in URL_KEYS + ("port",):
            val = d.get(key)
            if not isinstance(val, str):
                continue
            if "://" in val:
                parts = urlsplit(val)
                d[key] = urlunsplit((parts.scheme, f"127.0.0.1:{free_port()}", parts.path, parts.query,
                                     parts.fragment))
            elif key == "port":
                d[key] = str(pty_dir / f"{name}.pty")
        devices[name] = d
    if devices:
        out["device"] = devices
    return out


def dump_cell(data: dict[str, Any]) -> str:
    """TOML text of a parsed cell."""
    import tomli_w

    return tomli_w.dumps(data)
