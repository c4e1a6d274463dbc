"""Test support: a real mosquitto broker on a free loopback port under tmp_path, optional TLS, a collector.

Use the fixtures by importing them into a test module::

    from mosquitto_support import mosquitto, mosquitto_tls, Broker, Collector  # noqa: F401

``mosquitto`` is a started plain broker (``Broker``); ``mosquitto_tls`` additionally has a TLS
listener with ``require_certificate true`` and a test PKI (``broker.pki``) generated with the
``cryptography`` package. ``Broker.stop()`` / ``Broker.start()`` restart it on the same ports with
its persistence file, so QoS-1 sessions survive. ``Collector`` is a paho subscriber in its own
thread with a persistent session that records every message it receives.
"""
from __future__ import annotations

import datetime as _dt
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pytest

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
START_TIMEOUT_S = 20.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that the OS reports free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- test PKI ---------------------------------------------------------------------------------
@dataclass(slots=True)
class Pki:
    """Paths of a test CA, a server certificate for 127.0.0.1/localhost and a client certificate."""

    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca_cert: Path  # a CA that signed nothing here (for "wrong CA" cases)


def _write_key(path: Path, key: object) -> None:
    from cryptography.hazmat.primitives import serialization

    path.write_bytes(key.private_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption()))
    path.chmod(0o600)


def _cert(subject_cn: str, key: object, issuer_cn: str, issuer_key: object, *, ca: bool,
          server: bool = False) -> object:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = _dt.datetime.now(_dt.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject_cn)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_cn)]))
        .public_key(key.public_key())  # type: ignore[attr-defined]
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _dt.timedelta(days=1))
        .not_valid_after(now + _dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                          key_encipherment=False, data_encipherment=False, key_agreement=False,
                          encipher_only=False, decipher_only=False), critical=True)
        builder = builder.add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)  # type: ignore[attr-defined]
    else:
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),  # type: ignore[attr-defined]
            critical=False)
        if server:
            builder = builder.add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())  # type: ignore[arg-type]


def make_pki(directory: Path) -> Pki:
    """Generate a CA, a server certificate (127.0.0.1, localhost) and a client certificate (CN edged)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    directory.mkdir(parents=True, exist_ok=True)

    def pem(cert: object) -> bytes:
        return cert.public_bytes(serialization.Encoding.PEM)  # type: ignore[attr-defined]

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("edged test CA", ca_key, "edged test CA", ca_key, ca=True)
    srv_key = ec.generate_private_key(ec.SECP256R1())
    srv = _cert("localhost", srv_key, "edged test CA", ca_key, ca=False, server=True)
    cli_key = ec.generate_private_key(ec.SECP256R1())
    cli = _cert("edged", cli_key, "edged test CA", ca_key, ca=False)
    other_key = ec.generate_private_key(ec.SECP256R1())
    other = _cert("unrelated CA", other_key, "unrelated CA", other_key, ca=True)
    pki = Pki(ca_cert=directory / "ca.crt", ca_key=directory / "ca.key",
              server_cert=directory / "server.crt", server_key=directory / "server.key",
              client_cert=directory / "client.crt", client_key=directory / "client.key",
              other_ca_cert=directory / "other-ca.crt")
    pki.ca_cert.write_bytes(pem(ca))
    _write_key(pki.ca_key, ca_key)
    pki.server_cert.write_bytes(pem(srv))
    _write_key(pki.server_key, srv_key)
    pki.client_cert.write_bytes(pem(cli))
    _write_key(pki.client_key, cli_key)
    pki.other_ca_cert.write_bytes(pem(other))
    return pki


# -- the broker --------------------------------------------------------------------------------
@dataclass
class Broker:
    """A mosquitto process with its config, persistence and log under one directory."""

    directory: Path
    host: str = "127.0.0.1"
    port: int = 0
    tls_port: int | None = None
    pki: Pki | None = None
    persistence: bool = True
    extra_conf: str = ""
    anonymous: bool = True
    password_file: Path | None = None  # mosquitto_passwd file; with anonymous False, clients must log in
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def conf_path(self) -> Path:
        """The generated mosquitto.conf."""
        return self.directory / "mosquitto.conf"

    @property
    def log_path(self) -> Path:
        """mosquitto's log file (stdout and stderr)."""
        return self.directory / "mosquitto.log"

    def log(self) -> str:
        """The log so far (for assertion messages)."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def _write_conf(self) -> None:
        lines = [f"listener {self.port} {self.host}", f"allow_anonymous {'true' if self.anonymous else 'false'}"]
        if self.password_file is not None:
            lines.append(f"password_file {self.password_file}")
        if os.geteuid() == 0:
            lines.append("user root")  # keep ownership of the tmp_path persistence folder
        if self.persistence:
            lines += ["persistence true", f"persistence_location {self.directory}/",
                      "persistence_file mosquitto.db", "autosave_interval 1"]
        lines += ["max_inflight_messages 0", "max_queued_messages 1000000", "max_queued_bytes 0",
                  "log_dest stdout", "log_type error", "log_type warning", "log_type notice",
                  "log_type information", "connection_messages true"]
        if self.tls_port is not None and self.pki is not None:
            lines += [f"listener {self.tls_port} {self.host}",
                      f"cafile {self.pki.ca_cert}", f"certfile {self.pki.server_cert}",
                      f"keyfile {self.pki.server_key}", "require_certificate true",
                      "use_identity_as_username false"]
        if self.extra_conf:
            lines.append(self.extra_conf)
        self.conf_path.write_text("\n".join(lines) + "\n")

    def start(self) -> "Broker":
        """Start mosquitto (choosing free ports the first time) and wait until it accepts connections."""
        if self.proc is not None and self.proc.poll() is None:
            return self
        self.directory.mkdir(parents=True, exist_ok=True)
        fresh_ports = self.port == 0
        for attempt in range(5):
            if fresh_ports:
                self.port = free_port()
                if self.pki is not None:
                    self.tls_port = free_port()
            self._write_conf()
            log = open(self.log_path, "ab")
            self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf_path)], stdout=log, stderr=log)
            log.close()
            if self._wait_ready():
                return self
            self._kill()
            if not fresh_ports:
                # restart on the same port: the old socket may linger briefly; try again
                time.sleep(0.5)
        raise RuntimeError(f"mosquitto did not start; log:\n{self.log()}")

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + START_TIMEOUT_S
        ports = [self.port] + ([self.tls_port] if self.tls_port else [])
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                return False
            ok = True
            for port in ports:
                try:
                    with socket.create_connection((self.host, port), timeout=1.0):
                        pass
                except OSError:
                    ok = False
                    break
            if ok:
                return True
            time.sleep(0.05)
        return False

    def _kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None

    def stop(self) -> None:
        """Stop mosquitto gracefully (it saves its persistence file), killing it if it hangs."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None

    def restart(self) -> None:
        """Stop and start again on the same ports."""
        self.stop()
        self.start()

    @property
    def running(self) -> bool:
        """True while the process is alive."""
        return self.proc is not None and self.proc.poll() is None


