"""CncEmulator: simulated GRBL and Haas controllers on a pty pair (linked at the device's port path) or TCP.

For a serial device the emulator opens a pseudo-terminal and makes the configured ``port`` path a
symlink to its slave side, as ``/dev/serial/by-id/...`` links to a ``ttyUSB`` node; ``unplug()``
closes the pty and removes the link (the driver sees EIO, then an absent port), ``replug()`` makes a
new pty under the same path (a new ``/dev/pts/N``, as an adapter that comes back under another
name). Fault hooks for tests and the HIL kit: ``unplug``, ``replug``, ``alarm``, ``feed_hold``,
``cycle_start``, ``start_program``, ``reset``, ``inject_bytes`` (raw bytes: noise), ``delay_s``, ``split``;
and the fault API of ``edged simulate`` (``faults``, ``inject(device, fault, arg)``, ``writes_seen``).
"""
from __future__ import annotations

import asyncio
import logging
import os
import random
import tty
from typing import Any

from edged.driver import Driver, Emulator

try:  # the fault contract of edged simulate (docs/simulate.md), where the core has it
    from edged.driver import FaultUnsupported  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - a core without the fault API
    class FaultUnsupported(Exception):  # type: ignore[no-redef]
        """An emulator was asked for a fault it cannot play."""
from edged.tag import Tag
from edged.transport.stream import parse_tcp_url

from .machines import GrblMachine, HaasMachine

log = logging.getLogger("edged.drivers.cnc.emulator")


_GARBLE = bytes.maketrans(b"0123456789,", b"##########;")


def _our_link(path: str) -> bool:
    """True for a symlink to a pseudo-terminal (what the emulator makes), never a real device link."""
    return os.path.islink(path) and os.readlink(path).startswith("/dev/pts/")


