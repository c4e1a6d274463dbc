"""Client certificates and the PKI folder (own, trusted, rejected), laid out as other OPC UA stacks do it."""
from __future__ import annotations

import datetime as dt
import hashlib
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

POLICIES = {  # config name -> asyncua security policy class name
    "None": "SecurityPolicyNone",
    "Basic256Sha256": "SecurityPolicyBasic256Sha256",
    "Aes128_Sha256_RsaOaep": "SecurityPolicyAes128Sha256RsaOaep",
    "Aes256_Sha256_RsaPss": "SecurityPolicyAes256Sha256RsaPss",
}
MODES = ("Sign", "SignAndEncrypt")
CERT_NAME = "edged_cert.der"
KEY_NAME = "edged_key.pem"
TRUST_COMMAND = "edged opcua trust"


class UntrustedServer(Exception):
    """The server presented a certificate that is not in the trusted folder (it was copied to rejected)."""

    def __init__(self, message: str, rejected: Path) -> None:
        super().__init__(message)
        self.rejected = rejected


def default_application_uri() -> str:
    """The ApplicationUri edged announces (and puts in its certificate): ``urn:<hostname>:edged``."""
    return f"urn:{socket.gethostname()}:edged"


@dataclass(frozen=True, slots=True)
class Pki:
    """A PKI folder: ``own/certs``, ``own/private``, ``trusted/certs``, ``rejected/certs`` (and ``issuers``)."""

    root: Path

    @property
    def own_cert(self) -> Path:
        """Default client certificate file (DER)."""
        return self.root / "own" / "certs" / CERT_NAME

    @property
    def own_key(self) -> Path:
        """Default client private key file (PEM, PKCS#8)."""
        return self.root / "own" / "private" / KEY_NAME

    @property
    def trusted(self) -> Path:
        """Folder of trusted server certificates."""
        return self.root / "trusted" / "certs"

    @property
    def rejected(self) -> Path:
        """Folder where refused server certificates are copied for review."""
        return self.root / "rejected" / "certs"

    def create(self) -> None:
        """Create the folder layout (private keys folder readable by the owner only)."""
        for sub in ("own/certs", "own/private", "trusted/certs", "trusted/crl", "rejected/certs",
                    "issuers/certs", "issuers/crl"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(self.root / "own" / "private", 0o700)

    def trusted_thumbprints(self) -> set[str]:
        """SHA-1 thumbprints of every certificate in the trusted folder (DER or PEM; unreadable ones skipped)."""
        out = set()
        if not self.trusted.is_dir():
            return out
        for f in sorted(self.trusted.iterdir()):
            if not f.is_file():
                continue
            try:
                out.add(thumbprint(load_cert_bytes(f.read_bytes())))
            except (OSError, ValueError):
                continue
        return out

    def is_trusted(self, der: bytes) -> bool:
        """True when this exact certificate is in the trusted folder."""
        return thumbprint(der) in self.trusted_thumbprints()

    def reject(self, der: bytes) -> Path:
        """Copy a refused server certificate to the rejected folder; returns its file."""
        self.rejected.mkdir(parents=True, exist_ok=True)
        path = self.rejected / cert_file_name(der)
        if not path.exists():
            path.write_bytes(der)
        return path

    def trust(self, der: bytes) -> Path:
        """Put a certificate into the trusted folder (and remove it from rejected); returns its file."""
        self.trusted.mkdir(parents=True, exist_ok=True)
        name = cert_file_name(der)
        path = self.trusted / name
        path.write_bytes(der)
        (self.rejected / name).unlink(missing_ok=True)
        return path


def thumbprint(der: bytes) -> str:
    """SHA-1 thumbprint (hex, upper case), as OPC UA tools show it."""
    return hashlib.sha1(der).hexdigest().upper()


def load_cert_bytes(data: bytes) -> bytes:
    """DER bytes of a certificate given as DER or PEM; ValueError when it is neither."""
    if data.lstrip().startswith(b"-----BEGIN"):
        return x509.load_pem_x509_certificate(data).public_bytes(serialization.Encoding.DER)
    x509.load_der_x509_certificate(data)  # validates
    return data


def cert_file_name(der: bytes) -> str:
    """``<common name> [<thumbprint>].der``, the file name other stacks use."""
    cert = x509.load_der_x509_certificate(der)
    try:
        cn = str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)
    except IndexError:
        cn = "server"
    cn = re.sub(r"[^A-Za-z0-9._ -]", "_", cn).strip()[:64] or "server"
    return f"{cn} [{thumbprint(der)}].der"


