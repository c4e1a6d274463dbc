"""edged/transport/stream.py over real pty pairs and TCP, and a minimal line-protocol driver built on it,
run by a real DeviceRunner: the driver contract fits a serial line protocol, including an unplugged adapter."""
from __future__ import annotations

import asyncio
import os
import time
import tty
from pathlib import Path
from typing import Any

import pytest

from daemon_support import until
from edged.cell import Device, ScanSpec
from edged.device import DeviceRunner, DeviceState
from edged.driver import DeviceSpec, Driver
from edged.errors import DeviceUnavailable, ReadFailed
from edged.schema import Section
from edged.tag import DataType, Quality, Reading, Tag
from edged.transport.stream import (SharedPorts, StreamClosed, StreamSettings, open_stream, parse_tcp_url)


class Pty:
    """A pty pair whose slave is reachable through a stable symlink (like /dev/serial/by-id)."""

    def __init__(self, link: Path) -> None:
        self.link = link
        self.master: int | None = None
        self.plug()

    def plug(self) -> None:
        master, slave = os.openpty()
        tty.setraw(slave)
        name = os.ttyname(slave)
        os.close(slave)
        os.set_blocking(master, False)
        self.master = master
        if self.link.is_symlink():
            self.link.unlink()
        self.link.symlink_to(name)

    def unplug(self) -> None:
        if self.master is not None:
            os.close(self.master)
            self.master = None
        if self.link.is_symlink():
            self.link.unlink()

    async def read(self, n: int, timeout: float = 10.0) -> bytes:
        """Read exactly n bytes from the master side."""
        out = b""
        end = time.monotonic() + timeout
        while len(out) < n:
            try:
                out += os.read(self.master, n - len(out))  # type: ignore[arg-type]
            except (BlockingIOError, OSError):
                assert time.monotonic() < end, f"only {out!r} arrived"
                await asyncio.sleep(0.01)
        return out


async def test_serial_stream_on_a_pty_with_every_line_setting(tmp_path: Path) -> None:
    """7E2 with XON/XOFF, RTS/CTS and DTR/RTS lines opens on a pty (which ignores them); bytes go both ways."""
    pty = Pty(tmp_path / "ttyV0")
    settings = StreamSettings(str(pty.link), baudrate=9600, bytesize=7, parity="E", stopbits=2, xonxoff=True,
                              rtscts=True, dtr=False, rts=True)
    stream = await open_stream(settings, 1.0)
    try:
        stream.write(b"?Q100\r\n")
        await stream.drain()
        assert await pty.read(7) == b"?Q100\r\n"
        os.write(pty.master, b"hello")  # type: ignore[arg-type]
        got = b""
        while len(got) < 5:
            got += await asyncio.wait_for(stream.read(), 5)
        assert got == b"hello"
        assert "7E2 xonxoff rtscts" in settings.describe()
    finally:
        stream.close()
        pty.unplug()


async def test_a_lost_line_is_stream_closed_and_an_absent_port_is_file_not_found(tmp_path: Path) -> None:
    """Closing the pty master (an unplugged adapter) ends reads with StreamClosed; reopening by the
    stable path fails while it is absent and works once a new pty is linked there."""
    pty = Pty(tmp_path / "ttyV1")
    settings = StreamSettings(str(pty.link))
    stream = await open_stream(settings, 1.0)
    pty.unplug()
    with pytest.raises(StreamClosed):
        await asyncio.wait_for(stream.read(), 5)
    with pytest.raises(StreamClosed):
        stream.write(b"x")
    stream.close()
    with pytest.raises(FileNotFoundError):
        await open_stream(settings, 1.0)
    pty.plug()
    again = await open_stream(settings, 1.0)
    again.write(b"ok")
    assert await pty.read(2) == b"ok"
    again.close()
    pty.unplug()


async def test_tcp_stream(tmp_path: Path) -> None:
    """tcp://host:port: bytes both ways; the peer closing is StreamClosed."""
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.read(100)
        writer.write(data.upper())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    stream = await open_stream(StreamSettings(f"tcp://127.0.0.1:{port}"), 2.0)
    stream.write(b"abc")
    await stream.drain()
    got = b""
    with pytest.raises(StreamClosed):
        while True:
            got += await asyncio.wait_for(stream.read(), 5)
    assert got == b"ABC"
    stream.close()
    server.close()
    await server.wait_closed()


@pytest.mark.parametrize("url", ["tcp://", "tcp://host", "tcp://host:0", "tcp://host:99999", "tcp://:80",
                                 "tcp://a b:1", "serial:1"])
def test_bad_tcp_urls(url: str) -> None:
    """Malformed tcp:// addresses are refused with the expected form."""
    with pytest.raises(ValueError, match="tcp://HOST:PORT"):
        parse_tcp_url(url)


def test_shared_ports_share_one_setting_and_refuse_another() -> None:
    """Users of one port share it with the same settings; other settings are refused; the last release frees it."""
    reg = SharedPorts()
    a = reg.claim(StreamSettings("/dev/ttyS9", baudrate=9600))
    b = reg.claim(StreamSettings("/dev/ttyS9", baudrate=9600))
    assert a is b and a.users == 2
    with pytest.raises(ValueError, match="9600"):
        reg.claim(StreamSettings("/dev/ttyS9", baudrate=19200))
    reg.release(a)
    reg.release(b)
    assert reg.claim(StreamSettings("/dev/ttyS9", baudrate=19200)).settings.baudrate == 19200


