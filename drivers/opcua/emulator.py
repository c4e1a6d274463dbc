"""OPC UA emulator on asyncua's Server: serves the nodes a cell's OPC UA tags declare, with fault hooks for HIL tests."""
from __future__ import annotations

import asyncio
import datetime as dt
import logging
import tempfile
from collections import Counter, deque
from pathlib import Path
from typing import Any, Awaitable, Callable
from urllib.parse import urlparse

from asyncua import Server, ua
from asyncua.common.utils import Buffer, ServiceError
from asyncua.server import uaprocessor
from asyncua.ua.ua_binary import nodeid_from_binary, struct_from_binary

from edged.driver import Driver, Emulator
from edged.tag import DataType, Tag

from .address import BrowsePath, NodeRef
from .driver import OpcUaDriver
from .security import POLICIES, generate_client_cert

log = logging.getLogger("edged.drivers.opcua.emulator")

VARIANT_OF = {
    DataType.BOOL: ua.VariantType.Boolean, DataType.INT8: ua.VariantType.SByte, DataType.UINT8: ua.VariantType.Byte,
    DataType.INT16: ua.VariantType.Int16, DataType.UINT16: ua.VariantType.UInt16,
    DataType.INT32: ua.VariantType.Int32, DataType.UINT32: ua.VariantType.UInt32,
    DataType.INT64: ua.VariantType.Int64, DataType.UINT64: ua.VariantType.UInt64,
    DataType.FLOAT32: ua.VariantType.Float, DataType.FLOAT64: ua.VariantType.Double,
    DataType.STRING: ua.VariantType.String, DataType.DATETIME: ua.VariantType.DateTime,
    DataType.ANY: ua.VariantType.Double,
}
PLACEHOLDER_NS = "urn:edged:emulator:ns{}"

# What arrived in Write requests, decoded from the wire before asyncua fills in defaults: one
# (NodeId, DataValue encoding mask) per written value (mask 0x01 = value only; 0x02 status code,
# 0x04 source timestamp, 0x08 server timestamp). Kept for tests across all emulators of the process.
WRITE_LOG: deque[tuple[Any, int]] = deque(maxlen=1000)
WRITE_COUNTS: Counter[Any] = Counter()  # NodeId -> values written to it (all emulators of the process)
_STRICT: set[Any] = set()  # NodeIds whose writes must carry a value only (like stricter server stacks)
_patched = False


def _peek_write_masks(body: Any) -> list[tuple[Any, int]]:
    """The (NodeId, DataValue encoding mask) of every WriteValue in a WriteRequest body (not consumed)."""
    peek = body.copy()
    n = int.from_bytes(peek.read(4), "little", signed=True)
    out = []
    for _ in range(max(n, 0)):
        nodeid = nodeid_from_binary(peek)
        peek.read(4)  # AttributeId
        ln = int.from_bytes(peek.read(4), "little", signed=True)  # IndexRange string
        if ln > 0:
            peek.read(ln)
        mask = peek.copy().read(1)[0]
        struct_from_binary(ua.DataValue, peek)
        out.append((nodeid, mask))
    return out


def _recording_struct_from_binary(objtype: Any, data: Any) -> Any:
    if objtype is ua.WriteParameters and isinstance(data, Buffer):
        try:
            masks = _peek_write_masks(data)
        except Exception:  # a malformed request: let asyncua report it
            masks = []
        WRITE_LOG.extend(masks)
        WRITE_COUNTS.update(n for n, _ in masks)
        for nodeid, mask in masks:
            if nodeid in _STRICT and mask & ~0x01:
                raise ServiceError(ua.StatusCodes.BadWriteNotSupported)
    return struct_from_binary(objtype, data)


def _install_write_recorder() -> None:
    """Make asyncua's server decode WriteRequests through the recorder above (once per process)."""
    global _patched
    if not _patched:
        uaprocessor.struct_from_binary = _recording_struct_from_binary  # type: ignore[attr-defined]
        _patched = True


