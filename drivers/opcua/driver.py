"""The OPC UA client driver: subscriptions or batched reads per scan group, secure sessions, recovery, writes."""
from __future__ import annotations

import asyncio
import datetime as _dt
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlparse

from asyncua import ua
from asyncua.ua.ua_binary import struct_from_binary

from edged.driver import DeviceSpec, Driver, GroupMode, PushSink, TagInfo
from edged.errors import DeviceUnavailable, ReadFailed, WriteFailed
from edged.schema import Section
from edged.tag import DataType, Quality, Reading, Tag

from .address import AddressError, BrowsePath, NodeRef, parse_address
from .security import MODES, POLICIES, default_application_uri
from .session import ConnectFailed, Connection, close_client, open_client
from .values import (ValueError_, compatible, converter, edged_type, quality_of, status_name, to_variant, ts_ns_of,
                     type_name)

log = logging.getLogger("edged.drivers.opcua")
# asyncua logs every request and reconnect step at INFO; edged logs the state changes that matter itself
logging.getLogger("asyncua").setLevel(logging.WARNING)

DEFAULT_MAX_NODES = 1000  # per Read / CreateMonitoredItems / TranslateBrowsePaths when the server sets no limit
SERVER_STATES = {0: "Running", 1: "Failed", 2: "NoConfiguration", 3: "Suspended", 4: "Shutdown", 5: "Test",
                 6: "CommunicationFault", 7: "Unknown"}
_LIMIT_IDS = {
    "read": ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerRead,
    "write": ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerWrite,
    "translate": ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerTranslateBrowsePathsToNodeIds,
    "monitored": ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxMonitoredItemsPerCall,
}
_BUILD_INFO = {
    "product": ua.ObjectIds.Server_ServerStatus_BuildInfo_ProductName,
    "manufacturer": ua.ObjectIds.Server_ServerStatus_BuildInfo_ManufacturerName,
    "software_version": ua.ObjectIds.Server_ServerStatus_BuildInfo_SoftwareVersion,
    "product_uri": ua.ObjectIds.Server_ServerStatus_BuildInfo_ProductUri,
}
_GONE = {ua.StatusCodes.BadNodeIdUnknown, ua.StatusCodes.BadNodeIdInvalid}
_SUB_GONE = {ua.StatusCodes.BadTimeout, ua.StatusCodes.BadSubscriptionIdInvalid, ua.StatusCodes.BadNoSubscription}


@dataclass(frozen=True, slots=True)
class OpcUaAddress:
    """A tag's node (NodeId or browse path) and how a subscription filters its changes."""

    ref: NodeRef | BrowsePath
    deadband_type: str = "absolute"  # or "percent" (of the node's EURange)


@dataclass(slots=True)
class Resolved:
    """What a connect learned about one tag's node."""

    nodeid: Any = None  # ua.NodeId, None when the address did not resolve
    problem: str = ""  # why the tag is bad for the whole session (unresolved, type mismatch)
    dtype: DataType = DataType.ANY  # the type values are checked against
    array: bool = False
    vtype: Any = None  # ua.VariantType for writes, None when unknown
    learned: bool = False  # the node's attributes were read (False: unresolved, or missing at connect)


@dataclass(slots=True)
class Batch:
    """One Read request of a polled group: its tags (with their check types) and the prepared parameters."""

    items: list[tuple[Tag, Callable[[Any], Any]]]  # tag and the converter of its wire values
    params: Any  # ua.ReadParameters
    bad: list[tuple[Tag, str]] = field(default_factory=list)  # tags that cannot be read this session


@dataclass(slots=True)
class GroupSub:
    """A subscription serving one scan group."""

    group: str
    sub_id: int = 0
    handles: dict[int, tuple[Tag, Callable[[Any], Any]]] = field(default_factory=dict)  # client handle -> tag
    items: dict[str, int] = field(default_factory=dict)  # tag key -> server monitored item id
    failed: dict[str, str] = field(default_factory=dict)  # tag key -> why it is not monitored (retried)
    last_seen: float = 0.0
    stale_after: float = 10.0
    recreations: int = 0


@dataclass(slots=True)
class Settings:
    """The OPC UA keys of one device table."""

    conn: Connection
    mode: str = "subscribe"
    poll_scans: tuple[str, ...] = ()
    queue_size: int = 1
    keepalive_s: float = 5.0
    max_nodes_per_read: int = 0
    status_interval_s: float = 5.0


def _base_dir(section: Section) -> Path:
    """The folder relative paths in the cell are relative to (the cell file's folder)."""
    f = Path(section.issues.file)
    return f.resolve().parent if f.is_file() else Path.cwd()


def read_settings(section: Section) -> Settings | None:
    """Read and check the device keys; None after recording issues."""
    before = len(section.issues.items)
    endpoint = section.get_str("endpoint")
    session_timeout = section.get_float("session_timeout_s", 60.0, min=1.0, max=86400.0)
    policy = section.get_str("security_policy", "Basic256Sha256", choices=list(POLICIES))
    mode_sec = section.get_str("security_mode", "SignAndEncrypt", choices=list(MODES))
    pki = section.get_str("pki", "pki")
    cert = section.get_str("certificate", None)
    key = section.get_str("private_key", None)
    app_uri = section.get_str("application_uri", None)
    auto_trust = section.get_bool("auto_trust_first", False)
    username = section.get_str("username", None)
    password_file = section.get_str("password_file", None)
    password_env = section.get_str("password_env", None)
    mode = section.get_str("mode", "subscribe", choices=["subscribe", "poll"])
    poll_scans = section.get_list("poll_scans", [])
    queue_size = section.get_int("queue_size", 1, min=1, max=10000)
    keepalive = section.get_float("keepalive_s", 5.0, min=0.1, max=3600.0)
    max_read = section.get_int("max_nodes_per_read", 0, min=0, max=100000)
    status_interval = section.get_float("status_interval_s", 5.0, min=0.1, max=3600.0)
    if endpoint is not None:
        u = urlparse(endpoint)
        try:
            port_ok = u.port is None or 1 <= u.port <= 65535
        except ValueError:
            port_ok = False
        if u.scheme != "opc.tcp" or not u.hostname or not port_ok:
            section.error("endpoint", f"expected an endpoint URL such as \"opc.tcp://10.0.0.5:4840\", found {endpoint!r}")
    if password_file is not None and password_env is not None:
        section.error("password_env", "expected either password_file or password_env, not both")
    if (password_file is not None or password_env is not None) and username is None:
        section.error("username", "missing required key (password_file / password_env need a username)")
    if policy == "None" and section.has("security_mode"):
        section.error("security_mode", "expected no security_mode with security_policy = \"None\"")
    if (cert is None) != (key is None):
        section.error("private_key" if key is None else "certificate",
                      "missing required key (certificate and private_key go together)")
    if len(section.issues.items) != before or endpoint is None:
        return None
    base = _base_dir(section)

    def path(p: str | None) -> Path | None:
        return None if p is None else (Path(p) if Path(p).is_absolute() else base / p)

    conn = Connection(
        endpoint=endpoint, session_timeout_s=session_timeout or 60.0,
        security_policy=policy or "Basic256Sha256",
        security_mode=(mode_sec or "SignAndEncrypt") if policy != "None" else "None",
        pki=path(pki or "pki") or Path("pki"), certificate=path(cert), private_key=path(key),
        application_uri=app_uri or default_application_uri(), auto_trust_first=bool(auto_trust),
        username=username, password_file=str(path(password_file)) if password_file else None,
        password_env=password_env)
    return Settings(conn=conn, mode=mode or "subscribe", poll_scans=tuple(poll_scans or ()),
                    queue_size=queue_size or 1, keepalive_s=keepalive or 5.0, max_nodes_per_read=max_read or 0,
                    status_interval_s=status_interval or 5.0)