def start_broker(directory: Path, *, tls: bool = False, persistence: bool = True, extra_conf: str = "") -> Broker:
    """Create and start a broker under ``directory`` (with a TLS listener and test PKI if ``tls``)."""
    pki = make_pki(directory / "pki") if tls else None
    broker = Broker(directory=directory / "broker", pki=pki, persistence=persistence, extra_conf=extra_conf)
    if tls:
        broker.tls_port = 0
    return broker.start()


def make_password_file(path: Path, users: dict[str, str]) -> Path:
    """A mosquitto password file (hashed with mosquitto_passwd) for the given users."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    for i, (user, password) in enumerate(users.items()):
        args = ["mosquitto_passwd", "-b"] + (["-c"] if i == 0 else []) + [str(path), user, password]
        subprocess.run(args, check=True, capture_output=True, timeout=30)
    path.chmod(0o600)
    return path


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Broker]:
    """A started plain mosquitto on a free loopback port, stopped after the test."""
    broker = start_broker(tmp_path / "mosquitto")
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def mosquitto_tls(tmp_path: Path) -> Iterator[Broker]:
    """A started mosquitto with a plain listener and a TLS listener that requires client certificates."""
    broker = start_broker(tmp_path / "mosquitto", tls=True)
    try:
        yield broker
    finally:
        broker.stop()


# -- a subscriber that records everything -------------------------------------------------------
@dataclass(slots=True)
class Received:
    """One message as the collector saw it."""

    topic: str
    payload: bytes
    qos: int
    retain: bool


class Collector:
    """A paho subscriber (own network thread, persistent session, QoS 1) recording every message."""

    def __init__(self, broker: Broker, topics: str | list[str], client_id: str = "test-collector",
                 qos: int = 1) -> None:
        import paho.mqtt.client as mqtt

        self.broker = broker
        self.topics = [topics] if isinstance(topics, str) else list(topics)
        self.qos = qos
        self.messages: list[Received] = []
        self.lock = threading.Lock()
        self.connected = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=mqtt.MQTTv311, clean_session=False)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_disconnect = lambda *a, **k: self.connected.clear()
        self.client.reconnect_delay_set(0.1, 1.0)

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:  # noqa: ANN001
        if not reason_code.is_failure:
            client.subscribe([(t, self.qos) for t in self.topics])
            self.connected.set()

    def _on_message(self, client, userdata, msg) -> None:  # noqa: ANN001
        with self.lock:
            self.messages.append(Received(msg.topic, bytes(msg.payload), msg.qos, bool(msg.retain)))

    def start(self, timeout: float = 20.0) -> "Collector":
        """Connect (retrying in the background) and wait for the first successful subscription."""
        self.client.connect_async(self.broker.host, self.broker.port, keepalive=10)
        self.client.loop_start()
        if not self.connected.wait(timeout):
            raise RuntimeError(f"collector could not connect; broker log:\n{self.broker.log()}")
        time.sleep(0.1)  # let SUBACK settle before publishers start
        return self

    def stop(self) -> None:
        """Disconnect and stop the network thread."""
        self.client.disconnect()
        self.client.loop_stop()

    def snapshot(self) -> list[Received]:
        """A copy of the messages received so far."""
        with self.lock:
            return list(self.messages)

    def wait_for(self, predicate, timeout: float = 60.0, interval: float = 0.05) -> bool:  # noqa: ANN001
        """Poll ``predicate(messages)`` until it is true (returns True) or the timeout ends (False)."""
        deadline = time.monotonic() + timeout
        while True:
            if predicate(self.snapshot()):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(interval)

    def __enter__(self) -> "Collector":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