class _PasswordUsers:
    """A user manager accepting the given user names and passwords (anonymous sessions are refused)."""

    def __init__(self, users: dict[str, str]) -> None:
        self.users = users

    def get_user(self, iserver: Any, username: str | None = None, password: str | None = None,
                 certificate: Any = None) -> Any:
        """The user when the password matches, else None (the session is refused)."""
        from asyncua.crypto.permission_rules import User, UserRole

        if username is not None and self.users.get(username) == password:
            return User(role=UserRole.User, name=username)
        return None


class _Endpoint:
    """One asyncua Server at one endpoint URL, serving the tags of the devices configured on it."""

    def __init__(self, url: str, drivers: list[OpcUaDriver], cert_dir: Path,
                 users: dict[str, str] | None = None) -> None:
        self.url = url
        self.users = users
        self.drivers = drivers
        self.tags = [t for d in drivers for t in d.tags]
        conn = drivers[0].conn
        self.policy = conn.security_policy
        self.mode = conn.security_mode
        self.cert_dir = cert_dir
        self.server: Server | None = None
        self.nodes: dict[str, Any] = {}  # tag key -> NodeId
        self.values: dict[str, Any] = {}  # tag key -> value kept across restarts
        self.namespace_order: list[str] = []
        self.server_cert: Path | None = None
        self.created: list[Any] = []  # NodeIds of the variables and objects this emulator added

    def uris(self) -> list[str]:
        """Namespace URIs the tags use (by URI, or placeholders for plain indexes), in registration order."""
        wanted: list[str] = []
        max_index = 1
        for t in self.tags:
            ref = t.addr.ref
            items = [ref] if isinstance(ref, NodeRef) else list(ref.elements)
            for it in items:
                if it.nsu is not None and it.nsu not in wanted:
                    wanted.append(it.nsu)
                elif it.nsu is None:
                    max_index = max(max_index, it.ns)
        order = [u for u in self.namespace_order if u not in wanted] + [u for u in self.namespace_order if u in wanted]
        rest = [u for u in wanted if u not in order]
        placeholders = [PLACEHOLDER_NS.format(i) for i in range(2, max_index + 1)]
        # plain indexes (ns=2) must land on the same index every start: placeholders go first
        return placeholders + order + rest

    async def start(self) -> None:
        """Build the address space and listen."""
        _install_write_recorder()
        server = Server(user_manager=_PasswordUsers(self.users) if self.users else None)
        await server.init()
        if self.users:
            server.set_identity_tokens([ua.UserNameIdentityToken])
        server.set_endpoint(self.url)
        server.set_server_name("edged OPC UA emulator")
        if self.policy != "None":
            await self._security(server)
        else:
            server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        for uri in self.uris():
            await server.register_namespace(uri)
        ns = await server.get_namespace_array()
        self.created = []
        for t in self.tags:
            await self._add(server, ns, t)
        await server.start()
        self.server = server

    async def pause(self) -> None:
        """Stop listening and drop every connection; the address space stays (a cheap "server down")."""
        if self.server is not None and self.server.bserver is not None:
            await self.server.bserver.stop()
            self.server.bserver = None

    async def resume(self) -> None:
        """Listen again after pause()."""
        from asyncua.server.binary_server_asyncio import BinaryServer

        server = self.server
        if server is not None and server.bserver is None:
            host, port = server._get_bind_socket_info()
            server.bserver = BinaryServer(server.iserver, host, port, server.limits)
            server.bserver.set_policies(server._policies)
            await server.bserver.start()

    async def renumber(self) -> None:
        """A restart with today's namespace_order, without rebuilding the standard address space: drop the
        connections, rewrite the NamespaceArray, add the nodes again under their new indexes, listen again."""
        server = self.server
        assert server is not None
        await self.pause()
        self._remember()
        for nodeid in reversed(self.created):
            try:
                await server.delete_nodes([server.get_node(nodeid)], recursive=True)
            except Exception:  # already gone with its parent
                pass
        base = (await server.get_namespace_array())[:2]
        ns = base + [u for u in self.uris() if u not in base]
        await server.get_node(ua.NodeId(ua.ObjectIds.Server_NamespaceArray)).write_value(
            ua.Variant(ns, ua.VariantType.String))
        self.created = []
        for t in self.tags:
            await self._add(server, ns, t)
        await self.resume()

    def _remember(self) -> None:
        assert self.server is not None
        for key, nodeid in self.nodes.items():
            try:
                self.values[key] = self._engineering(key, self.server.read_attribute_value(nodeid).Value.Value)
            except Exception:
                pass

    async def _security(self, server: Server) -> None:
        self.cert_dir.mkdir(parents=True, exist_ok=True)
        cert, key = self.cert_dir / "server_cert.der", self.cert_dir / "server_key.pem"
        uri = "urn:edged:emulator"
        await server.set_application_uri(uri)
        if not cert.exists():
            await asyncio.to_thread(generate_client_cert, cert, key, uri, "127.0.0.1", 365, "edged emulator")
        await server.load_certificate(str(cert))
        await server.load_private_key(str(key))
        self.server_cert = cert
        name = POLICIES[self.policy].removeprefix("SecurityPolicy")
        server.set_security_policy([getattr(ua.SecurityPolicyType, f"{name}_{self.mode}")])

    async def _add(self, server: Server, ns: list[str], tag: Tag) -> None:
        ref = tag.addr.ref
        vt = VARIANT_OF.get(tag.dtype, ua.VariantType.Double)
        value = self.values.get(tag.key, self._initial(tag))
        var = ua.Variant(self._wire(value, tag), vt, is_array=bool(tag.dims))
        if isinstance(ref, NodeRef):
            idx = ref.ns if ref.nsu is None else ns.index(ref.nsu)
            nodeid = ua.NodeId(ref.ident, idx, {"i": ua.NodeIdType.Numeric, "s": ua.NodeIdType.String,
                                                  "g": ua.NodeIdType.Guid, "b": ua.NodeIdType.ByteString}[ref.kind])
            parent = server.nodes.objects
            bname = ua.QualifiedName(str(ref.ident) if ref.kind == "s" else tag.name, idx)
        else:
            parent = await self._folders(server, ns, ref)
            last = ref.elements[-1]
            idx = last.ns if last.nsu is None else ns.index(last.nsu)
            nodeid = ua.NodeId(".".join(e.name for e in ref.elements[1:]), idx)
            bname = ua.QualifiedName(last.name, idx)
        node = await parent.add_variable(nodeid, bname, var)
        self.created.append(node.nodeid)
        if tag.dims:
            await node.write_value_rank(1)
            await node.write_array_dimensions([len(value)])
        if tag.writable:
            await node.set_writable()
            _STRICT.add(node.nodeid)
        if tag.unit:
            eu = ua.EUInformation(NamespaceUri="http://www.opcfoundation.org/UA/units/un/cefact",
                                  UnitId=-1, DisplayName=ua.LocalizedText(tag.unit),
                                  Description=ua.LocalizedText(tag.unit))
            await node.add_property(ua.NodeId(f"{tag.device}.{tag.name}.EU", idx), ua.QualifiedName("EngineeringUnits", 0),
                                    ua.Variant(eu, ua.VariantType.ExtensionObject))
        self.nodes[tag.key] = node.nodeid

    async def _folders(self, server: Server, ns: list[str], path: BrowsePath) -> Any:
        node = server.nodes.root
        for i, e in enumerate(path.elements[:-1]):
            idx = e.ns if e.nsu is None else ns.index(e.nsu)
            qn = ua.QualifiedName(e.name, idx)
            try:
                node = await node.get_child(qn)
            except ua.UaError:
                node = await node.add_object(ua.NodeId(".".join(x.name for x in path.elements[1:i + 1]), idx), qn)
                self.created.append(node.nodeid)
        return node

    @staticmethod
    def _initial(tag: Tag) -> Any:
        scalar: Any = {DataType.BOOL: False, DataType.STRING: "", DataType.DATETIME: "2026-01-01T00:00:00Z"}.get(
            tag.dtype, 0.0 if tag.dtype.is_float or tag.dtype is DataType.ANY else 0)
        if tag.dims:
            n = 1
            for d in tag.dims:
                n *= d
            return [scalar] * n
        return scalar

    @staticmethod
    def _wire(value: Any, tag: Tag) -> Any:
        """An engineering value as the raw value the node holds (scale inverted, types coerced)."""
        def one(v: Any) -> Any:
            if tag.dtype is DataType.DATETIME and isinstance(v, str):
                return dt.datetime.fromisoformat(v.replace("Z", "+00:00"))
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                raw = tag.to_raw(v) if tag.scaled else v
                if tag.dtype.is_integer:
                    return int(round(raw))
                if tag.dtype.is_float or tag.dtype is DataType.ANY:
                    return float(raw)
            return v
        return [one(v) for v in value] if isinstance(value, list) else one(value)

    async def stop(self) -> None:
        """Remember the values, stop listening."""
        if self.server is None:
            return
        self._remember()
        server, self.server = self.server, None
        await server.stop()

    def _engineering(self, key: str, raw: Any) -> Any:
        tag = next(t for t in self.tags if t.key == key)
        if isinstance(raw, dt.datetime):
            return raw.replace(tzinfo=raw.tzinfo or dt.timezone.utc).isoformat().replace("+00:00", "Z")
        if isinstance(raw, list):
            return [tag.to_engineering(x) if isinstance(x, (int, float)) else x for x in raw]
        return tag.to_engineering(raw) if isinstance(raw, (int, float)) and not isinstance(raw, bool) else raw