class OpcUaDriver(Driver):
    """An OPC UA server reached with a fresh asyncua session per connect (see drivers/opcua/README.md)."""

    kind = "opcua"
    capabilities = frozenset({"poll", "push", "write", "read_once"})

    def __init__(self, spec: DeviceSpec, tags: list[Tag], settings: Settings) -> None:
        super().__init__(spec, tags)
        self.settings = settings
        self.conn = Connection(**{**{f: getattr(settings.conn, f) for f in settings.conn.__dataclass_fields__},
                                  "timeout_s": spec.timeout_s})
        self._groups: dict[str, list[Tag]] = {}
        for t in tags:
            self._groups.setdefault(t.scan, []).append(t)
        self._modes = {g: GroupMode.POLL if settings.mode == "poll" or g in settings.poll_scans else GroupMode.PUSH
                       for g in sorted(self._groups)}
        self._client: Any = None
        self._connected_once = False
        self._lost: asyncio.Event | None = None
        self._lost_reason = ""
        self._resolved: dict[str, Resolved] = {}
        self._batches: dict[str, list[Batch]] = {}
        self._subs: dict[int, GroupSub] = {}  # subscription id -> its group
        self._sink: PushSink | None = None
        self._health: asyncio.Task | None = None
        self._publishers: list[asyncio.Task] = []
        self._monitor_lock: asyncio.Lock | None = None
        self._limits: dict[str, int] = {}
        self._namespaces: list[str] = []
        self._logged: dict[str, str] = {}  # tag key -> last problem logged (log once per state change)
        self.server_state = "Unknown"
        self.service_level: int | None = None
        self.build_info: dict[str, str] = {}  # the server's BuildInfo (product, manufacturer, version)
        self._handle = 1000

    # -- load time ----------------------------------------------------------
    @classmethod
    def parse_tag(cls, section: Section, dtype: DataType | None) -> tuple[Any, DataType] | None:
        """Read ``address`` (NodeId or browse path) and ``deadband_type``; the type may come from the server."""
        address = section.get_str("address")
        deadband_type = section.get_str("deadband_type", "absolute", choices=["absolute", "percent"])
        dims = section.get_list("dims", None, item=int, expected="an array of positive integers")
        if dims is not None and (not dims or any(d < 1 or d > 1_000_000 for d in dims) or len(dims) > 8):
            section.error("dims", f"expected 1 to 8 dimensions of 1..1000000 elements, found {dims}")
            return None
        if address is None:
            return None
        try:
            ref = parse_address(address)
        except AddressError as exc:
            section.error("address", str(exc))
            return None
        if section.has("deadband_type") and not section.data.get("deadband"):
            section.error("deadband_type", "expected deadband_type only with a deadband")
        addr = OpcUaAddress(ref, deadband_type or "absolute")
        if dims:
            return addr, dtype or DataType.ANY, tuple(dims)
        return addr, dtype or DataType.ANY

    @classmethod
    def from_config(cls, spec: DeviceSpec, section: Section, tags: list[Tag]) -> "OpcUaDriver | None":
        """Read the device keys; no I/O."""
        settings = read_settings(section)
        if settings is None:
            return None
        groups = {t.scan for t in tags}
        for i, g in enumerate(settings.poll_scans):
            if g not in groups:
                section.error(f"poll_scans[{i}]", f"expected a scan group of this device's tags "
                                                  f"({', '.join(sorted(groups))}), found {g!r}")
                return None
        return cls(spec, tags, settings)

    def group_modes(self) -> dict[str, GroupMode]:
        """Subscriptions by default; ``mode = "poll"`` or ``poll_scans`` make groups polled."""
        return dict(self._modes)

    def plan(self) -> dict[str, list[str]]:
        """Per scan group, one line per request: the subscription, or each batched Read (limit known at connect)."""
        out: dict[str, list[str]] = {}
        limit = self.settings.max_nodes_per_read or DEFAULT_MAX_NODES
        for g, tags in self._groups.items():
            iv = self.spec.intervals.get(g, 1.0)

            def desc(t: Tag) -> str:
                extra = f", deadband {t.deadband:g} {t.addr.deadband_type}" if t.deadband else ""
                return f"{t.name} = {t.addr.ref.text()} ({t.dtype.value}{extra})"

            if self._modes[g] is GroupMode.PUSH:
                out[g] = [f"subscription: publishing and sampling every {iv * 1000:g} ms, keep-alive every "
                          f"{self._keepalive_count(g) * iv:g} s, queue {self.settings.queue_size}, "
                          f"{len(tags)} monitored item(s): " + "; ".join(desc(t) for t in tags)]
            else:
                out[g] = [f"Read of {len(tags[i:i + limit])} node(s) (at most the server's MaxNodesPerRead): "
                          + "; ".join(desc(t) for t in tags[i:i + limit]) for i in range(0, len(tags), limit)]
        return out

    def _keepalive_count(self, group: str) -> int:
        iv = self.spec.intervals.get(group, 1.0)
        return max(1, math.ceil(self.settings.keepalive_s / iv - 1e-9))

    def stale_after_s(self, group: str) -> float:
        """Two keep-alive periods plus a request timeout without a publish response mean the subscription stopped."""
        if self._modes.get(group) is not GroupMode.PUSH:
            return super().stale_after_s(group)
        iv = self.spec.intervals.get(group, 1.0)
        return max(2 * self._keepalive_count(group) * iv + self.spec.timeout_s, 1.0)

    # -- connect ------------------------------------------------------------
    async def connect(self) -> None:
        """Open a fresh session, resolve namespaces and browse paths, learn types, units and limits."""
        await self.close()
        self._monitor_lock = asyncio.Lock()  # bound to this connection's event loop
        self._lost = asyncio.Event()
        self._lost_reason = ""
        lost = self._lost

        async def on_lost(exc: Exception) -> None:
            self._lost_reason = f"connection lost: {exc!r}"
            lost.set()

        try:
            client, note = await open_client(self.conn, on_lost)
        except ConnectFailed as exc:
            self.stats.error("connection")
            raise DeviceUnavailable(f"device {self.spec.name}: {exc}") from None
        if note:
            log.warning("device %s: %s", self.spec.name, note)
        self._client = client
        try:
            await self._learn()
        except (ConnectionError, OSError, asyncio.TimeoutError, TimeoutError, ua.UaError) as exc:
            await self.close()
            self.stats.error("connection")
            raise DeviceUnavailable(f"device {self.spec.name}: connected, but reading the server's namespaces "
                                    f"and nodes failed: {exc!r}") from None
        if self._connected_once:
            self.stats.reconnects += 1
        self._connected_once = True
        self._health = asyncio.create_task(self._watch_health(), name=f"opcua-health:{self.spec.name}")

    async def _read_nodes(self, nodeids: list[Any], attr: int) -> list[Any]:
        """Read one attribute of many nodes in batches of the server's MaxNodesPerRead."""
        out: list[Any] = []
        limit = self._limits.get("read") or DEFAULT_MAX_NODES
        for i in range(0, len(nodeids), limit):
            chunk = nodeids[i:i + limit]
            params = ua.ReadParameters()
            params.NodesToRead = [ua.ReadValueId(NodeId=n, AttributeId=attr) for n in chunk]
            res = await self._client.uaclient.read(params)
            self.stats.requests += 1
            if len(res) != len(chunk):
                self.stats.error("malformed")
                raise ua.UaError(f"Read of {len(chunk)} nodes answered {len(res)} results")
            out.extend(res)
        return out

    async def _learn(self) -> None:
        """Namespaces, operation limits, server state, then every tag's node, type, dims, unit and access."""
        srv = [ua.NodeId(ua.ObjectIds.Server_NamespaceArray), ua.NodeId(ua.ObjectIds.Server_ServiceLevel),
               ua.NodeId(ua.ObjectIds.Server_ServerStatus_State)] + [ua.NodeId(i) for i in _LIMIT_IDS.values()] + [
            ua.NodeId(i) for i in _BUILD_INFO.values()]
        self._limits = {}
        res = await self._read_nodes(srv, ua.AttributeIds.Value)
        ns = res[0].Value.Value if res[0].Value is not None else None
        if not isinstance(ns, list) or not all(isinstance(u, str) for u in ns):
            self.stats.error("malformed")
            raise ua.UaError("the server's NamespaceArray is not a list of strings")
        self._namespaces = ns
        self._take_status(res[1], res[2])
        for (name, _), dv in zip(_LIMIT_IDS.items(), res[3:3 + len(_LIMIT_IDS)]):
            v = dv.Value.Value if dv.Value is not None else None
            if isinstance(v, int) and not isinstance(v, bool) and v > 0:
                self._limits[name] = v
        self.build_info = {}
        for name, dv in zip(_BUILD_INFO, res[3 + len(_LIMIT_IDS):]):
            v = dv.Value.Value if dv.Value is not None and dv.StatusCode.is_good() else None
            if isinstance(v, str) and v:
                self.build_info[name] = v[:200]
        if self.settings.max_nodes_per_read:
            self._limits["read"] = min(self._limits.get("read") or 10**9, self.settings.max_nodes_per_read)
        self._resolved = {t.key: Resolved() for t in self.tags}
        self.tag_info = {}
        await self._resolve_nodes(self.tags)
        await self._learn_types(self.tags)
        self._build_batches()

    async def _retry_unresolved(self) -> None:
        """Try again the tags whose namespace or browse path did not resolve, or whose node was missing at
        connect (a PLC that loads its program after the server started); good ones join reads and subscriptions."""
        todo = [t for t in self.tags if not self._resolved[t.key].learned
                and not self._resolved[t.key].problem.startswith("configured")]
        if not todo:
            return
        res = await self._read_nodes([ua.NodeId(ua.ObjectIds.Server_NamespaceArray)], ua.AttributeIds.Value)
        ns = res[0].Value.Value if res[0].Value is not None else None
        if isinstance(ns, list) and all(isinstance(u, str) for u in ns) and ns[:len(self._namespaces)] == self._namespaces:
            self._namespaces = ns  # namespaces are only appended during a session
        for t in todo:
            self._resolved[t.key] = Resolved()
        await self._resolve_nodes(todo)
        await self._learn_types(todo)
        fixed = [t for t in todo if self._resolved[t.key].learned and not self._resolved[t.key].problem]
        if not fixed:
            return
        log.info("device %s: resolved now: %s", self.spec.name, ", ".join(t.name for t in fixed))
        self._build_batches()
        for sub in list(self._subs.values()):
            await self._monitor(sub, [t for t in fixed if t.scan == sub.group])

    def _ns_index(self, uri: str) -> int | None:
        try:
            return self._namespaces.index(uri)
        except ValueError:
            return None

    def _nodeid(self, ref: NodeRef) -> Any:
        ns = ref.ns if ref.nsu is None else self._ns_index(ref.nsu)
        if ns is None:
            return None
        if ref.kind == "i":
            return ua.NodeId(ref.ident, ns, ua.NodeIdType.Numeric)
        if ref.kind == "s":
            return ua.NodeId(ref.ident, ns, ua.NodeIdType.String)
        if ref.kind == "g":
            return ua.NodeId(ref.ident, ns, ua.NodeIdType.Guid)
        return ua.NodeId(ref.ident, ns, ua.NodeIdType.ByteString)

    async def _resolve_nodes(self, tags: list[Tag]) -> None:
        """NodeIds with namespace URIs get today's index; browse paths are translated (batched)."""
        paths: list[tuple[Tag, Any]] = []
        for t in tags:
            r = self._resolved[t.key]
            ref = t.addr.ref
            if isinstance(ref, NodeRef):
                r.nodeid = self._nodeid(ref)
                if r.nodeid is None:
                    r.problem = f"namespace {ref.nsu} is not on the server (it has: {', '.join(self._namespaces)})"
                continue
            elements = []
            for e in ref.elements:
                idx = e.ns if e.nsu is None else self._ns_index(e.nsu)
                if idx is None:
                    r.problem = f"namespace {e.nsu} of browse path {ref.text()} is not on the server"
                    break
                elements.append(ua.RelativePathElement(
                    ReferenceTypeId=ua.NodeId(ua.ObjectIds.HierarchicalReferences), IsInverse=False,
                    IncludeSubtypes=True, TargetName=ua.QualifiedName(e.name, idx)))
            else:
                paths.append((t, ua.BrowsePath(StartingNode=ua.NodeId(ua.ObjectIds.RootFolder),
                                               RelativePath=ua.RelativePath(Elements=elements))))
        limit = self._limits.get("translate") or DEFAULT_MAX_NODES
        for i in range(0, len(paths), limit):
            chunk = paths[i:i + limit]
            results = await self._client.uaclient.translate_browsepaths_to_nodeids([p for _, p in chunk])
            self.stats.requests += 1
            if len(results) != len(chunk):
                self.stats.error("malformed")
                raise ua.UaError(f"TranslateBrowsePaths of {len(chunk)} paths answered {len(results)} results")
            for (t, _), res in zip(chunk, results):
                r = self._resolved[t.key]
                if not res.StatusCode.is_good() or not res.Targets:
                    r.problem = f"browse path {t.addr.ref.text()} not found on the server ({status_name(res.StatusCode)})"
                    continue
                r.nodeid = self._local(res.Targets[0].TargetId)
                if r.nodeid is None:
                    r.problem = f"browse path {t.addr.ref.text()} leads to another server"

    def _local(self, target: Any) -> Any:
        """A plain NodeId of this server from an ExpandedNodeId (None when it is on another server)."""
        if getattr(target, "ServerIndex", 0):
            return None
        ns = target.NamespaceIndex
        uri = getattr(target, "NamespaceUri", None)
        if uri:
            ns = self._ns_index(uri)
            if ns is None:
                return None
        return ua.NodeId(target.Identifier, ns, target.NodeIdType)

    async def _learn_types(self, all_tags: list[Tag]) -> None:
        """DataType, ValueRank, ArrayDimensions, AccessLevel and EngineeringUnits of every resolved node."""
        tags = [t for t in all_tags if self._resolved[t.key].nodeid is not None]
        nodes = [self._resolved[t.key].nodeid for t in tags]
        dtypes = await self._read_nodes(nodes, ua.AttributeIds.DataType)
        ranks = await self._read_nodes(nodes, ua.AttributeIds.ValueRank)
        dims = await self._read_nodes(nodes, ua.AttributeIds.ArrayDimensions)
        access = await self._read_nodes(nodes, ua.AttributeIds.UserAccessLevel)
        units = await self._units(nodes)
        for t, dt_dv, rank_dv, dims_dv, acc_dv, unit in zip(tags, dtypes, ranks, dims, access, units):
            r = self._resolved[t.key]
            if not dt_dv.StatusCode.is_good():
                # e.g. BadNodeIdUnknown: the node is missing now; it is read (and retried) like any other
                self._log_problem(t, f"node {r.nodeid.to_string()} is not readable now ({status_name(dt_dv.StatusCode)})")
                r.dtype, r.array = t.dtype, bool(t.dims)
                continue
            dt_node = dt_dv.Value.Value if dt_dv.Value is not None else None
            server_type, vtype = edged_type(dt_node if isinstance(dt_node, ua.NodeId) else None)
            rank = rank_dv.Value.Value if rank_dv.Value is not None and rank_dv.StatusCode.is_good() else -1
            rank = rank if isinstance(rank, int) and not isinstance(rank, bool) else -1
            arr_dims = dims_dv.Value.Value if dims_dv.Value is not None and dims_dv.StatusCode.is_good() else None
            arr_dims = tuple(int(d) for d in arr_dims) if isinstance(arr_dims, list) and all(
                isinstance(d, int) and not isinstance(d, bool) for d in arr_dims) else ()
            server_array = rank >= 1 or rank == 0 and bool(arr_dims)
            r.vtype = vtype
            r.learned = True
            r.array = server_array
            r.dtype = t.dtype if t.dtype is not DataType.ANY else server_type
            desc = f"OPC UA {type_name(dt_node if isinstance(dt_node, ua.NodeId) else None)}"
            if not compatible(t.dtype, server_type):
                r.problem = (f"configured type {t.dtype.value!r} does not fit the server's DataType {desc} "
                             f"({server_type.value}) of {r.nodeid.to_string()}: change the tag's type to "
                             f"{server_type.value!r} or remove it")
            elif bool(t.dims) != server_array and t.dtype is not DataType.ANY:
                r.problem = (f"configured as {'an array' if t.dims else 'a scalar'} but {r.nodeid.to_string()} is "
                             f"{'an array' if server_array else 'a scalar'} (ValueRank {rank})"
                             + ("" if t.dims else f": add dims = {list(arr_dims) or ['N']} to the tag"))
            elif t.dims and arr_dims and all(arr_dims) and math.prod(arr_dims) != math.prod(t.dims):
                r.problem = (f"configured dims {list(t.dims)} but {r.nodeid.to_string()} has ArrayDimensions "
                             f"{list(arr_dims)}")
            if t.writable and isinstance(acc_dv.Value.Value if acc_dv.Value else None, int) \
                    and not acc_dv.Value.Value & ua.AccessLevel.CurrentWrite.mask:
                log.warning("device %s: tag %s is configured writable but the server says %s is read-only for "
                            "this session", self.spec.name, t.name, r.nodeid.to_string())
            self.tag_info[t.name] = TagInfo(server_type, arr_dims if server_array else (), unit, desc)
        for t in all_tags:
            r = self._resolved[t.key]
            if r.problem:
                self._log_problem(t, r.problem)
            elif self._logged.get(t.key, "").startswith(("namespace", "browse path", "configured")):
                self._logged.pop(t.key, None)

    async def _units(self, nodes: list[Any]) -> list[str]:
        """The EngineeringUnits property (display name) of each node, "" when it has none."""
        if not nodes:
            return []
        path = ua.RelativePath(Elements=[ua.RelativePathElement(
            ReferenceTypeId=ua.NodeId(ua.ObjectIds.HasProperty), IsInverse=False, IncludeSubtypes=True,
            TargetName=ua.QualifiedName("EngineeringUnits", 0))])
        limit = self._limits.get("translate") or DEFAULT_MAX_NODES
        eu_nodes: list[Any] = []
        for i in range(0, len(nodes), limit):
            chunk = nodes[i:i + limit]
            res = await self._client.uaclient.translate_browsepaths_to_nodeids(
                [ua.BrowsePath(StartingNode=n, RelativePath=path) for n in chunk])
            self.stats.requests += 1
            if len(res) != len(chunk):
                self.stats.error("malformed")
                raise ua.UaError("TranslateBrowsePaths answered a wrong number of results")
            for r in res:
                tgt = r.Targets[0].TargetId if r.StatusCode.is_good() and r.Targets else None
                eu_nodes.append(self._local(tgt) if tgt is not None else None)
        have = [n for n in eu_nodes if n is not None]
        values = iter(await self._read_nodes(have, ua.AttributeIds.Value)) if have else iter(())
        out = []
        for n in eu_nodes:
            if n is None:
                out.append("")
                continue
            dv = next(values)
            eu = dv.Value.Value if dv.Value is not None else None
            text = getattr(getattr(eu, "DisplayName", None), "Text", None)
            out.append(text if isinstance(text, str) else "")
        return out

    def _build_batches(self) -> None:
        """Prepared Read requests per group, at most MaxNodesPerRead nodes each (also for pushed groups: read_once)."""
        limit = self._limits.get("read") or DEFAULT_MAX_NODES
        self._batches = {}
        for g, tags in self._groups.items():
            ok = [t for t in tags if not self._resolved[t.key].problem]
            bad = [(t, self._resolved[t.key].problem) for t in tags if self._resolved[t.key].problem]
            batches = []
            for i in range(0, len(ok), limit):
                chunk = ok[i:i + limit]
                params = ua.ReadParameters(MaxAge=0, TimestampsToReturn=ua.TimestampsToReturn.Both)
                params.NodesToRead = [ua.ReadValueId(NodeId=self._resolved[t.key].nodeid,
                                                     AttributeId=ua.AttributeIds.Value) for t in chunk]
                batches.append(Batch([(t, self._conv(t)) for t in chunk], params))
            if not batches:
                batches.append(Batch([], None))
            batches[0].bad = bad
            self._batches[g] = batches

    def _conv(self, tag: Tag) -> Callable[[Any], Any]:
        r = self._resolved[tag.key]
        return converter(r.dtype, r.array)

    def _log_problem(self, tag: Tag, problem: str) -> None:
        """Log a tag's problem once per change (no floods)."""
        if self._logged.get(tag.key) != problem:
            self._logged[tag.key] = problem
            log.warning("device %s: tag %s: %s", self.spec.name, tag.name, problem)

    def _log_ok(self, tag: Tag) -> None:
        if self._logged.pop(tag.key, None) is not None:
            log.info("device %s: tag %s: good values again", self.spec.name, tag.name)

    # -- values -------------------------------------------------------------
    def _reading(self, tag: Tag, conv: Callable[[Any], Any], dv: Any, now_ns: int) -> Reading:
        """A DataValue as a Reading; anything that does not fit the tag is bad (and counted)."""
        status = dv.StatusCode
        q = Quality.GOOD if status is None or not status.value else quality_of(status)
        if q is Quality.BAD:
            self._log_problem(tag, f"the server reports {status_name(status)}")
            return Reading(tag, None, Quality.BAD, now_ns)
        variant = dv.Value
        value = variant.Value if variant is not None else None
        if value is None:
            self._log_problem(tag, "the server sent no value (null Variant)")
            return Reading(tag, None, Quality.BAD, now_ns)
        try:
            raw = conv(value)
            dims = tag.dims
            if dims and len(raw) != _size(dims):
                raise ValueError_(f"expected {_size(dims)} array elements, found {len(raw)}")
        except ValueError_ as exc:
            self.stats.error("malformed")
            self._log_problem(tag, f"value does not fit the tag: {exc}")
            return Reading(tag, None, Quality.BAD, now_ns)
        if tag.key in self._logged:
            self._log_ok(tag)
        if tag.scale != 1.0 or tag.offset != 0.0:
            if isinstance(raw, list):
                raw = [x if isinstance(x, (bool, str)) else x * tag.scale + tag.offset for x in raw]
            else:
                raw = tag.to_engineering(raw)
        ts = dv.SourceTimestamp or dv.ServerTimestamp
        if ts is None:
            return Reading(tag, raw, q, now_ns)
        if ts.__class__ is _DATETIME and ts.tzinfo is not None:  # asyncua decodes aware UTC datetimes
            try:
                ns = int(ts.timestamp() * 1e9)
            except (OverflowError, OSError, ValueError):
                ns = 0
            return Reading(tag, raw, q, ns if ns > 0 else now_ns)
        return Reading(tag, raw, q, ts_ns_of(dv, now_ns))

    def _readings(self, items: list[tuple[Tag, Callable[[Any], Any]]], results: list[Any], now_ns: int) -> list[Reading]:
        """Readings of a Read answer: the common case (good, scalar, unscaled, aware timestamp) inline, else _reading."""
        out = []
        append = out.append
        logged = self._logged
        slow = self._reading
        for (tag, conv), dv in zip(items, results):
            st = dv.StatusCode
            variant = dv.Value
            ts = dv.SourceTimestamp
            if (st is None or not st.value) and variant is not None and not tag.dims and tag.key not in logged \
                    and tag.scale == 1.0 and tag.offset == 0.0 and ts is not None and ts.__class__ is _DATETIME \
                    and ts.tzinfo is not None:
                value = variant.Value
                if value is not None:
                    try:
                        raw = conv(value)
                        ns = int(ts.timestamp() * 1e9)
                    except (ValueError_, OverflowError, OSError, ValueError):
                        append(slow(tag, conv, dv, now_ns))
                        continue
                    append(Reading(tag, raw, Quality.GOOD, ns if ns > 0 else now_ns))
                    continue
            append(slow(tag, conv, dv, now_ns))
        return out

    # -- polling ------------------------------------------------------------
    def _mark_lost(self) -> None:
        """The transport failed: close() then drops the session without waiting on the peer."""
        if self._lost is not None:
            self._lost.set()

    def _alive_client(self) -> Any:
        if self._client is None:
            raise DeviceUnavailable(f"device {self.spec.name}: not connected")
        if self._lost is not None and self._lost.is_set():
            raise DeviceUnavailable(f"device {self.spec.name}: {self._lost_reason or 'connection lost'}")
        return self._client

    async def read(self, group: str) -> list[Reading]:
        """One batched Read per MaxNodesPerRead nodes of the group; bad status marks only its own tag."""
        client = self._alive_client()
        out: list[Reading] = []
        now_ns = time.time_ns()
        for batch in self._batches.get(group, ()):
            out.extend(Reading(t, None, Quality.BAD, now_ns) for t, _ in batch.bad)
            if not batch.items:
                continue
            try:
                results = await client.uaclient.read(batch.params)
            except (ConnectionError, OSError, asyncio.TimeoutError, TimeoutError) as exc:
                self.stats.timeouts += isinstance(exc, (asyncio.TimeoutError, TimeoutError))
                self._lost_reason = f"read failed: {exc!r}"
                self._mark_lost()
                raise DeviceUnavailable(f"device {self.spec.name}: {self._lost_reason}") from None
            except ua.UaStatusCodeError as exc:
                self.stats.error("exception")
                if getattr(exc, "code", None) in (ua.StatusCodes.BadSessionIdInvalid, ua.StatusCodes.BadSessionClosed,
                                                  ua.StatusCodes.BadSecureChannelIdInvalid):
                    raise DeviceUnavailable(f"device {self.spec.name}: session lost ({type(exc).__name__})") from None
                raise ReadFailed(f"device {self.spec.name}: Read of scan {group} refused: {type(exc).__name__}",
                                 kind="exception") from None
            except ua.UaError as exc:
                self.stats.error("malformed")
                raise ReadFailed(f"device {self.spec.name}: malformed Read answer: {exc}", kind="malformed") from None
            self.stats.requests += 1
            items = batch.items
            if len(results) != len(items):
                self.stats.error("malformed")
                raise ReadFailed(f"device {self.spec.name}: Read of {len(items)} nodes answered {len(results)} "
                                 f"results", kind="malformed")
            now_ns = time.time_ns()
            out.extend(self._readings(items, results, now_ns))
        self.stats.values += len(out)
        return out

    # -- subscriptions --------------------------------------------------------
    async def run_push(self, sink: PushSink) -> None:
        """Create one subscription per pushed group; watch keep-alives, re-create silent ones, retry lost nodes."""
        client = self._alive_client()
        self._sink = sink
        groups = [g for g, m in self._modes.items() if m is GroupMode.PUSH]
        try:
            for g in groups:
                await self._create_subscription(g)
        except (ConnectionError, OSError, asyncio.TimeoutError, TimeoutError, ua.UaError) as exc:
            raise DeviceUnavailable(f"device {self.spec.name}: creating subscriptions failed: {exc!r}") from None
        loop = asyncio.get_running_loop()
        period = max(0.05, min(0.5, min((self.spec.intervals.get(g, 1.0) for g in groups), default=0.5)))
        retry_s = self.settings.keepalive_s
        next_retry = loop.time() + retry_s
        assert self._lost is not None
        while True:
            try:
                await asyncio.wait_for(self._lost.wait(), period)
            except (asyncio.TimeoutError, TimeoutError):
                pass
            if self._lost.is_set() or self._client is not client:
                raise DeviceUnavailable(f"device {self.spec.name}: {self._lost_reason or 'connection lost'}")
            now = loop.time()
            try:
                for sub in list(self._subs.values()):
                    if now - sub.last_seen > sub.stale_after:
                        self.stats.error("subscription_silent")
                        self.stats.unit_state[f"subscription:{sub.group}"] = "silent"
                        log.warning("device %s: the subscription of scan %s sent nothing (not even a keep-alive) "
                                    "for %.1f s: re-creating it", self.spec.name, sub.group, now - sub.last_seen)
                        await self._recreate(sub)
                if now >= next_retry:
                    next_retry = now + retry_s
                    for sub in list(self._subs.values()):
                        if sub.failed:
                            await self._monitor(sub, [t for t in self._groups[sub.group] if t.key in sub.failed])
            except (ConnectionError, OSError, asyncio.TimeoutError, TimeoutError) as exc:
                raise DeviceUnavailable(f"device {self.spec.name}: subscription service failed: {exc!r}") from None
            except ua.UaStatusCodeError as exc:
                raise DeviceUnavailable(f"device {self.spec.name}: the server refused re-creating a subscription "
                                        f"({type(exc).__name__})") from None

    async def _create_subscription(self, group: str) -> GroupSub:
        """CreateSubscription for a group, then its monitored items (batched by MaxMonitoredItemsPerCall)."""
        iv_ms = self.spec.intervals.get(group, 1.0) * 1000.0
        ka = self._keepalive_count(group)
        params = ua.CreateSubscriptionParameters(
            RequestedPublishingInterval=iv_ms, RequestedLifetimeCount=max(10 * ka, 30),
            RequestedMaxKeepAliveCount=ka, MaxNotificationsPerPublish=0, PublishingEnabled=True, Priority=0)
        # CreateSubscription sent directly: asyncua's session would start its own publish loop, which logs a
        # traceback every second after a connection loss; the driver runs its own (_publish_loop)
        request = ua.CreateSubscriptionRequest()
        request.Parameters = params
        data = await self._client.uaclient.session._send_request(request)
        response = struct_from_binary(ua.CreateSubscriptionResponse, data)
        response.ResponseHeader.ServiceResult.check()
        res = response.Parameters
        self.stats.requests += 1
        sub = GroupSub(group, res.SubscriptionId)
        rev_iv = res.RevisedPublishingInterval if res.RevisedPublishingInterval > 0 else iv_ms
        rev_ka = res.RevisedMaxKeepAliveCount if res.RevisedMaxKeepAliveCount > 0 else ka
        # a little later than the runtime marks the group stale (stale_after_s), so that stale comes first
        sub.stale_after = max(2 * rev_ka * rev_iv / 1000.0 + self.spec.timeout_s, 1.0) + 0.5
        sub.last_seen = asyncio.get_running_loop().time()
        self._subs[sub.sub_id] = sub
        self._ensure_publishers()
        self.stats.unit_state[f"subscription:{group}"] = "up"
        bad = [Reading(t, None, Quality.BAD, time.time_ns()) for t in self._groups[group]
               if self._resolved[t.key].problem]
        if bad and self._sink is not None:
            self._sink.deliver(bad)
        await self._monitor(sub, [t for t in self._groups[group] if not self._resolved[t.key].problem])
        return sub

    def _ensure_publishers(self) -> None:
        """One outstanding Publish request per subscription: a subscription that finds none when it is due
        counts towards its lifetime on the server, and starves next to a faster one."""
        session = self._client.uaclient.session
        self._publishers = [t for t in self._publishers if not t.done()]
        while len(self._publishers) < len(self._subs):
            self._publishers.append(asyncio.create_task(self._publish_loop(session),
                                                        name=f"opcua-publish:{self.spec.name}"))

    async def _publish_loop(self, session: Any) -> None:
        """Send Publish requests and hand the responses to _on_publish; a transport error is a lost connection."""
        acks: list[Any] = []
        while True:
            try:
                response = await session.publish(acks)
                acks = []
                response.ResponseHeader.ServiceResult.check()
            except (ua.uaerrors.BadTimeout, ua.uaerrors.BadNoSubscription, ua.uaerrors.BadTooManyPublishRequests):
                acks = []
                await asyncio.sleep(0.1)  # e.g. between deleting and re-creating a subscription
                continue
            except ua.UaStatusCodeError as exc:
                self.stats.error("exception")
                self._lost_reason = f"Publish refused: {type(exc).__name__}"
                break
            except ua.UaError:
                self.stats.error("malformed")
                acks = []
                continue
            except (ConnectionError, OSError, asyncio.TimeoutError, TimeoutError) as exc:
                self._lost_reason = f"connection lost: {exc!r}"
                break
            params = response.Parameters
            msg = params.NotificationMessage
            self._on_publish(params)
            if msg.NotificationData and params.SubscriptionId in self._subs:
                acks.append(ua.SubscriptionAcknowledgement(SubscriptionId=params.SubscriptionId,
                                                           SequenceNumber=msg.SequenceNumber))
        if self._lost is not None:
            self._lost.set()

    async def _recreate(self, sub: GroupSub) -> None:
        """Delete a silent subscription (best effort) and create it again."""
        self._subs.pop(sub.sub_id, None)
        try:
            await asyncio.wait_for(self._client.uaclient.delete_subscriptions([sub.sub_id]), self.spec.timeout_s)
        except Exception:  # the server may have dropped it already
            pass
        new = await self._create_subscription(sub.group)
        new.recreations = sub.recreations + 1
        log.info("device %s: subscription of scan %s re-created (id %d)", self.spec.name, sub.group, new.sub_id)

    def _filter(self, tag: Tag) -> Any:
        if not tag.deadband:
            return None
        raw = tag.deadband / abs(tag.scale) if tag.addr.deadband_type == "absolute" else tag.deadband
        return ua.DataChangeFilter(Trigger=ua.DataChangeTrigger.StatusValue,
                                   DeadbandType=1 if tag.addr.deadband_type == "absolute" else 2,
                                   DeadbandValue=float(raw))

    async def _monitor(self, sub: GroupSub, tags: list[Tag]) -> None:
        """Create monitored items for tags (new, or retried after their node was missing), one call at a time."""
        if not tags:
            return
        if self._monitor_lock is None:
            self._monitor_lock = asyncio.Lock()
        async with self._monitor_lock:
            await self._monitor_locked(sub, tags)

    async def _monitor_locked(self, sub: GroupSub, tags: list[Tag]) -> None:
        uac = self._client.uaclient
        stale_items = [sub.items.pop(t.key) for t in tags if t.key in sub.items]
        if stale_items:
            try:
                await uac.delete_monitored_items(ua.DeleteMonitoredItemsParameters(
                    SubscriptionId=sub.sub_id, MonitoredItemIds=stale_items))
            except ua.UaStatusCodeError:
                pass
        iv_ms = self.spec.intervals.get(sub.group, 1.0) * 1000.0
        limit = self._limits.get("monitored") or DEFAULT_MAX_NODES
        for i in range(0, len(tags), limit):
            chunk = tags[i:i + limit]
            reqs = []
            handles = []
            for t in chunk:
                r = self._resolved[t.key]
                self._handle += 1
                handles.append(self._handle)
                sub.handles[self._handle] = (t, self._conv(t))
                reqs.append(ua.MonitoredItemCreateRequest(
                    ItemToMonitor=ua.ReadValueId(NodeId=r.nodeid, AttributeId=ua.AttributeIds.Value),
                    MonitoringMode=ua.MonitoringMode.Reporting,
                    RequestedParameters=ua.MonitoringParameters(
                        ClientHandle=self._handle, SamplingInterval=iv_ms, Filter=self._filter(t),
                        QueueSize=self.settings.queue_size, DiscardOldest=True)))
            params = ua.CreateMonitoredItemsParameters(SubscriptionId=sub.sub_id, ItemsToCreate=reqs,
                                                       TimestampsToReturn=ua.TimestampsToReturn.Both)
            results = await uac.create_monitored_items(params)
            self.stats.requests += 1
            if len(results) != len(chunk):
                self.stats.error("malformed")
                raise ua.UaError(f"CreateMonitoredItems of {len(chunk)} answered {len(results)} results")
            now_ns = time.time_ns()
            bad = []
            for t, h, res in zip(chunk, handles, results):
                if res.StatusCode.is_good():
                    sub.items[t.key] = res.MonitoredItemId
                    sub.failed.pop(t.key, None)
                else:
                    del sub.handles[h]
                    why = status_name(res.StatusCode)
                    if sub.failed.get(t.key) != why:
                        self._log_problem(t, f"cannot monitor {self._resolved[t.key].nodeid.to_string()}: {why} "
                                             f"(retried every {self.settings.keepalive_s:g} s)")
                    sub.failed[t.key] = why
                    bad.append(Reading(t, None, Quality.BAD, now_ns))
            if bad and self._sink is not None:
                self._sink.deliver(bad)

    def _on_publish(self, result: Any) -> None:
        """A publish response (data, keep-alive or status change) of one of this session's subscriptions."""
        sub = self._subs.get(result.SubscriptionId)
        if sub is None:
            return
        sink = self._sink
        sub.last_seen = asyncio.get_running_loop().time()
        if self.stats.unit_state.get(f"subscription:{sub.group}") != "up":
            self.stats.unit_state[f"subscription:{sub.group}"] = "up"
        data = result.NotificationMessage.NotificationData
        if not data:
            if sink is not None:
                sink.alive(sub.group)
            return
        now_ns = time.time_ns()
        out: list[Reading] = []
        for notif in data:
            if isinstance(notif, ua.DataChangeNotification):
                handles = sub.handles
                for item in notif.MonitoredItems:
                    hit = handles.get(item.ClientHandle)
                    if hit is None:
                        self.stats.error("malformed")  # a handle this session never created
                        continue
                    tag, conv = hit
                    r = self._reading(tag, conv, item.Value, now_ns)
                    out.append(r)
                    st = item.Value.StatusCode
                    if r.quality is Quality.BAD and st is not None and st.value in _GONE:
                        sub.failed[tag.key] = status_name(st)  # re-created by the retry loop
            elif isinstance(notif, ua.StatusChangeNotification):
                code = notif.Status.value if notif.Status is not None else 0
                if code in _SUB_GONE:
                    log.warning("device %s: the server ended the subscription of scan %s (%s)", self.spec.name,
                                sub.group, status_name(notif.Status))
                    sub.last_seen = -1e18  # re-created by the watch loop
                elif code == ua.StatusCodes.BadShutdown and self._lost is not None:
                    self._lost_reason = "the server shut down or the connection was lost"
                    self._lost.set()
        if out:
            self.stats.values += len(out)
            if sink is not None:
                sink.deliver(out)
        elif sink is not None:
            sink.alive(sub.group)

    # -- health ---------------------------------------------------------------
    def _take_status(self, level_dv: Any, state_dv: Any) -> None:
        level = level_dv.Value.Value if level_dv.Value is not None and level_dv.StatusCode.is_good() else None
        state = state_dv.Value.Value if state_dv.Value is not None and state_dv.StatusCode.is_good() else None
        self.service_level = level if isinstance(level, int) and not isinstance(level, bool) else None
        code = int(state.value if hasattr(state, "value") else state) if isinstance(state, int) else None
        new_state = SERVER_STATES.get(code, f"Unknown({code})") if code is not None else "Unknown"
        if new_state != self.server_state and self.server_state != "Unknown" or new_state not in ("Running", "Unknown") \
                and new_state != self.server_state:
            log.warning("device %s: server state %s -> %s (service level %s)", self.spec.name, self.server_state,
                        new_state, self.service_level)
        self.server_state = new_state
        self.stats.unit_state["server"] = "up" if new_state == "Running" else "down"

    async def _watch_health(self) -> None:
        """Read ServiceLevel and ServerStatus/State every status_interval_s; a failed read is a lost connection."""
        nodes = [ua.NodeId(ua.ObjectIds.Server_ServiceLevel), ua.NodeId(ua.ObjectIds.Server_ServerStatus_State)]
        params = ua.ReadParameters(NodesToRead=[ua.ReadValueId(NodeId=n, AttributeId=ua.AttributeIds.Value)
                                                for n in nodes])
        client = self._client
        while True:
            await asyncio.sleep(self.settings.status_interval_s)
            try:
                res = await client.uaclient.read(params)
            except (ConnectionError, OSError, asyncio.TimeoutError, TimeoutError, ua.UaError) as exc:
                if self._lost is not None and not self._lost.is_set():
                    self._lost_reason = f"the server stopped answering: {exc!r}"
                    self._lost.set()
                return
            if len(res) == 2:
                self._take_status(res[0], res[1])
            try:
                await self._retry_unresolved()
            except (ConnectionError, OSError, asyncio.TimeoutError, TimeoutError) as exc:
                if self._lost is not None and not self._lost.is_set():
                    self._lost_reason = f"connection lost: {exc!r}"
                    self._lost.set()
                return
            except ua.UaError as exc:  # e.g. a refused request: the tags stay bad, tried again next time
                log.debug("device %s: resolving again failed: %r", self.spec.name, exc)

    # -- writes ---------------------------------------------------------------
    async def write(self, tag: Tag, value: Any) -> None:
        """A value-only write (no status code, no timestamps), typed to the node's DataType."""
        client = self._alive_client()
        r = self._resolved.get(tag.key)
        if r is None or r.nodeid is None or r.problem:
            raise WriteFailed(f"{tag.key}: {r.problem if r and r.problem else 'node not resolved'}", kind="refused")
        if r.vtype is None:
            raise WriteFailed(f"{tag.key}: the server's DataType of {r.nodeid.to_string()} is unknown or not a "
                              f"built-in type; cannot type the value", kind="refused")
        if isinstance(value, list):
            raw = [tag.to_raw(v) for v in value]
        else:
            raw = tag.to_raw(value)
        server_type, _ = edged_type(ua.NodeId(_VT_TO_DT.get(r.vtype, 0)))
        limits = server_type.limits if server_type.is_integer else None
        for v in raw if isinstance(raw, list) else [raw]:
            if limits and isinstance(v, (int, float)) and not isinstance(v, bool) and not limits[0] <= v <= limits[1]:
                raise WriteFailed(f"{tag.key}: {v} is outside the range of the node's type {server_type.value}",
                                  kind="refused")
        try:
            variant = to_variant(raw, r.vtype, r.array)
        except ValueError_ as exc:
            raise WriteFailed(f"{tag.key}: {exc}", kind="refused") from None
        wv = ua.WriteValue(NodeId=r.nodeid, AttributeId=ua.AttributeIds.Value,
                           Value=ua.DataValue(Value=variant, StatusCode=None))
        try:
            results = await client.uaclient.write(ua.WriteParameters(NodesToWrite=[wv]))
        except (ConnectionError, OSError, asyncio.TimeoutError, TimeoutError) as exc:
            self.stats.writes_failed += 1
            self._mark_lost()
            raise DeviceUnavailable(f"device {self.spec.name}: write failed: {exc!r}") from None
        except ua.UaStatusCodeError as exc:
            self.stats.writes_failed += 1
            raise WriteFailed(f"{tag.key}: the server refused the write: {type(exc).__name__}", kind="exception") from None
        self.stats.requests += 1
        if len(results) != 1:
            self.stats.writes_failed += 1
            self.stats.error("malformed")
            raise WriteFailed(f"{tag.key}: Write answered {len(results)} results for 1 value", kind="malformed")
        if not results[0].is_good():
            self.stats.writes_failed += 1
            raise WriteFailed(f"{tag.key}: the server refused the write: {status_name(results[0])}", kind="exception")
        self.stats.writes += 1

    # -- close / status ---------------------------------------------------------
    async def close(self) -> None:
        """Close the session (or just drop it after a loss); safe when not connected."""
        if self._health is not None:
            self._health.cancel()
            await asyncio.gather(self._health, return_exceptions=True)
            self._health = None
        for task in self._publishers:
            task.cancel()
        await asyncio.gather(*self._publishers, return_exceptions=True)
        self._publishers = []
        client, self._client = self._client, None
        self._subs = {}
        self._sink = None
        if client is not None:
            lost = self._lost is not None and self._lost.is_set()
            await close_client(client, self.spec.timeout_s, lost=lost)
            for key in list(self.stats.unit_state):
                self.stats.unit_state[key] = "down"

    def status(self) -> dict[str, Any]:
        """Endpoint, security, server state and service level, namespaces, limits and subscriptions.

        ``gauges`` become ``edged_device_fact{device,name}`` metrics (service_level 0-255, server_running 1/0,
        subscriptions, subscription_recreations, unresolved_tags); ``info`` (the server's BuildInfo) becomes
        ``edged_device_info``.
        """
        unresolved = {t.name: self._resolved[t.key].problem for t in self.tags
                      if t.key in self._resolved and self._resolved[t.key].problem}
        gauges: dict[str, float] = {"server_running": 1 if self.server_state == "Running" else 0,
                                    "subscriptions": len(self._subs),
                                    "subscription_recreations": sum(s.recreations for s in self._subs.values()),
                                    "unresolved_tags": len(unresolved)}
        if self.service_level is not None:
            gauges["service_level"] = self.service_level
        return {
            "gauges": gauges,
            "info": dict(self.build_info),
            "endpoint": self.conn.endpoint,
            "security": f"{self.conn.security_policy}/{self.conn.security_mode}",
            "server_state": self.server_state,
            "service_level": self.service_level,
            "namespaces": list(self._namespaces),
            "operation_limits": dict(self._limits),
            "subscriptions": {s.group: {"id": s.sub_id, "monitored": len(s.items), "failed": len(s.failed),
                                        "recreated": s.recreations} for s in self._subs.values()},
            "unresolved": unresolved,
        }


_DATETIME = _dt.datetime


def _size(dims: tuple[int, ...]) -> int:
    return math.prod(dims)


_VT_TO_DT = {ua.VariantType.Boolean: 1, ua.VariantType.SByte: 2, ua.VariantType.Byte: 3, ua.VariantType.Int16: 4,
             ua.VariantType.UInt16: 5, ua.VariantType.Int32: 6, ua.VariantType.UInt32: 7, ua.VariantType.Int64: 8,
             ua.VariantType.UInt64: 9, ua.VariantType.Float: 10, ua.VariantType.Double: 11}