class Endpoint:
    """Serves one simulated machine on a pty (linked at ``path``) or a TCP address."""

    def __init__(self, name: str, url: str, machine: Any) -> None:
        self.name = name
        self.url = url
        self.machine = machine
        self.delay_s = 0.0  # answers are sent this late (timeouts, late answers)
        self.split = False  # answers are sent in small pieces (split lines)
        self.drop = 0.0  # share of answers never sent
        self.malformed = False  # answers are garbled (digits replaced)
        self.commands_seen = 0  # real-time commands received (!, ~, Ctrl-X)
        self.master: int | None = None
        self._keep_slave: int | None = None
        self.slave_name = ""
        self._server: asyncio.base_events.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tick: asyncio.Task | None = None
        self.received = bytearray()
        self._rng = random.Random(1)
        self._split_until = 0.0

    @property
    def is_tcp(self) -> bool:
        """True for a tcp:// endpoint."""
        return self.url.startswith("tcp://")

    async def start(self) -> None:
        """Open the pty (and link) or listen on TCP; start the clock that emits unsolicited output."""
        self._loop = asyncio.get_running_loop()
        if self.is_tcp:
            host, port = parse_tcp_url(self.url)
            self._server = await asyncio.start_server(self._client, host, port)
        else:
            self.replug()
        self._tick = asyncio.create_task(self._ticker())

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(0.05)
            self.machine.tick()
            out = getattr(self.machine, "out", None)
            if out:
                data, self.machine.out = b"".join(out), []
                self.send(data)

    # -- pty ---------------------------------------------------------------------
    def replug(self) -> None:
        """A (new) pty pair with the port path linked to its slave: the adapter is plugged in."""
        if self.master is not None or self.is_tcp:
            return
        if os.path.lexists(self.url) and not _our_link(self.url):
            raise OSError(f"{self.url} exists and is not a pseudo-terminal link: the emulator will not replace it "
                          f"(give the device a port path of its own for simulation)")
        master, slave = os.openpty()
        tty.setraw(slave)
        os.set_blocking(master, False)
        self.master, self._keep_slave = master, slave  # the kept slave fd: the master never sees a hang-up
        self.slave_name = os.ttyname(slave)
        os.makedirs(os.path.dirname(os.path.abspath(self.url)), exist_ok=True)
        tmp = f"{self.url}.{os.getpid()}.tmp"
        if os.path.lexists(tmp):
            os.unlink(tmp)
        os.symlink(self.slave_name, tmp)
        os.replace(tmp, self.url)
        assert self._loop is not None
        self._loop.add_reader(master, self._readable)
        if hasattr(self.machine, "connected"):
            self.machine.connected()

    def unplug(self) -> None:
        """Close the pty and remove the port path: the adapter is gone."""
        if self.master is None:
            return
        assert self._loop is not None
        self._loop.remove_reader(self.master)
        os.close(self.master)
        if self._keep_slave is not None:
            os.close(self._keep_slave)
        self.master = self._keep_slave = None
        if _our_link(self.url):
            os.unlink(self.url)

    def _readable(self) -> None:
        try:
            data = os.read(self.master, 4096)  # type: ignore[arg-type]
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return
        self._handle(data)

    # -- tcp ---------------------------------------------------------------------
    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        if hasattr(self.machine, "connected"):
            self.machine.connected()
        try:
            while True:
                data = await reader.read(4096)
                if not data:
                    break
                self._handle(data, writer)
        except (ConnectionError, OSError):
            pass
        finally:
            if writer in self._writers:
                self._writers.remove(writer)
            writer.close()

    async def stop_serving(self) -> None:
        """The endpoint goes away: TCP stops listening (and drops clients); a pty is unplugged."""
        if self.is_tcp:
            if self._server is not None:
                self._server.close()
                self.drop_clients()
                await self._server.wait_closed()
                self._server = None
        else:
            self.unplug()

    async def start_serving(self) -> None:
        """The endpoint comes back."""
        if self.is_tcp:
            if self._server is None:
                host, port = parse_tcp_url(self.url)
                self._server = await asyncio.start_server(self._client, host, port)
        else:
            self.replug()

    def drop_clients(self) -> None:
        """Close every TCP connection (the TCP form of an unplugged cable)."""
        for w in list(self._writers):
            w.close()
        self._writers.clear()

    # -- both --------------------------------------------------------------------
    def _handle(self, data: bytes, client: asyncio.StreamWriter | None = None) -> None:
        self.received += data[-4096:]
        del self.received[:-4096]
        self.commands_seen += sum(data.count(c) for c in (b"!", b"~", b"\x18"))
        out = self.machine.feed_bytes(data)
        if out and self.drop and self._rng.random() < self.drop:
            return
        if out and self.malformed:
            out = out.translate(_GARBLE)
        if out:  # an answer goes to the client that asked (unsolicited output, from send(), to every one)
            if self.delay_s:
                assert self._loop is not None
                self._loop.call_later(self.delay_s, self.send, out, client)
            else:
                self.send(out, client)

    def send(self, data: bytes, client: asyncio.StreamWriter | None = None) -> None:
        """Write bytes to the line, or to one TCP client (in pieces when ``split``)."""
        if self.split and len(data) > 1:
            assert self._loop is not None
            now = self._loop.time()
            t = max(now, self._split_until)  # after the pieces already scheduled: a line never interleaves
            i = 0
            while i < len(data):
                n = self._rng.randint(1, 3)
                self._loop.call_at(t, self._write, data[i:i + n], client)
                i, t = i + n, t + 0.001
            self._split_until = t
            return
        self._write(data, client)

    def _write(self, data: bytes, client: asyncio.StreamWriter | None = None) -> None:
        if self.is_tcp:
            for w in ([client] if client is not None else self._writers):
                if not w.is_closing():
                    w.write(data)
        elif self.master is not None:
            try:
                os.write(self.master, data)
            except OSError:
                pass

    async def stop(self) -> None:
        """Stop serving."""
        if self._tick is not None:
            self._tick.cancel()
            await asyncio.gather(self._tick, return_exceptions=True)
        if self._server is not None:
            self._server.close()
            self.drop_clients()
            await self._server.wait_closed()
        self.unplug()


def _seconds(text: str) -> float:
    """``200ms``, ``1.5s`` or a bare number of milliseconds, as seconds."""
    text = text.strip()
    if text.endswith("ms"):
        return float(text[:-2]) / 1000
    if text.endswith("s"):
        return float(text[:-1])
    return float(text) / 1000


