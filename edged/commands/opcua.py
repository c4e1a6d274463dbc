"""OPC UA tools: create a client certificate, trust a server certificate, browse a server's address space."""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

POLICY_CHOICES = ["None", "Basic256Sha256", "Aes128_Sha256_RsaOaep", "Aes256_Sha256_RsaPss"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Sub-commands gen-cert, trust and browse."""
    sub = p.add_subparsers(dest="opcua_command", metavar="ACTION", required=True, parser_class=type(p))
    g = sub.add_parser("gen-cert", help="create a self-signed client certificate and key",
                       description="Create edged's self-signed OPC UA client certificate (DER) and private key "
                                   "(PEM) whose ApplicationUri is the one the client announces.")
    g.add_argument("--pki", default="pki", help="PKI folder (default ./pki); the files go to own/certs and own/private")
    g.add_argument("--cert", default=None, help="certificate file (default PKI/own/certs/edged_cert.der)")
    g.add_argument("--key", default=None, help="private key file (default PKI/own/private/edged_key.pem)")
    g.add_argument("--application-uri", default=None, help="ApplicationUri (default urn:<hostname>:edged, the "
                                                           "driver's default)")
    g.add_argument("--host", default=None, help="DNS name in the certificate (default: this host's name)")
    g.add_argument("--days", type=int, default=3650, help="validity in days (default 3650)")
    g.add_argument("--force", action="store_true", help="overwrite existing files")

    t = sub.add_parser("trust", help="trust a server certificate (e.g. one from pki/rejected/certs)",
                       description="Copy a server certificate into PKI/trusted/certs (and remove it from "
                                   "PKI/rejected/certs). Check its thumbprint with the server's administrator first.")
    t.add_argument("file", metavar="FILE", help="certificate file (DER or PEM)")
    t.add_argument("--pki", default="pki", help="PKI folder (default ./pki)")

    b = sub.add_parser("browse", help="print a server's address space, or a tag snippet for a cell (--toml)",
                       description="Browse from the Objects folder and print the tree with NodeIds, data types, "
                                   "access levels and units; with --toml print a device table whose tags use "
                                   "namespace-URI NodeIds.")
    b.add_argument("endpoint", metavar="ENDPOINT", help="e.g. opc.tcp://10.0.0.5:4840")
    b.add_argument("--depth", type=int, default=4, help="levels below Objects (default 4)")
    b.add_argument("--toml", action="store_true", help="print a device table with one tag per readable variable")
    b.add_argument("--device", default="opcua1", help="device name of the --toml table (default opcua1)")
    b.add_argument("--include-ns0", action="store_true", help="also browse namespace 0 (the Server object)")
    b.add_argument("--security", default="Basic256Sha256", choices=POLICY_CHOICES,
                   help="security policy (default Basic256Sha256)")
    b.add_argument("--mode", default="SignAndEncrypt", choices=["Sign", "SignAndEncrypt"],
                   help="message security mode (default SignAndEncrypt)")
    b.add_argument("--pki", default="pki", help="PKI folder (default ./pki)")
    b.add_argument("--cert", default=None, help="client certificate (default PKI/own/certs/edged_cert.der)")
    b.add_argument("--key", default=None, help="client private key (default PKI/own/private/edged_key.pem)")
    b.add_argument("--application-uri", default=None, help="ApplicationUri (must match the certificate)")
    b.add_argument("--auto-trust-first", action="store_true",
                   help="commissioning: trust the server's certificate if the trusted folder is empty")
    b.add_argument("--username", default=None, help="user name (default: anonymous)")
    b.add_argument("--password-file", default=None, help="file whose first line is the password")
    b.add_argument("--password-env", default=None, help="environment variable holding the password")
    b.add_argument("--timeout", type=float, default=5.0, help="request timeout in seconds (default 5)")


def run(args: argparse.Namespace) -> int:
    """Run the chosen action."""
    return {"gen-cert": _gen_cert, "trust": _trust, "browse": _browse}[args.opcua_command](args)


def _gen_cert(args: argparse.Namespace) -> int:
    from edged.drivers.opcua.security import Pki, default_application_uri, generate_client_cert

    pki = Pki(Path(args.pki))
    cert = Path(args.cert) if args.cert else pki.own_cert
    key = Path(args.key) if args.key else pki.own_key
    if not args.force and (cert.exists() or key.exists()):
        print(f"edged opcua gen-cert: {cert if cert.exists() else key} exists (use --force to replace it)",
              file=sys.stderr)
        return 1
    if not args.cert and not args.key:
        pki.create()
    uri = args.application_uri or default_application_uri()
    desc = generate_client_cert(cert, key, uri, args.host, days=args.days)
    print(f"certificate: {cert}\nprivate key: {key}\n{desc}")
    print(f"The driver must announce the same ApplicationUri: application_uri = {json.dumps(uri)} "
          "(the default when it equals urn:<hostname>:edged). Trust the certificate on the server.")
    return 0


def _trust(args: argparse.Namespace) -> int:
    from edged.drivers.opcua.security import Pki, describe_cert, load_cert_bytes

    try:
        der = load_cert_bytes(Path(args.file).read_bytes())
    except OSError as exc:
        print(f"edged opcua trust: cannot read {args.file}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"edged opcua trust: {args.file} is not a certificate (DER or PEM): {exc}", file=sys.stderr)
        return 1
    path = Pki(Path(args.pki)).trust(der)
    print(f"trusted: {path}\n{describe_cert(der)}")
    return 0


def _browse(args: argparse.Namespace) -> int:
    from edged.drivers.opcua.session import ConnectFailed, Connection, close_client, open_client
    from edged.drivers.opcua.security import default_application_uri
    from edged.drivers.opcua import browse as br

    if (args.password_file or args.password_env) and not args.username:
        print("edged opcua browse: --password-file/--password-env need --username", file=sys.stderr)
        return 2
    conn = Connection(endpoint=args.endpoint, timeout_s=args.timeout, security_policy=args.security,
                      security_mode=args.mode if args.security != "None" else "None", pki=Path(args.pki),
                      certificate=Path(args.cert) if args.cert else None,
                      private_key=Path(args.key) if args.key else None,
                      application_uri=args.application_uri or default_application_uri(),
                      auto_trust_first=args.auto_trust_first, username=args.username,
                      password_file=args.password_file, password_env=args.password_env)

    async def go() -> list[str]:
        client, note = await open_client(conn)
        if note:
            print(f"edged opcua browse: {note}", file=sys.stderr)
        try:
            namespaces = await client.get_namespace_array()
            entries = await br.browse(client, args.depth, args.include_ns0)
        finally:
            await close_client(client, args.timeout)
        if not args.toml:
            return br.tree_lines(entries, namespaces)
        keys = [f"endpoint = {json.dumps(args.endpoint)}", f'security_policy = "{args.security}"']
        if args.security != "None":
            keys.append(f'security_mode = "{args.mode}"')
        if args.username:
            keys.append(f"username = {json.dumps(args.username)}")
            keys.append("# password_file = \"...\" or password_env = \"...\"")
        return br.toml_lines(entries, namespaces, args.device, keys)

    import logging
    logging.getLogger("asyncua").setLevel(logging.ERROR)
    try:
        lines = asyncio.run(go())
    except ConnectFailed as exc:
        print(f"edged opcua browse: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # timeouts, refused services, malformed answers: say it, no traceback
        print(f"edged opcua browse: {args.endpoint}: {exc!r}", file=sys.stderr)
        return 1
    print("\n".join(lines))
    return 0
