"""MQTT connection settings shared by the MQTT and Sparkplug sinks: parsing, client factory, clear errors.

Secrets never live in the cell file: the password comes from ``password_file`` or ``password_env``
and is read when connecting (so a rotated secret is picked up on reconnect); it is never logged.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt

from edged.backoff import backoff_delays
from edged.schema import Section
from edged.secrets import read_secret_file

DEFAULT_PORT = 1883
DEFAULT_TLS_PORT = 8883
PROTOCOLS = {"3.1.1": aiomqtt.ProtocolVersion.V311, "5": aiomqtt.ProtocolVersion.V5}
SESSION_EXPIRY_S = 7 * 86400


@dataclass(slots=True)
class MqttConnection:
    """Where and how to connect to a broker (no secret values are stored here)."""

    host: str
    port: int
    client_id: str
    keepalive_s: int = 30
    tls: bool = False
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_insecure: bool = False
    username: str | None = None
    password_file: str | None = None
    password_env: str | None = None
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    protocol: str = "3.1.1"
    connect_timeout_s: float = 10.0

    def password(self) -> str | None:
        """Read the password from its file or environment variable; raise ConnectionError saying why not."""
        if self.password_file:
            try:
                return read_secret_file(self.password_file)  # $CREDENTIALS_DIRECTORY first (LoadCredential=)
            except OSError as exc:
                raise ConnectionError(f"cannot read password_file {self.password_file}: "
                                      f"{exc.strerror or type(exc).__name__}") from None
        if self.password_env:
            value = os.environ.get(self.password_env)
            if value is None:
                raise ConnectionError(f"environment variable {self.password_env} (password_env) is not set")
            return value
        return None

    def describe(self) -> str:
        """host:port with the scheme, for logs."""
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


def parse_connection(sec: Section, default_client_id: str) -> MqttConnection:
    """Read the connection keys of a sink table (host, port, client_id, keepalive_s, tls_*, username,
    password_file/password_env, backoff_initial_s, backoff_max_s, protocol, connect_timeout_s)."""
    if sec.has("password"):
        sec.raw("password")
        sec.error("password", "a password must not be written in the cell file: put it in a file readable "
                              "only by edged (password_file = \"/etc/edged/mqtt.pass\") or in an environment "
                              "variable (password_env = \"EDGED_MQTT_PASSWORD\")")
    host = sec.get_str("host", "127.0.0.1") or "127.0.0.1"
    tls_ca = sec.get_str("tls_ca", None)
    tls_cert = sec.get_str("tls_cert", None)
    tls_key = sec.get_str("tls_key", None)
    tls = sec.get_bool("tls", bool(tls_ca or tls_cert))
    if tls is None:
        tls = False
    if (tls_cert is None) != (tls_key is None):
        sec.error("tls_key" if tls_key is None else "tls_cert",
                  "expected tls_cert and tls_key together (client certificate and its private key)")
    if (tls_cert or tls_ca) and sec.has("tls") and not tls:
        sec.error("tls", "expected tls = true when tls_ca or tls_cert is set, found false")
    for key, path in (("tls_ca", tls_ca), ("tls_cert", tls_cert), ("tls_key", tls_key)):
        if path is not None and not Path(path).is_absolute():
            sec.error(key, f"expected an absolute file path, found {path!r}")
    port = sec.get_int("port", DEFAULT_TLS_PORT if tls else DEFAULT_PORT, min=1, max=65535)
    client_id = sec.get_str("client_id", default_client_id) or default_client_id
    if len(client_id.encode()) > 65535 or any(c in client_id for c in "#+/"):
        sec.error("client_id", f"expected a client id without '/', '+' or '#', found {client_id!r}")
    password_file = sec.get_str("password_file", None)
    password_env = sec.get_str("password_env", None)
    if password_file is not None and password_env is not None:
        sec.error("password_env", "expected either password_file or password_env, not both")
    if password_file is not None and not Path(password_file).is_absolute():
        sec.error("password_file", f"expected an absolute file path, found {password_file!r}")
    username = sec.get_str("username", None)
    if (password_file or password_env) and username is None:
        sec.error("username", "missing required key (a password needs a username)")
    conn = MqttConnection(
        host=host, port=port or DEFAULT_PORT, client_id=client_id,
        keepalive_s=sec.get_int("keepalive_s", 30, min=5, max=65535) or 30,
        tls=bool(tls), tls_ca=tls_ca, tls_cert=tls_cert, tls_key=tls_key,
        tls_insecure=bool(sec.get_bool("tls_insecure", False)),
        username=username, password_file=password_file, password_env=password_env,
        backoff_initial_s=sec.get_float("backoff_initial_s", 0.5, min=0.01, max=600.0) or 0.5,
        backoff_max_s=sec.get_float("backoff_max_s", 30.0, min=0.1, max=3600.0) or 30.0,
        protocol=sec.get_str("protocol", "3.1.1", choices=list(PROTOCOLS)) or "3.1.1",
        connect_timeout_s=sec.get_float("connect_timeout_s", 10.0, min=0.5, max=300.0) or 10.0,
    )
    if conn.backoff_max_s < conn.backoff_initial_s:
        sec.error("backoff_max_s", f"expected at least backoff_initial_s ({conn.backoff_initial_s}), "
                                   f"found {conn.backoff_max_s}")
    return conn


class ConnectFailed(aiomqtt.MqttError):
    """A connection attempt failed; the message is clear and free of secrets."""


class _ErrorRecorder(logging.Handler):
    """Keeps the last error paho logged for one client (e.g. the TLS alert that closed the socket)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.last: str = ""

    def emit(self, record: logging.LogRecord) -> None:
        """Record the message of a warning or error."""
        with contextlib.suppress(Exception):
            self.last = record.getMessage()