class CncEmulator(Emulator):
    """One simulated controller per configured CNC device, of its dialect, at its ``port``."""

    def __init__(self, drivers: list[Driver], auto: bool = True) -> None:
        super().__init__(drivers)
        self.endpoints: dict[str, Endpoint] = {}
        for d in drivers:
            cls = GrblMachine if d.dialect == "grbl" else HaasMachine  # type: ignore[attr-defined]
            self.endpoints[d.spec.name] = Endpoint(d.spec.name, d.settings.url, cls(auto=auto))  # type: ignore[attr-defined]

    def machine(self, device: str) -> Any:
        """The simulated machine of a device."""
        return self.endpoints[device].machine

    async def start(self) -> None:
        """Serve every device."""
        for ep in self.endpoints.values():
            await ep.start()

    async def stop(self) -> None:
        """Stop serving and remove the pty links."""
        for ep in self.endpoints.values():
            await ep.stop()

    # -- fault hooks ----------------------------------------------------------------
    def unplug(self, device: str) -> None:
        """Pull the adapter (pty closed, link removed) or drop the TCP connections."""
        ep = self.endpoints[device]
        if ep.is_tcp:
            ep.drop_clients()
        else:
            ep.unplug()

    def replug(self, device: str) -> None:
        """Plug the adapter back in (a new pty under the same path)."""
        self.endpoints[device].replug()

    def alarm(self, device: str, code: int = 1) -> None:
        """Trigger an alarm (GRBL: ``ALARM:code`` sent at once)."""
        ep = self.endpoints[device]
        ep.machine.alarm(code)
        out = getattr(ep.machine, "out", None)
        if out:
            ep.machine.out = []
            ep.send(b"".join(out))

    def feed_hold(self, device: str) -> None:
        """Hold the running program."""
        self.endpoints[device].machine.feed_hold()

    def cycle_start(self, device: str) -> None:
        """Resume or start a program."""
        self.endpoints[device].machine.cycle_start()

    def start_program(self, device: str) -> None:
        """Start a program cycle."""
        self.endpoints[device].machine.start_program()

    def reset(self, device: str) -> None:
        """Reset the controller (GRBL prints its banner)."""
        ep = self.endpoints[device]
        out = ep.machine.reset()
        if out:
            ep.send(out)

    def inject_bytes(self, device: str, data: bytes) -> None:
        """Write raw bytes to the line (noise, garbage, unsolicited messages)."""
        self.endpoints[device].send(data)

    # -- the fault API of edged simulate (docs/simulate.md) ---------------------------------
    faults = frozenset({"stop", "start", "latency", "drop", "malformed", "unplug", "replug", "clear", "alarm",
                        "feed-hold", "cycle-start", "reset"})

    async def inject(self, device: str, fault: str, arg: str = "") -> None:
        """Play a fault on one machine:

        ``stop``/``start``, ``latency`` (``200ms``), ``drop`` (share), ``malformed``, ``unplug``/``replug``,
        ``clear``, and machine events ``alarm`` (code), ``feed-hold``, ``cycle-start``, ``reset``.
        """
        ep = self.endpoints[device]
        if fault == "stop":
            await ep.stop_serving()
        elif fault == "start":
            await ep.start_serving()
        elif fault == "latency":
            ep.delay_s = _seconds(arg or "500ms")
        elif fault == "drop":
            ep.drop = min(1.0, max(0.0, float(arg or 1.0)))
        elif fault == "malformed":
            ep.malformed = True
        elif fault == "unplug":
            self.unplug(device)
        elif fault == "replug":
            self.replug(device)
        elif fault == "clear":
            ep.delay_s, ep.drop, ep.malformed = 0.0, 0.0, False
        elif fault == "alarm":
            self.alarm(device, int(arg or 1))
        elif fault == "feed-hold":
            self.feed_hold(device)
        elif fault == "cycle-start":
            self.cycle_start(device)
        elif fault == "reset":
            self.reset(device)
        else:
            raise FaultUnsupported(f"the CncEmulator cannot inject {fault!r} (it supports: "
                                   f"{', '.join(sorted(self.faults))})")

    def writes_seen(self) -> dict[str, int]:
        """Real-time commands (feed hold, cycle start, reset) each machine received."""
        return {name: ep.commands_seen for name, ep in self.endpoints.items()}

    # -- values --------------------------------------------------------------------
    def set_value(self, tag: Tag, value: Any) -> None:
        """Set what the machine reports for a settable field (macros, parts, overrides, settings, texts)."""
        m = self.endpoints[tag.device].machine
        f, arg = tag.addr.field, tag.addr.arg
        if f == "macro:" and isinstance(m, HaasMachine):
            m.macros[arg] = float(value)
        elif f == "setting:" and isinstance(m, GrblMachine):
            m.settings[arg] = value
        elif f.startswith("ov.") and isinstance(m, GrblMachine):
            m.ov[["ov.feed", "ov.rapid", "ov.spindle"].index(f)] = int(value)
        elif f == "q500.parts" and isinstance(m, HaasMachine):
            m.parts = int(value)
        elif f == "q102.model" and isinstance(m, HaasMachine):
            m.model = str(value)
        elif f == "q201.tool" and isinstance(m, HaasMachine):
            m.tool = int(value)
        else:
            log.debug("emulator: %s is simulated, not settable", tag.key)

    def get_value(self, tag: Tag) -> Any:
        """What the machine holds for a settable field (None for simulated ones)."""
        m = self.endpoints[tag.device].machine
        f, arg = tag.addr.field, tag.addr.arg
        if f == "macro:" and isinstance(m, HaasMachine):
            return m.macros.get(arg, 0.0)
        if f == "setting:" and isinstance(m, GrblMachine):
            return m.settings.get(arg)
        if f == "q500.parts" and isinstance(m, HaasMachine):
            return m.parts
        if f == "status.state" and isinstance(m, GrblMachine):
            return m.state
        return None
