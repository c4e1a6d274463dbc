"""Open a fresh asyncua Client with edged's security rules (endpoint choice, server trust, identity)."""
from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from .security import POLICIES, Pki, UntrustedServer, check_server_cert, default_application_uri, \
    generate_client_cert, read_password

log = logging.getLogger("edged.drivers.opcua")


class ConnectFailed(Exception):
    """A connection could not be opened; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class Connection:
    """How to reach and authenticate to one server (the device keys, resolved to absolute paths)."""

    endpoint: str
    timeout_s: float = 2.0
    session_timeout_s: float = 60.0
    security_policy: str = "Basic256Sha256"
    security_mode: str = "SignAndEncrypt"
    pki: Path = Path("pki")
    certificate: Path | None = None
    private_key: Path | None = None
    application_uri: str = field(default_factory=default_application_uri)
    auto_trust_first: bool = False
    username: str | None = None
    password_file: str | None = None
    password_env: str | None = None

    @property
    def secure(self) -> bool:
        """True unless the security policy is None."""
        return self.security_policy != "None"

    @property
    def cert_file(self) -> Path:
        """The client certificate file (configured, or the PKI's own certificate)."""
        return self.certificate or Pki(self.pki).own_cert

    @property
    def key_file(self) -> Path:
        """The client private key file (configured, or the PKI's own key)."""
        return self.private_key or Pki(self.pki).own_key

    def host_port(self) -> tuple[str, int]:
        """Host and port of the endpoint URL (port 4840 when absent)."""
        u = urlparse(self.endpoint)
        return u.hostname or "", u.port or 4840


def _policy_class(name: str) -> Any:
    from asyncua.crypto import security_policies

    return getattr(security_policies, POLICIES[name])


def _first_cert(der: bytes) -> bytes:
    """The first certificate of a DER chain (servers may send their chain)."""
    if len(der) < 4 or der[0] != 0x30 or der[1] != 0x82:
        return der
    return der[:int.from_bytes(der[2:4], "big") + 4]


async def open_client(conn: Connection, on_lost: Any = None) -> tuple[Any, str]:
    """Connect a new Client (never a reused one); returns it and a note for the log (e.g. auto-trust).

    Raises ConnectFailed with a message naming the cause (unreachable, no matching endpoint,
    untrusted server certificate with the command that trusts it, refused identity).
    """
    from asyncua import Client, ua
    from asyncua.crypto import uacrypto

    note = ""
    client = Client(conn.endpoint, timeout=conn.timeout_s, watchdog_intervall=max(1.0, conn.timeout_s))
    client.name = "edged"
    client.description = "edged"
    client.application_uri = conn.application_uri
    client.product_uri = "urn:edged"
    client.session_timeout = int(conn.session_timeout_s * 1000)
    try:
        if conn.secure:
            note = await _setup_security(client, conn)
        if conn.username is not None:
            client.set_user(conn.username)
            try:
                pwd = read_password(conn.password_file, conn.password_env)
            except OSError as exc:
                raise ConnectFailed(f"cannot read the password: {exc.strerror or exc}") from None
            if pwd is not None:
                client.set_password(pwd)
        if on_lost is not None:
            client.connection_lost_callback = on_lost
        await asyncio.wait_for(client.connect(), conn.timeout_s * 3)
    except ConnectFailed:
        await _drop(client)
        raise
    except (OSError, asyncio.TimeoutError, TimeoutError) as exc:
        await _drop(client)
        raise ConnectFailed(f"cannot connect to {conn.endpoint}: {exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__ if not str(exc) else exc}") from None
    except ua.UaStatusCodeError as exc:
        await _drop(client)
        name = type(exc).__name__
        hint = ""
        if "Certificate" in name or "Security" in name:
            hint = (f" (the server refused edged's certificate {conn.cert_file}: trust it on the server, e.g. "
                    "copy it into the server's trusted folder)")
        elif "Identity" in name or "UserAccess" in name:
            hint = " (check username and password)"
        raise ConnectFailed(f"{conn.endpoint} refused the session: {name}{hint}") from None
    except Exception as exc:  # asyncua raises assorted errors on malformed answers
        await _drop(client)
        raise ConnectFailed(f"cannot connect to {conn.endpoint}: {exc!r}") from None
    _ = uacrypto
    return client, note


async def _setup_security(client: Any, conn: Connection) -> str:
    """Pick the endpoint of the policy and mode, check the server certificate against the PKI, load ours."""
    from asyncua import ua

    pki = Pki(conn.pki)
    note = ""
    cert, key = conn.cert_file, conn.key_file
    if not cert.exists() or not key.exists():
        if conn.certificate is None and conn.private_key is None:
            pki.create()
            desc = await asyncio.to_thread(generate_client_cert, cert, key, conn.application_uri)
            note = f"created the client certificate {cert} ({desc})"
        else:
            missing = cert if not cert.exists() else key
            raise ConnectFailed(f"the client certificate or key {missing} does not exist; create them with: "
                                f"edged opcua gen-cert --cert \"{cert}\" --key \"{key}\"")
    try:
        endpoints = await asyncio.wait_for(client.connect_and_get_server_endpoints(), conn.timeout_s * 2)
    except (OSError, asyncio.TimeoutError, TimeoutError) as exc:
        raise ConnectFailed(f"cannot connect to {conn.endpoint}: {exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__}") from None
    policy = _policy_class(conn.security_policy)
    mode = getattr(ua.MessageSecurityMode, conn.security_mode)
    match = [e for e in endpoints if e.SecurityPolicyUri == policy.URI and e.SecurityMode == mode]
    if not match:
        offered = sorted({f"{e.SecurityPolicyUri.rsplit('#', 1)[-1]}/{e.SecurityMode.name}" for e in endpoints})
        raise ConnectFailed(f"{conn.endpoint} offers no endpoint with {conn.security_policy}/{conn.security_mode} "
                            f"(it offers: {', '.join(offered) or 'none'})")
    server_der = _first_cert(match[0].ServerCertificate or b"")
    if not server_der:
        raise ConnectFailed(f"{conn.endpoint} sent no server certificate for {conn.security_policy}")
    try:
        trusted_note = check_server_cert(pki, server_der, conn.endpoint, conn.auto_trust_first)
    except UntrustedServer as exc:
        raise ConnectFailed(str(exc)) from None
    except ValueError as exc:
        raise ConnectFailed(f"{conn.endpoint} sent a malformed server certificate: {exc}") from None
    note = "; ".join(n for n in (note, trusted_note) if n)
    try:
        await client.set_security(policy, str(cert), str(key), server_certificate=server_der, mode=mode)
    except (OSError, ValueError) as exc:
        raise ConnectFailed(f"cannot load the client certificate {cert} or key {key}: {exc}") from None

    async def same_cert(certificate: Any, _app: Any) -> None:
        """The CreateSession answer must carry the certificate that was checked."""
        from cryptography.hazmat.primitives import serialization
        from asyncua.common.utils import ServiceError

        if certificate.public_bytes(serialization.Encoding.DER) != server_der:
            raise ServiceError(ua.StatusCodes.BadCertificateUntrusted)

    client.certificate_validator = same_cert
    return note


async def _drop(client: Any) -> None:
    """Tear a client down that never got a working session."""
    await close_client(client, 1.0, lost=True)


async def close_client(client: Any, timeout: float, lost: bool = False) -> None:
    """Close a session and its socket within ``timeout``; after a loss only local cleanup (no request)."""
    timeout = min(timeout, 2.0)  # two steps within the runtime's close limit (5 s)
    if not lost:
        try:
            await asyncio.wait_for(client.close_session(), timeout)
        except asyncio.CancelledError:
            _drop_socket(client)
            raise
        except Exception:
            pass
        try:
            await asyncio.wait_for(client.close_secure_channel(), timeout)
        except asyncio.CancelledError:
            _drop_socket(client)
            raise
        except Exception:
            pass
    else:
        client.uaclient.request_disconnect()
        for name in ("_stale_watchdog_task", "_supervisor_task", "_renew_channel_task"):
            task = getattr(client, name, None)
            if task is not None and not task.done():
                task.cancel()
            setattr(client, name, None)
        session = client.uaclient.session
        pub = getattr(session, "_publish_task", None)
        if pub is not None and not pub.done():
            pub.cancel()
    _drop_socket(client)


def _drop_socket(client: Any) -> None:
    try:
        client.disconnect_socket()
    except Exception:
        pass


def env_password_set(name: str) -> bool:
    """True when an environment variable for a password exists (for checks without reading it)."""
    return name in os.environ