def describe_cert(der: bytes) -> str:
    """Subject, ApplicationUri, validity and thumbprint of a certificate, for messages."""
    cert = x509.load_der_x509_certificate(der)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        uris = san.value.get_values_for_type(x509.UniformResourceIdentifier)
    except x509.ExtensionNotFound:
        uris = []
    return (f"subject {cert.subject.rfc4514_string()}, uri {', '.join(uris) or '-'}, valid "
            f"{cert.not_valid_before_utc:%Y-%m-%d} to {cert.not_valid_after_utc:%Y-%m-%d}, "
            f"thumbprint {thumbprint(der)}")


def check_server_cert(pki: Pki, der: bytes, endpoint: str, auto_trust_first: bool) -> str:
    """Decide about a server certificate: trusted -> "", auto-trusted -> a note; else raise UntrustedServer.

    Auto-trust applies only while the trusted folder is empty (commissioning: the first server seen).
    """
    cert = x509.load_der_x509_certificate(der)
    now = dt.datetime.now(dt.timezone.utc)
    if pki.is_trusted(der):
        if cert.not_valid_after_utc < now or cert.not_valid_before_utc > now:
            raise UntrustedServer(f"the server certificate of {endpoint} is trusted but not valid now "
                                  f"({describe_cert(der)})", pki.trusted / cert_file_name(der))
        return ""
    if auto_trust_first and not pki.trusted_thumbprints():
        path = pki.trust(der)
        return f"trusted the first server certificate seen (auto_trust_first): {path}"
    path = pki.reject(der)
    raise UntrustedServer(
        f"the server certificate of {endpoint} is not trusted ({describe_cert(der)}); it was copied to "
        f"{path}; after checking its thumbprint with the server's administrator, trust it with: "
        f"{TRUST_COMMAND} \"{path}\" --pki \"{pki.root}\"", path)


def generate_client_cert(cert_file: Path, key_file: Path, application_uri: str, host: str | None = None,
                         days: int = 3650, common_name: str = "edged") -> str:
    """Create a self-signed client certificate (DER) and key (PEM) whose ApplicationUri is ``application_uri``."""
    from asyncua.crypto import cert_gen

    host = host or socket.gethostname()
    key = cert_gen.generate_private_key()
    cert = cert_gen.generate_self_signed_app_certificate(
        key, common_name, {}, [x509.UniformResourceIdentifier(application_uri), x509.DNSName(host)],
        extended=[ExtendedKeyUsageOID.CLIENT_AUTH], days=days)
    cert_file.parent.mkdir(parents=True, exist_ok=True)
    key_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(cert_gen.dump_private_key_as_pem(key))
    der = cert.public_bytes(serialization.Encoding.DER)
    cert_file.write_bytes(der)
    return describe_cert(der)


def cert_application_uri(der: bytes) -> list[str]:
    """The URIs in a certificate's SubjectAltName (its ApplicationUri)."""
    cert = x509.load_der_x509_certificate(der)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return list(san.value.get_values_for_type(x509.UniformResourceIdentifier))


def read_password(password_file: str | None, password_env: str | None) -> str | None:
    """The password from a file (first line, newline stripped) or an environment variable; never logged."""
    if password_file:
        text = Path(password_file).read_text(encoding="utf-8")
        return text.splitlines()[0] if text else ""
    if password_env:
        value = os.environ.get(password_env)
        if value is None:
            raise OSError(f"environment variable {password_env} (password_env) is not set")
        return value
    return None