class Client(aiomqtt.Client):
    """aiomqtt.Client that fails fast with the real cause when the broker drops the socket before CONNACK
    (e.g. a TLS 1.3 broker rejecting a missing client certificate), instead of waiting for the timeout."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._errors = _ErrorRecorder()
        paho_log = logging.Logger("edged.mqtt.paho")  # private logger: paho's errors are reported by us
        paho_log.addHandler(self._errors)
        super().__init__(*args, logger=paho_log, **kwargs)
        self._early_drop: asyncio.Future[None] = self._loop.create_future()

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason_code: Any,
                       properties: Any = None) -> None:
        if not self._connected.done() and not self._early_drop.done():
            detail = self._errors.last or f"the broker closed the connection before accepting it ({reason_code})"
            self._early_drop.set_exception(ConnectionError(detail))
        super()._on_disconnect(client, userdata, flags, reason_code, properties)

    async def __aenter__(self) -> "Client":
        enter = asyncio.ensure_future(super().__aenter__())
        try:
            done, _ = await asyncio.wait({enter, self._early_drop}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            enter.cancel()
            self._abandon()
            raise
        if enter in done:
            try:
                return enter.result()  # type: ignore[return-value]
            except Exception as exc:
                cause: BaseException = exc
                if self._early_drop.done() and self._early_drop.exception() is not None:
                    cause = self._early_drop.exception()  # type: ignore[assignment]
                raise ConnectFailed(describe_connect_error(cause)) from exc
        enter.cancel()
        with contextlib.suppress(BaseException):
            await enter
        cause = self._early_drop.exception()  # type: ignore[assignment]
        self._abandon()
        raise ConnectFailed(describe_connect_error(cause)) from cause

    def _abandon(self) -> None:
        """Close the socket of a failed attempt (this client object is not reused)."""
        sock = self._client.socket()
        if sock is not None:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(sock.fileno())
                self._loop.remove_writer(sock.fileno())
            with contextlib.suppress(Exception):
                sock.close()
        if self._lock.locked():
            self._lock.release()


def make_client(conn: MqttConnection, will: aiomqtt.Will | None = None, clean_start: bool = False) -> aiomqtt.Client:
    """Build a client for one connection attempt (persistent session unless clean_start); call in a loop.

    Raises ConnectionError when the password cannot be read.
    """
    tls_params = None
    if conn.tls:
        tls_params = aiomqtt.TLSParameters(ca_certs=conn.tls_ca, certfile=conn.tls_cert, keyfile=conn.tls_key,
                                           cert_reqs=ssl.CERT_REQUIRED, tls_version=ssl.PROTOCOL_TLS_CLIENT)
    protocol = PROTOCOLS[conn.protocol]
    kwargs: dict[str, Any] = {}
    if protocol is aiomqtt.ProtocolVersion.V5:
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 0 if clean_start else SESSION_EXPIRY_S
        kwargs["properties"] = props
        kwargs["clean_start"] = clean_start
    else:
        kwargs["clean_session"] = clean_start
    password = conn.password()
    client = Client(
        conn.host, conn.port, identifier=conn.client_id, username=conn.username, password=password,
        protocol=protocol, will=will, keepalive=conn.keepalive_s, timeout=conn.connect_timeout_s,
        tls_params=tls_params, tls_insecure=conn.tls_insecure if conn.tls else None,
        max_inflight_messages=65535, max_queued_outgoing_messages=0,
        # no Nagle delay: a PUBACK followed by a small response would otherwise wait for the peer's delayed ACK
        socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)], **kwargs,
    )
    client.pending_calls_threshold = 1 << 30  # many QoS-1 publishes in flight is the design, not a problem
    return client


_HINTS = (
    ("certificate required", "TLS handshake failed: the broker requires a client certificate (set tls_cert and tls_key)"),
    ("certificate_required", "TLS handshake failed: the broker requires a client certificate (set tls_cert and tls_key)"),
    ("handshake failure", "TLS handshake failed: the broker rejected the handshake (client certificate missing or not accepted?)"),
    ("unknown ca", "TLS handshake failed: the broker does not trust our client certificate (unknown CA)"),
    ("bad certificate", "TLS handshake failed: the broker rejected our client certificate"),
    ("certificate verify failed", "TLS handshake failed: the broker's certificate could not be verified against tls_ca"),
    ("hostname mismatch", "TLS handshake failed: the broker's certificate does not match the host name"),
    ("wrong version number", "TLS handshake failed: the port does not speak TLS (wrong port?)"),
    ("connection refused", "connection refused (is the broker running and listening on this port?)"),
    ("timed out", "timed out waiting for the broker"),
    ("name or service not known", "the broker host name cannot be resolved"),
    ("temporary failure in name resolution", "the broker host name cannot be resolved"),
    ("no route to host", "no route to the broker host"),
    ("network is unreachable", "the network is unreachable"),
    ("bad user name or password", "the broker refused the username or password"),
    ("bad username or password", "the broker refused the username or password"),
    ("not authorized", "the broker refused the connection: not authorised"),
    ("not authorised", "the broker refused the connection: not authorised"),
)


def describe_connect_error(exc: BaseException) -> str:
    """A clear, secret-free message for a failed connection attempt."""
    seen: set[int] = set()
    chain: list[BaseException] = []
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        chain.append(e)
        e = e.__cause__ or e.__context__
    for e in chain:
        if isinstance(e, ConnectFailed) and e.args:
            return str(e.args[0])
    text = " | ".join(f"{type(e).__name__}: {e}" for e in chain).lower()
    for needle, message in _HINTS:
        if needle in text:
            return message
    for e in chain:
        if isinstance(e, aiomqtt.MqttCodeError) and e.rc is not None:
            return f"the broker refused the connection: {e}"
        if isinstance(e, ssl.SSLError):
            return f"TLS error: {e.reason or e}"
        if isinstance(e, OSError) and e.strerror:
            return e.strerror
        if isinstance(e, ConnectionError) and e.args:
            return str(e.args[0])
    first = chain[0]
    return f"{type(first).__name__}: {first}" if str(first) else type(first).__name__


__all__ = ["MqttConnection", "parse_connection", "make_client", "describe_connect_error", "ConnectFailed",
           "backoff_delays"]
