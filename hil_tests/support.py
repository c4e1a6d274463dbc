"""What the HIL suite runs beside the cell: the daemon, a mosquitto broker and a Prometheus server, all on loopback."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 30.0) -> bool:
    """True once something accepts connections on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.05)
    return False


class Process:
    """A subprocess whose output lines are collected by reader threads."""

    def __init__(self, args: list[str], cwd: Path, env: dict[str, str] | None = None) -> None:
        self.args = args
        self.p = subprocess.Popen(args, cwd=cwd, env=dict(os.environ, PYTHONUNBUFFERED="1", **(env or {})),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        for stream in (self.p.stdout, self.p.stderr):
            threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream: Any) -> None:
        for line in stream:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        """Everything printed so far."""
        return "\n".join(self.lines)

    def wait_for(self, text: str, timeout: float = 60.0) -> str | None:
        """The first output line containing text, or None after the timeout (or when the process ended)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if text in line:
                    return line
            if self.p.poll() is not None:
                time.sleep(0.2)
                return next((line for line in self.lines if text in line), None)
            time.sleep(0.05)
        return None

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM, then SIGKILL after the timeout; the exit code."""
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        return self.p.returncode


def edged_args(*args: str) -> list[str]:
    """The command line of an edged sub-command run with this Python."""
    return [sys.executable, "-m", "edged", *args]


# -- metrics ------------------------------------------------------------------------------------
def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Parse a /metrics page into {(name, sorted labels): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url, timeout=10) as r:
        text = r.read().decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def metric(samples: dict, name: str, **labels: str) -> float:
    """The sum of a metric's samples whose labels include the given ones (0 when none)."""
    total = 0.0
    for (n, lbls), v in samples.items():
        if n == name and all(dict(lbls).get(k) == val for k, val in labels.items()):
            total += v
    return total


class Prometheus:
    """A real Prometheus server scraping one target every second (Debian package `prometheus`)."""

    BINARY = shutil.which("prometheus") or "/usr/bin/prometheus"

    def __init__(self, workdir: Path, target: str) -> None:
        self.dir = workdir / "prometheus"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        cfg = self.dir / "prometheus.yml"
        cfg.write_text("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n"
                       f"  - job_name: edged\n    static_configs:\n      - targets: ['{target}']\n")
        self.proc = Process([self.BINARY, f"--config.file={cfg}", f"--storage.tsdb.path={self.dir / 'data'}",
                             f"--web.listen-address=127.0.0.1:{self.port}"], cwd=self.dir)

    @classmethod
    def available(cls) -> bool:
        """True when the prometheus binary is installed."""
        return os.access(cls.BINARY, os.X_OK)

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query through the HTTP API; the result vector."""
        url = f"http://127.0.0.1:{self.port}/api/v1/query?query={urllib.parse.quote(expr)}"
        with urllib.request.urlopen(url, timeout=10) as r:
            body = json.loads(r.read())
        if body.get("status") != "success":
            raise RuntimeError(f"prometheus query {expr!r} failed: {body}")
        return body["data"]["result"]

    def stop(self) -> None:
        """Stop the server."""
        self.proc.stop()


class Broker:
    """A mosquitto broker on a free loopback port, and a subscriber that counts every sample it receives."""

    BINARY = shutil.which("mosquitto") or "/usr/sbin/mosquitto"

    def __init__(self, workdir: Path) -> None:
        self.dir = workdir / "mosquitto"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        conf = self.dir / "mosquitto.conf"
        conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
        self.proc = Process([self.BINARY, "-c", str(conf)], cwd=self.dir)
        if not wait_port(self.port):
            raise RuntimeError(f"mosquitto did not start: {self.proc.output}")
        self.samples: list[tuple[str, str, int]] = []  # (device, tag, ts_ns)
        self.gaps = 0
        self._client: Any = None

    @classmethod
    def available(cls) -> bool:
        """True when mosquitto is installed."""
        return os.access(cls.BINARY, os.X_OK)

    def subscribe(self, cell: str) -> None:
        """Count every sample published under the cell's topics (QoS 1)."""
        import paho.mqtt.client as mqtt

        from edged.sinks.mqtt import samples_of

        def on_message(_c: Any, _u: Any, msg: Any) -> None:
            try:
                body = json.loads(msg.payload)
            except ValueError:
                return
            if not isinstance(body, dict):
                return
            if "gaps" in body:
                self.gaps += sum(int(g.get("count", 0)) for g in body["gaps"])
            if "samples" in body:
                for s in samples_of(body):
                    self.samples.append((s.get("device", body.get("device", "")), s.get("tag", body.get("tag", "")),
                                         int(s.get("ts_ns", 0))))

        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="hil-counter")
        c.on_message = on_message
        c.on_connect = lambda cl, *_a: cl.subscribe(f"{cell}/#", qos=1)
        c.connect("127.0.0.1", self.port)
        c.loop_start()
        self._client = c

    def stop(self) -> None:
        """Stop the subscriber and the broker."""
        if self._client is not None:
            self._client.loop_stop()
            self._client.disconnect()
        self.proc.stop()
