"""Data flow of a cycle task: execution order, algebraic-loop detection, pin kinds, and the flat C layout."""
from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Any

from edged.control.blocks_catalog import BOOL, GENERIC, INT, BlockType
from edged.control.config import BlockSpec, Source, TaskSpec, kind_name, kinds_compatible, tag_kind
from edged.schema import Section
from edged.tag import Tag

DELAY_TYPE = "Z1"


def _deps(block: BlockSpec) -> list[tuple[str, str]]:
    """(input pin, source block) pairs this block must run after; a Z1 block depends on nothing."""
    if block.btype.name == DELAY_TYPE:
        return []
    return [(pin, src.block) for pin, src in block.inputs.items() if src.kind == "block"]


def order_blocks(task_sec: Section, blocks: list[BlockSpec]) -> list[BlockSpec] | None:
    """Blocks in execution order (data flow, then declaration order); None after reporting a loop."""
    index = {b.name: i for i, b in enumerate(blocks)}
    deps = {b.name: {src for _, src in _deps(b) if src in index} for b in blocks}
    users: dict[str, list[str]] = {b.name: [] for b in blocks}
    for name, ds in deps.items():
        for d in ds:
            users[d].append(name)
    missing = {name: len(ds) for name, ds in deps.items()}
    ready = [index[n] for n, c in missing.items() if c == 0]
    heapq.heapify(ready)
    order: list[BlockSpec] = []
    while ready:
        b = blocks[heapq.heappop(ready)]
        order.append(b)
        for u in users[b.name]:
            missing[u] -= 1
            if missing[u] == 0:
                heapq.heappush(ready, index[u])
    if len(order) == len(blocks):
        return order
    _report_loop(task_sec, blocks, {n for n, c in missing.items() if c > 0}, deps)
    return None


def _report_loop(task_sec: Section, blocks: list[BlockSpec], left: set[str], deps: dict[str, set[str]]) -> None:
    by_name = {b.name: b for b in blocks}
    start = next(b.name for b in blocks if b.name in left)
    # walk dependencies inside the unplaced set until a block repeats: that is a loop
    path, seen, cur = [start], {start: 0}, start
    while True:
        nxt = next(d for d in sorted(deps[cur], key=lambda n: [b.name for b in blocks].index(n)) if d in left)
        if nxt in seen:
            loop = path[seen[nxt]:] + [nxt]
            break
        seen[nxt] = len(path)
        path.append(nxt)
        cur = nxt
    first, second = loop[0], loop[1]
    pin = next(p for p, src in _deps(by_name[first]) if src == second)
    chain = " <- ".join(loop)
    task_sec.issues.add(f"{by_name[first].path}.in.{pin}",
                        f"expected no algebraic loop, found {chain} (each block reads the next one's output; "
                        f"insert a Z1 block to delay one connection by a cycle)")


def source_kind(src: Source, out_kinds: dict[str, str]) -> str | None:
    """The kind a source provides (None while a generic block output is unresolved)."""
    if src.kind == "tag":
        return tag_kind(src.tag)  # type: ignore[arg-type]
    if src.kind == "const":
        return src.vtype
    return out_kinds.get(f"{src.block}.{src.pin}")


def resolve_kinds(task_sec: Section, blocks: list[BlockSpec]) -> None:
    """Resolve generic pins, then check every connection's kind (recording issues at dotted paths)."""
    known: dict[str, str] = {}
    for b in blocks:
        for p in b.btype.outputs:
            if p.kind != GENERIC:
                known[f"{b.name}.{p.name}"] = p.kind
    generic = {b.name: None for b in blocks if any(p.kind == GENERIC for p in b.btype.outputs)}
    for _ in range(len(blocks) + 1):
        changed = False
        for b in blocks:
            if b.name not in generic or generic[b.name] is not None:
                continue
            kinds = [source_kind(src, known) for pin, src in b.inputs.items()
                     if b.btype.input(pin).kind == GENERIC]  # type: ignore[union-attr]
            kinds = [k for k in kinds if k is not None]
            if kinds:
                generic[b.name] = (BOOL if kinds[0] == BOOL else INT if all(k == INT for k in kinds) else "num")
                for p in b.btype.outputs:
                    known[f"{b.name}.{p.name}"] = generic[b.name]  # type: ignore[assignment]
                changed = True
        if not changed:
            break
    for b in blocks:
        if b.name in generic and generic[b.name] is None:
            generic[b.name] = "num"
            for p in b.btype.outputs:
                known[f"{b.name}.{p.name}"] = "num"
        b.out_kinds = {p.name: known[f"{b.name}.{p.name}"] for p in b.btype.outputs}
        _check_block(task_sec, b, generic.get(b.name), known)


