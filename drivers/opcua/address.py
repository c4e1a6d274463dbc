"""OPC UA tag addresses: NodeId strings (ns=/nsu= with i=, s=, g=, b=) and browse paths, parsed without I/O."""
from __future__ import annotations

import base64
import binascii
import uuid
from dataclasses import dataclass
from typing import Union

MAX_UINT32 = 2**32 - 1
MAX_NS_INDEX = 2**16 - 1
MAX_TEXT = 4096  # longest string identifier / browse name accepted (OPC UA servers rarely allow more)
ROOT_NAMES = ("Objects", "Types", "Views")  # first element of a browse path (children of the Root folder)


class AddressError(ValueError):
    """An address that cannot be parsed; the message says what was expected."""


@dataclass(frozen=True, slots=True)
class NodeRef:
    """A NodeId as written in the cell: a namespace index or URI, and an identifier of one kind.

    ``kind`` is ``i`` (numeric), ``s`` (string), ``g`` (GUID) or ``b`` (opaque ByteString).
    Exactly one of ``ns`` and ``nsu`` is meaningful: ``nsu`` (a namespace URI) is resolved to
    an index at every connect, so a server that reorders its namespaces does not break the tag.
    """

    ns: int
    nsu: str | None
    kind: str
    ident: Union[int, str, bytes, uuid.UUID]

    def text(self) -> str:
        """The canonical string form (``nsu=...;s=...`` or ``ns=2;i=5``)."""
        if self.kind == "i":
            ident = str(self.ident)
        elif self.kind == "b":
            ident = base64.b64encode(self.ident).decode()  # type: ignore[arg-type]
        else:
            ident = str(self.ident)
        prefix = f"nsu={self.nsu};" if self.nsu is not None else (f"ns={self.ns};" if self.ns else "")
        return f"{prefix}{self.kind}={ident}"


@dataclass(frozen=True, slots=True)
class PathElement:
    """One step of a browse path: a browse name in a namespace given by index or URI."""

    ns: int
    nsu: str | None
    name: str

    def text(self) -> str:
        """The element as written in a path (``2:Speed`` or ``<urn:x>Speed``)."""
        name = self.name.replace("\\", "\\\\").replace("/", "\\/")
        if self.nsu is None and not self.ns and (name.startswith("<") or _looks_prefixed(name)):
            name = "\\" + name  # a name like "2:Speed" in namespace 0 must not read as a prefix
        if self.nsu is not None:
            return f"<{self.nsu}>{name}"
        return f"{self.ns}:{name}" if self.ns else name


@dataclass(frozen=True, slots=True)
class BrowsePath:
    """A path of browse names from the Root folder, e.g. ``/Objects/2:Machine/2:Speed``."""

    elements: tuple[PathElement, ...]

    def text(self) -> str:
        """The path as written in the cell."""
        return "/" + "/".join(e.text() for e in self.elements)


Address = Union[NodeRef, BrowsePath]


def _looks_prefixed(name: str) -> bool:
    head, sep, _ = name.partition(":")
    return bool(sep) and head.isascii() and head.isdigit()


def parse_address(text: str) -> Address:
    """Parse a tag address: a NodeId string, or a browse path starting with ``/``."""
    if not isinstance(text, str):
        raise AddressError(f"expected a NodeId or browse path string, found {type(text).__name__}")
    if len(text) > MAX_TEXT:
        raise AddressError(f"expected an address of at most {MAX_TEXT} characters, found {len(text)}")
    if text.startswith("/"):
        return parse_browse_path(text)
    return parse_nodeid(text)


