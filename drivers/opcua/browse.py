"""Browse a server's address space: a tree with NodeIds, types, access and units, or a tag snippet for a cell."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from asyncua import ua

from edged.tag import DataType

from .values import edged_type, type_name

MAX_NODES = 20000  # stop browsing huge address spaces here (the output says so)


@dataclass(slots=True)
class NodeEntry:
    """One browsed node and what the server says about it."""

    nodeid: Any
    browse_name: Any  # ua.QualifiedName
    node_class: Any  # ua.NodeClass
    depth: int
    path: list[str] = field(default_factory=list)  # browse names from Objects
    dtype: Any = None  # DataType NodeId of variables
    access: int = 0
    rank: int = -1
    dims: tuple[int, ...] = ()
    unit: str = ""


async def _browse_children(client: Any, nodes: list[Any]) -> list[list[Any]]:
    """Forward hierarchical references (objects and variables) of many nodes, following continuation points."""
    out: list[list[Any]] = []
    for i in range(0, len(nodes), 100):
        chunk = nodes[i:i + 100]
        params = ua.BrowseParameters()
        params.RequestedMaxReferencesPerNode = 0
        params.NodesToBrowse = [ua.BrowseDescription(
            NodeId=n, BrowseDirection=ua.BrowseDirection.Forward,
            ReferenceTypeId=ua.NodeId(ua.ObjectIds.HierarchicalReferences), IncludeSubtypes=True,
            NodeClassMask=int(ua.NodeClass.Object) | int(ua.NodeClass.Variable), ResultMask=int(ua.BrowseResultMask.All))
            for n in chunk]
        results = await client.uaclient.browse(params)
        for res in results:
            refs = list(res.References) if res.StatusCode.is_good() else []
            cp = res.ContinuationPoint
            while cp:
                nxt = await client.uaclient.browse_next(ua.BrowseNextParameters(ReleaseContinuationPoints=False,
                                                                                 ContinuationPoints=[cp]))
                refs.extend(nxt[0].References or [])
                cp = nxt[0].ContinuationPoint
            out.append(refs)
    return out


async def browse(client: Any, depth: int = 4, include_ns0: bool = False) -> list[NodeEntry]:
    """Walk from the Objects folder down to ``depth`` levels; namespace-0 nodes (the Server object) are skipped."""
    objects = ua.NodeId(ua.ObjectIds.ObjectsFolder)
    entries: list[NodeEntry] = []
    children: dict[Any, list[NodeEntry]] = {}
    level = [(objects, [])]
    seen = {objects}
    for d in range(1, depth + 1):
        if not level or len(entries) >= MAX_NODES:
            break
        found = await _browse_children(client, [n for n, _ in level])
        nxt = []
        for (parent, path), refs in zip(level, found):
            for ref in refs:
                if ref.ReferenceTypeId == ua.NodeId(ua.ObjectIds.HasProperty):
                    continue  # properties (EngineeringUnits, EURange...) are shown with their variable
                nid = ref.NodeId
                if getattr(nid, "ServerIndex", 0):
                    continue
                nid = ua.NodeId(nid.Identifier, nid.NamespaceIndex, nid.NodeIdType)
                if nid in seen or (nid.NamespaceIndex == 0 and not include_ns0):
                    continue
                seen.add(nid)
                e = NodeEntry(nid, ref.BrowseName, ref.NodeClass, d, path + [ref.BrowseName])
                entries.append(e)
                children.setdefault(parent, []).append(e)
                nxt.append((nid, e.path))
        level = nxt
    variables = [e for e in entries if e.node_class == ua.NodeClass.Variable]
    await _describe(client, variables)
    ordered: list[NodeEntry] = []
    stack = list(reversed(children.get(objects, [])))
    while stack:  # depth first, so that children follow their parent
        e = stack.pop()
        ordered.append(e)
        stack.extend(reversed(children.get(e.nodeid, [])))
    return ordered


async def _read(client: Any, nodes: list[Any], attr: int) -> list[Any]:
    out = []
    for i in range(0, len(nodes), 500):
        params = ua.ReadParameters()
        params.NodesToRead = [ua.ReadValueId(NodeId=n, AttributeId=attr) for n in nodes[i:i + 500]]
        out.extend(await client.uaclient.read(params))
    return out


def _val(dv: Any) -> Any:
    return dv.Value.Value if dv.Value is not None and dv.StatusCode is not None and dv.StatusCode.is_good() else None


async def _describe(client: Any, variables: list[NodeEntry]) -> None:
    nodes = [e.nodeid for e in variables]
    if not nodes:
        return
    dtypes = await _read(client, nodes, ua.AttributeIds.DataType)
    access = await _read(client, nodes, ua.AttributeIds.UserAccessLevel)
    ranks = await _read(client, nodes, ua.AttributeIds.ValueRank)
    dims = await _read(client, nodes, ua.AttributeIds.ArrayDimensions)
    path = ua.RelativePath(Elements=[ua.RelativePathElement(
        ReferenceTypeId=ua.NodeId(ua.ObjectIds.HasProperty), IsInverse=False, IncludeSubtypes=True,
        TargetName=ua.QualifiedName("EngineeringUnits", 0))])
    eu_targets = []
    for i in range(0, len(nodes), 500):
        res = await client.uaclient.translate_browsepaths_to_nodeids(
            [ua.BrowsePath(StartingNode=n, RelativePath=path) for n in nodes[i:i + 500]])
        for r in res:
            t = r.Targets[0].TargetId if r.StatusCode.is_good() and r.Targets else None
            eu_targets.append(ua.NodeId(t.Identifier, t.NamespaceIndex, t.NodeIdType) if t is not None else None)
    have = [t for t in eu_targets if t is not None]
    eu_vals = iter(await _read(client, have, ua.AttributeIds.Value)) if have else iter(())
    for e, dt_dv, acc_dv, rank_dv, dims_dv, eu in zip(variables, dtypes, access, ranks, dims, eu_targets):
        e.dtype = _val(dt_dv)
        acc = _val(acc_dv)
        e.access = acc if isinstance(acc, int) and not isinstance(acc, bool) else 0
        rank = _val(rank_dv)
        e.rank = rank if isinstance(rank, int) and not isinstance(rank, bool) else -1
        d = _val(dims_dv)
        e.dims = tuple(x for x in d if isinstance(x, int)) if isinstance(d, list) else ()
        if eu is not None:
            text = getattr(getattr(_val(next(eu_vals)), "DisplayName", None), "Text", None)
            e.unit = text if isinstance(text, str) else ""


def nsu_nodeid(nodeid: Any, namespaces: list[str]) -> str:
    """A NodeId in the namespace-URI form (``nsu=urn:x;s=Speed``), stable across namespace reordering."""
    text = nodeid.to_string()
    if nodeid.NamespaceIndex == 0 or nodeid.NamespaceIndex >= len(namespaces):
        return text
    ident = text.split(";", 1)[1] if text.startswith("ns=") else text
    return f"nsu={namespaces[nodeid.NamespaceIndex]};{ident}"


def access_text(level: int) -> str:
    """``r``, ``w``, ``rw`` or ``-`` from an AccessLevel bit mask."""
    r = "r" if level & ua.AccessLevel.CurrentRead.mask else ""
    w = "w" if level & ua.AccessLevel.CurrentWrite.mask else ""
    return (r + w) or "-"


def tree_lines(entries: list[NodeEntry], namespaces: list[str]) -> list[str]:
    """The address space as an indented tree: name, NodeId, class, type, access, unit."""
    lines = ["Objects"]
    for e in entries:
        name = e.browse_name.Name if e.browse_name is not None else "?"
        ns = e.browse_name.NamespaceIndex if e.browse_name is not None else 0
        head = f"{'  ' * e.depth}{ns}:{name}  {nsu_nodeid(e.nodeid, namespaces)}"
        if e.node_class == ua.NodeClass.Variable:
            t = type_name(e.dtype if isinstance(e.dtype, ua.NodeId) else None)
            arr = f"[{','.join(str(d) for d in e.dims) or ''}]" if e.rank >= 0 or e.rank == -3 and e.dims else ""
            unit = f"  {e.unit}" if e.unit else ""
            head += f"  {t}{arr}  {access_text(e.access)}{unit}"
        else:
            head += "  Object"
        lines.append(head)
    if len(entries) >= MAX_NODES:
        lines.append(f"(stopped after {MAX_NODES} nodes)")
    return lines


_NAME_BAD = re.compile(r"[^A-Za-z0-9_-]+")


def tag_name(path: list[Any], taken: set[str]) -> str:
    """A valid, unique tag name from the browse names of a node's path (last names first)."""
    names = [_NAME_BAD.sub("_", q.Name or "").strip("_-") or "node" for q in path]
    for k in range(1, len(names) + 1):
        cand = "_".join(names[-k:])
        if cand[0] == "-":
            cand = "n" + cand
        if cand not in taken:
            taken.add(cand)
            return cand
    i = 2
    while f"{names[-1]}_{i}" in taken:
        i += 1
    taken.add(f"{names[-1]}_{i}")
    return f"{names[-1]}_{i}"


