"""Helpers for tests that run edged as a real subprocess: start, wait for output, scrape and parse metrics."""
from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Callable


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proc:
    """An edged subprocess whose stdout and stderr are collected by reader threads."""

    def __init__(self, args: list[str], cwd: Path, env: dict[str, str] | None = None) -> None:
        full_env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
        self.args = args
        self.p = subprocess.Popen([sys.executable, "-m", "edged", *args], cwd=cwd, env=full_env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.out: list[str] = []
        self.err: list[str] = []
        self._threads = [threading.Thread(target=self._pump, args=(self.p.stdout, self.out), daemon=True),
                         threading.Thread(target=self._pump, args=(self.p.stderr, self.err), daemon=True)]
        for t in self._threads:
            t.start()

    @staticmethod
    def _pump(stream, sink: list[str]) -> None:
        for line in stream:
            sink.append(line.rstrip("\n"))

    @property
    def stdout(self) -> str:
        return "\n".join(self.out)

    @property
    def stderr(self) -> str:
        return "\n".join(self.err)

    def wait_for(self, pattern: str, timeout: float = 30.0, stream: str = "out") -> re.Match[str]:
        """Wait until a line matching the regex appears; fail with the output when it does not."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.out if stream == "out" else self.err):
                m = rx.search(line)
                if m:
                    return m
            if self.p.poll() is not None and time.monotonic() > deadline - timeout + 1:
                time.sleep(0.2)
                for line in list(self.out if stream == "out" else self.err):
                    if rx.search(line):
                        return rx.search(line)  # type: ignore[return-value]
                raise AssertionError(f"edged {self.args} exited {self.p.returncode} before {pattern!r}:\n"
                                     f"{self.stdout}\n{self.stderr}")
            time.sleep(0.05)
        raise AssertionError(f"no {pattern!r} within {timeout}s from edged {self.args}:\n{self.stdout}\n{self.stderr}")

    def wait(self, timeout: float = 60.0) -> int:
        """Wait for a one-shot command to exit by itself; returns the exit code."""
        try:
            self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait(5)
            raise AssertionError(f"edged {self.args} did not exit within {timeout}s:\n{self.stdout}\n{self.stderr}")
        for t in self._threads:
            t.join(2)
        return self.p.returncode

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        """Signal the process and wait for it to exit; returns the exit code."""
        if self.p.poll() is None:
            self.p.send_signal(sig)
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(5)
        for t in self._threads:
            t.join(2)
        return self.p.returncode


def scrape(url: str) -> str:
    """GET a metrics page."""
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.read().decode()


def metric(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample in a Prometheus exposition, or None."""
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        m = re.match(r"^([a-zA-Z_:][\w:]*)(\{(.*)\})? (\S+)", line)
        if not m or m.group(1) != name:
            continue
        got = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
        if all(got.get(k) == v for k, v in labels.items()):
            return float(m.group(4))
    return None


def eventually(check: Callable[[], object], timeout: float = 30.0, interval: float = 0.1, what: str = "") -> object:
    """Poll until check() returns a truthy value; fail after timeout."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except Exception as exc:  # keep polling through transient errors (e.g. server not up yet)
            last = exc
        if last and not isinstance(last, Exception):
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what or check}: last={last!r}")


async def until(cond: Callable[[], object], timeout: float = 30.0) -> None:
    """In a coroutine: poll a condition until it holds (the timeout only bounds a failure, it is no timing check)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        assert loop.time() < end, "condition not reached"
        await asyncio.sleep(0.02)