def _check_block(task_sec: Section, b: BlockSpec, generic_kind: str | None, known: dict[str, str]) -> None:
    def _add(key: str, message: str) -> None:
        task_sec.issues.add(f"{b.path}.{key}", message)

    for pin_name, src in b.inputs.items():
        pin = b.btype.input(pin_name)
        want = generic_kind if pin.kind == GENERIC else pin.kind  # type: ignore[union-attr]
        have = source_kind(src, known)
        if want is None or have is None or kinds_compatible(want, have):
            continue
        what = src.describe() if src.kind != "tag" else f"tag {src.tag.key!r} of type {src.tag.dtype.value!r}"  # type: ignore[union-attr]
        if pin.kind == GENERIC:  # type: ignore[union-attr]
            message = (f"expected {kind_name(want)} like the block's other inputs, found {what} "
                       f"({kind_name(have)})")
        else:
            message = f"expected {kind_name(want)} for input {pin_name}, found {what} ({kind_name(have)})"
        _add(f"in.{pin_name}", message)
    for pin_name, tag in b.outputs.items():
        have = b.out_kinds[pin_name]
        want = tag_kind(tag)
        if want is not None and not kinds_compatible(want, have):
            _add(f"out.{pin_name}", f"expected a {'bool' if want == BOOL else 'numeric'} output for tag "
                                       f"{tag.key!r} of type {tag.dtype.value!r}, found {pin_name} ({kind_name(have)})")
    for pin_name, value in b.safe.items():
        kind = b.out_kinds[pin_name]
        if kind == BOOL and value not in (0.0, 1.0):
            _add(f"safe.{pin_name}", f"expected a bool safe value for {pin_name}, found {value!r}")


@dataclass(slots=True)
class Layout:
    """A task compiled to the flat form the C interpreter runs (see edged.cext.control.Program)."""

    task: TaskSpec
    nws: int = 0
    blocks: list[tuple[int, list[int], list[int], int, int, dict[int, float]]] = field(default_factory=list)
    consts: list[tuple[int, float]] = field(default_factory=list)
    tag_inputs: list[tuple[int, int]] = field(default_factory=list)
    outputs: list[int] = field(default_factory=list)
    out_tags: list[Tag] = field(default_factory=list)
    out_pins: list[str] = field(default_factory=list)
    out_safe: list[float | None] = field(default_factory=list)   # safe value of each bound output, if any
    reports: list[int] = field(default_factory=list)
    report_names: list[str] = field(default_factory=list)
    report_kinds: list[str] = field(default_factory=list)
    report_deadbands: list[float] = field(default_factory=list)
    pins: dict[str, int] = field(default_factory=dict)
    retain: list[int] = field(default_factory=list)               # block indices kept across restarts
    retain_names: list[str] = field(default_factory=list)         # ... their block names
    retain_types: list[str] = field(default_factory=list)         # ... and types

    def program(self) -> Any:
        """Build the C program (edged.cext.control.Program)."""
        from edged.cext.control import Program

        return Program(self.nws, self.blocks, self.consts, self.tag_inputs, self.outputs, self.reports,
                       self.report_deadbands, self.retain)


def compile_task(task: TaskSpec) -> Layout:
    """Lay out a validated task: workspace indices for tags, constants and pins; block records in order."""
    lay = Layout(task)

    def alloc() -> int:
        lay.nws += 1
        return lay.nws - 1

    tag_ws: dict[str, int] = {}
    for b in task.blocks:
        for p in b.btype.outputs:
            lay.pins[f"{b.name}.{p.name}"] = alloc()

    def index_of(src: Source) -> int:
        if src.kind == "block":
            return lay.pins[f"{src.block}.{src.pin}"]
        if src.kind == "tag":
            key = src.tag.key  # type: ignore[union-attr]
            if key not in tag_ws:
                tag_ws[key] = alloc()
                lay.tag_inputs.append((src.tag.slot, tag_ws[key]))  # type: ignore[union-attr]
                lay.pins[key] = tag_ws[key]
            return tag_ws[key]
        i = alloc()
        lay.consts.append((i, src.value))
        return i

    for b in task.blocks:
        bt: BlockType = b.btype
        ins: list[int] = []
        for p in bt.inputs:
            src = b.inputs.get(p.name)
            if src is None:
                if bt.extensible or p.default is None:
                    continue
                src = Source("const", value=float(p.default), vtype=BOOL if isinstance(p.default, bool) else "num")
            idx = index_of(src)
            ins.append(idx)
            lay.pins.setdefault(f"{b.name}.in.{p.name}", idx)
        outs = [lay.pins[f"{b.name}.{p.name}"] for p in bt.outputs]
        safe = {k: b.safe[p.name] for k, p in enumerate(bt.outputs) if p.name in b.safe}
        heap_n = int(b.inputs["N"].value) if bt.name == "MAVG" else 0
        if b.retain:
            lay.retain.append(len(lay.blocks))
            lay.retain_names.append(b.name)
            lay.retain_types.append(bt.name)
        lay.blocks.append((bt.code, ins, outs, heap_n, b.bad_after_ms * 1_000_000, safe))
        for p in bt.outputs:
            if p.name in b.outputs:
                lay.outputs.append(lay.pins[f"{b.name}.{p.name}"])
                lay.out_tags.append(b.outputs[p.name])
                lay.out_pins.append(f"{b.name}.{p.name}")
                lay.out_safe.append(b.safe.get(p.name))
            if p.name in b.report:
                lay.reports.append(lay.pins[f"{b.name}.{p.name}"])
                lay.report_names.append(f"{b.name}.{p.name}")
                lay.report_kinds.append(b.out_kinds.get(p.name, p.kind))
                lay.report_deadbands.append(0.0 if lay.report_kinds[-1] == BOOL else b.deadband)
    return lay