def parse_nodeid(text: str) -> NodeRef:
    """Parse ``[ns=N;|nsu=URI;](i=N|s=TEXT|g=GUID|b=BASE64)``."""
    rest = text
    ns, nsu = 0, None
    if rest.startswith("ns="):
        head, sep, rest = rest[3:].partition(";")
        if not sep:
            raise AddressError(f"expected ns=INDEX;i=|s=|g=|b=..., found {text!r} (no ';' after the namespace)")
        if not (head.isascii() and head.isdigit()) or int(head) > MAX_NS_INDEX:
            raise AddressError(f"expected a namespace index 0..{MAX_NS_INDEX} after ns=, found {head!r}")
        ns = int(head)
    elif rest.startswith("nsu="):
        # a URI may itself contain ';' only in exotic cases; the identifier starts after the last ';X='
        cut = _last_ident_sep(rest)
        if cut < 0:
            raise AddressError(f"expected nsu=URI;i=|s=|g=|b=..., found {text!r}")
        nsu, rest = rest[4:cut], rest[cut + 1:]
        if not nsu or any(c.isspace() for c in nsu):
            raise AddressError(f"expected a namespace URI without spaces after nsu=, found {nsu!r}")
    kind, sep, ident = rest.partition("=")
    if not sep or kind not in ("i", "s", "g", "b"):
        raise AddressError(f"expected a NodeId such as \"ns=2;s=Machine.Speed\", \"nsu=urn:x;i=5\" or a browse "
                           f"path such as \"/Objects/2:Machine/2:Speed\", found {text!r}")
    if kind == "i":
        if not (ident.isascii() and ident.isdigit()) or int(ident) > MAX_UINT32:
            raise AddressError(f"expected a numeric identifier 0..{MAX_UINT32} after i=, found {ident!r}")
        return NodeRef(ns, nsu, "i", int(ident))
    if kind == "s":
        if not ident:
            raise AddressError("expected a non-empty string identifier after s=")
        return NodeRef(ns, nsu, "s", ident)
    if kind == "g":
        try:
            return NodeRef(ns, nsu, "g", uuid.UUID(ident))
        except ValueError:
            raise AddressError(f"expected a GUID such as 09087e75-8e5e-499b-954f-f2a9603db28a after g=, "
                               f"found {ident!r}") from None
    try:
        raw = base64.b64decode(ident.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise AddressError(f"expected base64 after b=, found {ident!r}") from None
    if not raw:
        raise AddressError("expected a non-empty opaque identifier after b=")
    return NodeRef(ns, nsu, "b", raw)


def _last_ident_sep(text: str) -> int:
    """Index of the ';' that starts the identifier part (``;i=``, ``;s=``, ``;g=``, ``;b=``), or -1."""
    best = -1
    for kind in ("i", "s", "g", "b"):
        pos = text.find(f";{kind}=")
        if pos >= 0 and (best < 0 or pos < best):
            best = pos
    return best


def parse_browse_path(text: str) -> BrowsePath:
    """Parse ``/Objects/2:Machine/<urn:acme>Speed``: ``N:`` is a namespace index, ``<URI>`` a namespace URI.

    Elements without a prefix are in namespace 0. A ``/`` or ``\\`` inside a name is escaped with ``\\``.
    """
    parts = _split_path(text)
    if not parts:
        raise AddressError(f"expected a browse path such as \"/Objects/2:Machine/2:Speed\", found {text!r}")
    elements = []
    for part in parts:
        elements.append(_parse_element(part, text))
    if elements[0].ns != 0 or elements[0].nsu is not None or elements[0].name not in ROOT_NAMES:
        raise AddressError(f"expected a browse path starting at /Objects, /Types or /Views, found {text!r}")
    return BrowsePath(tuple(elements))


def _split_path(text: str) -> list[str]:
    parts: list[str] = []
    cur: list[str] = []
    i = 1
    while i < len(text):
        c = text[i]
        if c == "\\":
            if i + 1 >= len(text):
                raise AddressError(f"expected a character after '\\' in browse path {text!r}")
            cur.append("\\" + text[i + 1])
            i += 2
            continue
        if c == "/":
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(c)
        i += 1
    parts.append("".join(cur))
    if any(p == "" for p in parts):
        raise AddressError(f"expected browse names between the '/' of {text!r}, found an empty one")
    return parts


def _unescape(name: str) -> str:
    out = []
    i = 0
    while i < len(name):
        if name[i] == "\\" and i + 1 < len(name):
            out.append(name[i + 1])
            i += 2
        else:
            out.append(name[i])
            i += 1
    return "".join(out)


def _parse_element(part: str, text: str) -> PathElement:
    if part.startswith("<"):
        end = part.find(">")
        if end <= 1:
            raise AddressError(f"expected <NAMESPACE-URI>NAME in browse path {text!r}, found {part!r}")
        uri, name = part[1:end], _unescape(part[end + 1:])
        if any(c.isspace() for c in uri):
            raise AddressError(f"expected a namespace URI without spaces in browse path {text!r}, found {uri!r}")
        if not name:
            raise AddressError(f"expected a browse name after <{uri}> in {text!r}")
        return PathElement(0, uri, name)
    head, sep, tail = part.partition(":")
    if sep and head.isascii() and head.isdigit():
        if int(head) > MAX_NS_INDEX:
            raise AddressError(f"expected a namespace index 0..{MAX_NS_INDEX} in browse path {text!r}, found {head}")
        name = _unescape(tail)
        if not name:
            raise AddressError(f"expected a browse name after {head}: in {text!r}")
        return PathElement(int(head), None, name)
    return PathElement(0, None, _unescape(part))