class OpcUaEmulator(Emulator):
    """One asyncua Server per endpoint of the given OPC UA devices, with fault hooks.

    Hooks for tests and the HIL fault kit: ``restart(namespace_order=[...])`` (the same nodes
    behind a reordered namespace array), ``stop()``/``start()``, ``stop_publishing()`` (existing
    subscriptions send nothing, not even keep-alives), ``delete_node(tag)``/``restore_node(tag)``.
    Security: a device with a security policy gets a server offering only that policy and mode,
    with a self-signed certificate (``server_cert(device)`` says where); ``users`` (name -> password)
    makes the servers accept only those UserName identities.
    """

    def __init__(self, drivers: list[Driver], cert_dir: str | Path | None = None,
                 users: dict[str, str] | None = None) -> None:
        super().__init__(drivers)
        self._tmp: tempfile.TemporaryDirectory | None = None
        if cert_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="edged-opcua-emu-")
            cert_dir = self._tmp.name
        by_url: dict[str, list[OpcUaDriver]] = {}
        for d in drivers:
            assert isinstance(d, OpcUaDriver)
            u = urlparse(d.conn.endpoint)
            url = f"opc.tcp://{u.hostname}:{u.port or 4840}{u.path}"
            by_url.setdefault(url, []).append(d)
        self.endpoints = [_Endpoint(url, ds, Path(cert_dir) / f"server{i}", users)
                          for i, (url, ds) in enumerate(by_url.items())]
        self._by_device = {d.spec.name: ep for ep in self.endpoints for d in ep.drivers}
        self._shifts = 0

    async def start(self) -> None:
        """Start every server (about a second each)."""
        for ep in self.endpoints:
            if ep.server is None:
                await ep.start()

    async def stop(self) -> None:
        """Stop every server (values are kept for a later start)."""
        for ep in self.endpoints:
            await ep.stop()

    def close(self) -> None:
        """Remove the temporary certificate folder."""
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    async def restart(self, namespace_order: list[str] | None = None) -> None:
        """Stop and start again; with ``namespace_order`` these URIs are registered first (indexes change)."""
        await self.stop()
        if namespace_order is not None:
            for ep in self.endpoints:
                ep.namespace_order = list(namespace_order)
        await self.start()

    faults = frozenset({"stop", "start", "namespace-restart", "stop-publishing", "clear"})

    async def inject(self, device: str, fault: str, arg: str = "") -> None:
        """Play a fault on one device's server.

        ``stop``/``start`` (connections refused, then the same address space again), ``namespace-restart`` (a restart with one more namespace in front: every index moves),
        ``stop-publishing`` (its subscriptions fall silent), ``clear`` (nothing to undo; new subscriptions work)."""
        if fault not in self.faults:
            await super().inject(device, fault, arg)
        ep = self._by_device[device]
        # stop/start and namespace-restart keep the asyncua Server and its standard address space: building
        # that takes a second of CPU, which would stall every other emulator of `edged simulate`
        if fault == "stop":
            await ep.pause()
        elif fault == "start":
            if ep.server is None:
                await ep.start()
            else:
                await ep.resume()
        elif fault == "namespace-restart":
            self._shifts += 1
            ep.namespace_order = [f"urn:edged:emulator:shift{i}" for i in range(self._shifts)] + [
                u for u in ep.namespace_order if not u.startswith("urn:edged:emulator:shift")]
            if ep.server is None:
                await ep.start()
            else:
                await ep.renumber()
        elif fault == "stop-publishing":
            self._silence(ep)

    def writes_seen(self) -> dict[str, int]:
        """Values written to each device's nodes."""
        return {d: sum(WRITE_COUNTS.get(n, 0) for n in ep.nodes.values()) for d, ep in self._by_device.items()}

    @staticmethod
    def _silence(ep: "_Endpoint") -> None:
        if ep.server is None:
            return
        for sub in ep.server.iserver.subscription_service.subscriptions.values():
            if sub._task is not None:
                sub._task.cancel()
                sub._task = None

    def stop_publishing(self) -> None:
        """Existing subscriptions stop publishing (no data, no keep-alive); new ones work normally."""
        for ep in self.endpoints:
            self._silence(ep)

    async def call(self, device: str, fn: Callable[[Server], Awaitable[Any]]) -> Any:
        """``await fn(server)`` with the asyncua Server of a device (for tests that change the server directly)."""
        server = self._by_device[device].server
        assert server is not None
        return await fn(server)

    def server_cert(self, device: str) -> Path | None:
        """The DER certificate file of the server of a device (None without security)."""
        return self._by_device[device].server_cert

    def nodeid(self, tag: Tag) -> Any:
        """The NodeId serving a tag now."""
        return self._by_device[tag.device].nodes[tag.key]

    async def delete_node(self, tag: Tag) -> None:
        """Delete a tag's node at run time (clients get BadNodeIdUnknown for it)."""
        ep = self._by_device[tag.device]
        assert ep.server is not None
        # like other stacks, tell monitored items first (asyncua 2.1.0's own notice on delete is lost:
        # it calls an async callback without awaiting it)
        await ep.server.write_attribute_value(ep.nodes[tag.key], ua.DataValue(
            StatusCode=ua.StatusCode(ua.StatusCodes.BadNodeIdUnknown)))
        await asyncio.sleep(0.05)
        await ep.server.delete_nodes([ep.server.get_node(ep.nodes[tag.key])], recursive=True)

    async def restore_node(self, tag: Tag) -> None:
        """Add a deleted tag's node again."""
        ep = self._by_device[tag.device]
        assert ep.server is not None
        await ep._add(ep.server, await ep.server.get_namespace_array(), tag)

    def set_value(self, tag: Tag, value: Any) -> None:
        """Set the engineering value the node reports (scale inverted), with a source timestamp."""
        ep = self._by_device[tag.device]
        ep.values[tag.key] = value
        if ep.server is None:
            return
        vt = VARIANT_OF.get(tag.dtype, ua.VariantType.Double)
        dv = ua.DataValue(ua.Variant(ep._wire(value, tag), vt, is_array=bool(tag.dims)),
                          SourceTimestamp=dt.datetime.now(dt.timezone.utc),
                          ServerTimestamp=dt.datetime.now(dt.timezone.utc))
        asyncio.get_running_loop().create_task(ep.server.write_attribute_value(ep.nodes[tag.key], dv))

    def set_status(self, tag: Tag, status: int) -> None:
        """Make a node report a status code (e.g. ua.StatusCodes.UncertainLastUsableValue) with its value."""
        ep = self._by_device[tag.device]
        assert ep.server is not None
        old = ep.server.read_attribute_value(ep.nodes[tag.key])
        dv = ua.DataValue(old.Value, StatusCode=ua.StatusCode(status), SourceTimestamp=dt.datetime.now(dt.timezone.utc))
        asyncio.get_running_loop().create_task(ep.server.write_attribute_value(ep.nodes[tag.key], dv))

    def get_value(self, tag: Tag) -> Any:
        """The engineering value the node holds (e.g. after a client's write)."""
        ep = self._by_device[tag.device]
        if ep.server is None:
            return ep.values.get(tag.key)
        return ep._engineering(tag.key, ep.server.read_attribute_value(ep.nodes[tag.key]).Value.Value)