def toml_lines(entries: list[NodeEntry], namespaces: list[str], device: str, device_keys: list[str]) -> list[str]:
    """A device table with one tag per readable variable (namespace-URI NodeIds), ready to paste into a cell."""
    lines = [f"[device.{device}]", 'driver = "opcua"', *device_keys, ""]
    taken: set[str] = set()
    for e in entries:
        if e.node_class != ua.NodeClass.Variable or not e.access & ua.AccessLevel.CurrentRead.mask:
            continue
        dtype, _ = edged_type(e.dtype if isinstance(e.dtype, ua.NodeId) else None)
        if dtype is DataType.STRUCT:
            dtype = DataType.ANY
        array = e.rank >= 1 or e.rank == 0 and bool(e.dims)
        if array and not (e.dims and all(e.dims)):
            dtype = DataType.ANY  # length unknown: values keep their own type (a list)
            array = False
        name = tag_name(e.path, taken)
        lines.append(f"[device.{device}.tag.{name}]")
        lines.append(f"address = {json.dumps(nsu_nodeid(e.nodeid, namespaces))}")
        if dtype is not DataType.ANY:
            lines.append(f'type = "{dtype.value}"')
        if array:
            lines.append(f"dims = [{', '.join(str(d) for d in e.dims)}]")
        if e.unit:
            lines.append(f"unit = {json.dumps(e.unit)}")
        if e.access & ua.AccessLevel.CurrentWrite.mask:
            lines.append('# writable on the server: add access = "write" (and min/max) to allow writes from edged')
        lines.append("")
    return lines