# -- a minimal line-protocol driver on the contract -------------------------------------------------
class LineDriver(Driver):
    """Sends ``GET name`` and expects ``name=value``: the smallest request/response line driver."""

    kind = "line-test"

    def __init__(self, spec: DeviceSpec, tags: list[Tag], port: str) -> None:
        super().__init__(spec, tags)
        self.port = port
        self.stream: Any = None
        self._buf = b""

    @classmethod
    def parse_tag(cls, section: Section, dtype: DataType | None) -> tuple[Any, DataType] | None:
        return section.get_str("address"), DataType.INT32

    @classmethod
    def from_config(cls, spec: DeviceSpec, section: Section, tags: list[Tag]) -> "LineDriver":
        return cls(spec, tags, section.get_str("port"))

    async def connect(self) -> None:
        try:
            self.stream = await open_stream(StreamSettings(self.port, baudrate=19200), self.spec.timeout_s)
        except OSError as exc:
            raise DeviceUnavailable(str(exc)) from None
        self._buf = b""

    async def _line(self) -> bytes:
        while b"\n" not in self._buf:
            self._buf += await self.stream.read()
        line, _, self._buf = self._buf.partition(b"\n")
        return line

    async def read(self, group: str) -> list[Reading]:
        out = []
        for t in self.tags:
            try:
                self.stream.write(f"GET {t.addr}\n".encode())
                async with asyncio.timeout(self.spec.timeout_s):
                    line = await self._line()
            except (StreamClosed, TimeoutError) as exc:
                raise DeviceUnavailable(f"line lost: {exc}") from None
            name, _, value = line.decode().partition("=")
            if name != t.addr or not value.isdigit():
                raise ReadFailed(f"unexpected answer {line!r}", kind="malformed")
            out.append(Reading(t, int(value), Quality.GOOD, time.time_ns()))
        return out

    async def close(self) -> None:
        if self.stream is not None:
            self.stream.close()
            self.stream = None


async def _serve(pty: Pty, values: dict[str, int], stop: asyncio.Event) -> None:
    """Answer GET lines on the master side of whatever pty is plugged in."""
    buf = b""
    while not stop.is_set():
        await asyncio.sleep(0.005)
        if pty.master is None:
            buf = b""
            continue
        try:
            buf += os.read(pty.master, 4096)
        except (BlockingIOError, OSError):
            continue
        while b"\n" in buf:
            line, _, buf = buf.partition(b"\n")
            name = line.decode().removeprefix("GET ")
            values[name] += 1
            os.write(pty.master, f"{name}={values[name]}\n".encode())


async def test_line_driver_under_a_device_runner_survives_an_unplugged_adapter(tmp_path: Path) -> None:
    """A DeviceRunner polls the line driver; unplugging takes the device down, re-plugging (a new pty
    under the same stable path) brings it back up with fresh values."""
    pty = Pty(tmp_path / "by-id-usb0")
    spec = DeviceSpec("dev", "line-test", timeout_s=0.5, backoff_initial_s=0.05, backoff_max_s=0.2)
    tags = [Tag("dev", "a", "a", DataType.INT32, "fast", addr="a"), Tag("dev", "b", "b", DataType.INT32, "fast",
                                                                             addr="b")]
    driver = LineDriver(spec, tags, str(pty.link))
    got: list[Reading] = []
    runner = DeviceRunner(Device(spec, driver, tags), {"fast": ScanSpec("fast", 0.05)}, got.extend)
    values = {"a": 0, "b": 100}
    stop = asyncio.Event()
    server = asyncio.create_task(_serve(pty, values, stop))
    task = asyncio.create_task(runner.run())
    try:
        await until(lambda: sum(1 for r in got if r.quality is Quality.GOOD) >= 6)
        assert runner.state is DeviceState.UP
        pty.unplug()
        await until(lambda: runner.state is DeviceState.DOWN)
        assert got[-1].quality is Quality.BAD
        before = len(got)
        pty.plug()
        await until(lambda: runner.state is DeviceState.UP and any(r.quality is Quality.GOOD for r in got[before:]))
        good = [r.value for r in got[before:] if r.quality is Quality.GOOD and r.tag.name == "b"]
        assert good and good[0] > 100
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await runner.stop()
        stop.set()
        await server
        pty.unplug()


async def test_writes_never_block_when_the_line_does_not_drain(tmp_path: Path) -> None:
    """A peer that does not read: writes queue without blocking the loop; they drain once it reads; a
    line that never drains is given up as lost instead of growing without bound."""
    from edged.transport import stream as st

    pty = Pty(tmp_path / "ttyV2")
    s = await open_stream(StreamSettings(str(pty.link)), 1.0)
    try:
        chunk = b"G1 X1 Y1 F100\n" * 100
        for _ in range(150):  # 210 kB, far more than a pty buffers (64 kB + 4 kB)
            s.write(chunk)
        drained = asyncio.create_task(s.drain())
        await asyncio.sleep(0.05)
        assert not drained.done()  # queued, and the loop kept running meanwhile
        got = await pty.read(len(chunk) * 150, timeout=20)
        assert got == chunk * 150
        await asyncio.wait_for(drained, 10)
        with pytest.raises(StreamClosed, match="does not take data"):
            for _ in range(4 * st.MAX_WRITE_BUFFER // len(chunk)):
                s.write(chunk)
    finally:
        s.close()
        pty.unplug()
