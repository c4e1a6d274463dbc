"""The control API of `edged simulate`: a small JSON-over-HTTP server on loopback, and its Python client for tests.

Routes: ``GET /devices`` (devices and the faults each supports), ``POST /fault`` (``{"fault":
"press1=latency:200ms"}``), ``GET /value?tag=DEVICE.TAG``, ``POST /value`` (``{"tag": ..., "value":
...}``), ``GET /writes`` (writes each emulated device received). Errors answer 400/404 with
``{"error": ...}``. Bodies are bounded (64 KiB); the server listens on loopback only.
"""
from __future__ import annotations

import asyncio
import json
import logging
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import parse_qs, urlsplit

from edged.driver import FaultUnsupported
from edged.simulation.server import Fault, Simulation

log = logging.getLogger("edged.simulate")
MAX_BODY = 64 * 1024


class ControlServer:
    """Serves the control API of one Simulation on 127.0.0.1."""

    def __init__(self, sim: Simulation, port: int = 0) -> None:
        self.sim = sim
        self.port = port
        self._server: asyncio.base_events.Server | None = None

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:40123``."""
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        """Listen on loopback (port 0 picks a free one)."""
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(10):
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = (lines[0].split(" ") + ["", "", ""])[:3]
                length = 0
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value.strip() or 0)
                if length > MAX_BODY:
                    status, body = 413, {"error": f"body larger than {MAX_BODY} bytes"}
                else:
                    raw = await reader.readexactly(length) if length else b""
                    status, body = await self._route(method, target, raw)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ValueError,
                ConnectionError) as exc:
            status, body = 400, {"error": f"bad request: {exc!r}"}
        data = json.dumps(body, default=str).encode()
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 413: "Payload Too Large"}.get(status, "Error")
        try:
            writer.write(f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: "
                         f"{len(data)}\r\nConnection: close\r\n\r\n".encode() + data)
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def _route(self, method: str, target: str, raw: bytes) -> tuple[int, dict[str, Any]]:
        url = urlsplit(target)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        try:
            payload = json.loads(raw) if raw else {}
        except json.JSONDecodeError as exc:
            return 400, {"error": f"expected a JSON body: {exc}"}
        sim = self.sim
        try:
            if method == "GET" and url.path == "/devices":
                return 200, {"devices": {d: {"faults": f} for d, f in sim.faults().items()}}
            if method == "POST" and url.path == "/fault":
                fault = Fault.parse(str(payload.get("fault", "")))
                await sim.inject(fault)
                return 200, {"ok": True, "fault": str(fault)}
            if method == "GET" and url.path == "/value":
                key = query.get("tag", "")
                return 200, {"tag": key, "value": sim.read(key)}
            if method == "POST" and url.path == "/value":
                sim.set(str(payload.get("tag")), payload.get("value"))
                return 200, {"ok": True}
            if method == "GET" and url.path == "/writes":
                seen: dict[str, Any] = {}
                for emu in {id(e): e for e in sim.emulators.values()}.values():
                    seen.update(emu.writes_seen())
                return 200, {"writes": seen}
        except KeyError as exc:
            return 404, {"error": str(exc.args[0]) if exc.args else "not found"}
        except (FaultUnsupported, ValueError, TypeError) as exc:
            return 400, {"error": str(exc)}
        return 404, {"error": f"no route {method} {url.path}"}


class SimulatorClient:
    """Python client of the control API (blocking, for pytest and scripts)."""

    def __init__(self, url: str, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as exc:
            detail = json.loads(exc.read() or b"{}").get("error", str(exc))
            raise SimulatorError(detail) from None

    def devices(self) -> dict[str, list[str]]:
        """Device name -> fault kinds its emulator supports."""
        return {d: v["faults"] for d, v in self._call("GET", "/devices")["devices"].items()}

    def fault(self, spec: str) -> None:
        """Inject ``DEVICE=KIND[:ARG]``."""
        self._call("POST", "/fault", {"fault": spec})

    def value(self, tag: str) -> Any:
        """The emulated value of DEVICE.TAG."""
        from urllib.parse import quote

        return self._call("GET", f"/value?tag={quote(tag)}")["value"]

    def set_value(self, tag: str, value: Any) -> None:
        """Set the emulated value of DEVICE.TAG."""
        self._call("POST", "/value", {"tag": tag, "value": value})

    def writes(self) -> dict[str, int]:
        """Writes each emulated device received so far."""
        return self._call("GET", "/writes")["writes"]


class SimulatorError(Exception):
    """The control API refused a request (unknown device or tag, unsupported fault, bad argument)."""
