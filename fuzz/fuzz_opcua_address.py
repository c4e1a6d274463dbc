"""Fuzz target: OPC UA tag addresses (NodeId strings and browse paths) parse or fail with AddressError, and round-trip."""
from __future__ import annotations

from edged.drivers.opcua.address import AddressError, parse_address

EXPECTED = (AddressError,)
SEEDS = [b"ns=2;s=Machine.Speed", b"ns=3;i=1001", b"i=2258", b"nsu=urn:acme:robot;s=Axis1",
         b"ns=1;g=09087e75-8e5e-499b-954f-f2a9603db28a", b"ns=2;b=AAEC", b"nsu=urn:a;b=;s=x",
         b"/Objects/2:Machine/2:Speed", b"/Objects/<urn:acme:robot>Robot/<urn:acme:robot>Speed",
         b"/Objects/2:A\\/B/C", b"ns=65536;i=1", b"ns=2;i=4294967296", b"/Types/", b"s="]


def TARGET(data: bytes) -> None:
    """Parse the bytes (as UTF-8, bad bytes replaced); a parsed address must print back to itself."""
    text = data.decode("utf-8", errors="replace")
    addr = parse_address(text)
    again = parse_address(addr.text())
    if again != addr:
        raise AssertionError(f"{text!r} -> {addr.text()!r} -> {again!r}")
