"""The [task.<name>] tables: cycle tasks and their wired function blocks, validated into a ControlSpec."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from edged.control.blocks_catalog import (BLOCK_TYPES, BOOL, GENERIC, INT, MAVG_MAX_N, NUMERIC_KINDS,
                                          RETAINABLE, TIME, BlockType, Pin)
from edged.schema import Section, describe
from edged.tag import DataType, Tag

PERIOD_MIN_US = 100
PERIOD_MAX_US = 10_000_000
RING_DEFAULT = 16384
RETAIN_INTERVAL_DEFAULT_MS = 1000
OVERRUN_CHOICES = ["skip", "delay"]

_TIME_UNITS_MS = {"d": 86_400_000.0, "h": 3_600_000.0, "m": 60_000.0, "s": 1000.0, "ms": 1.0, "us": 0.001}
_TIME_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|us|d|h|m|s)")


def parse_time_ms(text: str) -> float | None:
    """A time literal ("500ms", "2.5s", "T#1m30s", "TIME#100us") in milliseconds, or None if it is not one."""
    body = text.strip()
    for prefix in ("TIME#", "time#", "T#", "t#"):
        if body.startswith(prefix):
            body = body[len(prefix):]
            break
    body = body.replace("_", "").lower()
    if not body:
        return None
    pos, total = 0, 0.0
    for m in _TIME_PART.finditer(body):
        if m.start() != pos:
            return None
        total += float(m.group(1)) * _TIME_UNITS_MS[m.group(2)]
        pos = m.end()
    return total if pos == len(body) else None


@dataclass(frozen=True, slots=True)
class Source:
    """What feeds an input pin: a tag, another block's output pin, or a constant."""

    kind: str                     # "tag" | "block" | "const"
    tag: Tag | None = None
    block: str = ""
    pin: str = ""
    value: float = 0.0
    vtype: str = ""               # constants: "bool" or "num"

    def describe(self) -> str:
        """Human-readable form for messages."""
        if self.kind == "tag":
            return f"tag {self.tag.key!r}"  # type: ignore[union-attr]
        if self.kind == "block":
            return f"block output {self.block}.{self.pin}"
        return f"constant {self.value!r}"


@dataclass(slots=True)
class BlockSpec:
    """One configured block: its type, wired inputs, outputs bound to tags, safe values."""

    name: str
    btype: BlockType
    path: str
    inputs: dict[str, Source] = field(default_factory=dict)
    outputs: dict[str, Tag] = field(default_factory=dict)
    safe: dict[str, float] = field(default_factory=dict)
    bad_after_ms: int = 0
    retain: bool = False                                       # keep the state across restarts
    report: frozenset[str] = frozenset()                       # output pins reported on change
    deadband: float = 0.0                                      # numeric outputs: minimum reported move
    out_kinds: dict[str, str] = field(default_factory=dict)   # resolved kind of every output pin


@dataclass(slots=True)
class TaskSpec:
    """One cycle task: scheduling settings and blocks in execution order."""

    name: str
    period_us: int
    priority: int = 0
    cpu: int = -1
    mlock: bool = False
    overrun: str = "skip"
    write_period_ms: int = 0
    ring_size: int = RING_DEFAULT
    retain_interval_ms: int = RETAIN_INTERVAL_DEFAULT_MS
    cpu_dma_latency_us: int = -1       # -1: leave CPU idle states alone; else a PM QoS request
    blocks: list[BlockSpec] = field(default_factory=list)


@dataclass(slots=True)
class ControlSpec:
    """Every cycle task of a cell, fastest first."""

    tasks: list[TaskSpec]

    @property
    def base_period_us(self) -> int:
        """The fastest period; every other is an integer multiple of it."""
        return min(t.period_us for t in self.tasks)


def tag_kind(tag: Tag) -> str | None:
    """The pin kind a tag provides or accepts (None for strings, which are not in the image)."""
    if tag.dtype is DataType.BOOL:
        return BOOL
    if tag.dtype.is_integer:
        return INT
    if tag.dtype.is_float:
        return "num"
    return None


def kinds_compatible(pin_kind: str, source_kind: str) -> bool:
    """True when a value of source_kind may feed a pin of pin_kind."""
    if pin_kind == BOOL or source_kind == BOOL:
        return pin_kind == source_kind
    return pin_kind in NUMERIC_KINDS and source_kind in NUMERIC_KINDS


def kind_name(kind: str) -> str:
    """A kind in words, for messages."""
    return {BOOL: "a bool", INT: "a number", "num": "a number", TIME: "a time (ms)"}.get(kind, kind)


def parse_control(secs: dict[str, Section], tags: dict[str, Tag]) -> ControlSpec | None:
    """Read every cycle task table; None when the cell has no control tasks."""
    from edged.control.graph import order_blocks, resolve_kinds

    tasks: list[TaskSpec] = []
    bound: dict[str, str] = {}   # tag key -> path of the output that writes it
    for name, sec in secs.items():
        task = _parse_task(name, sec, tags, bound)
        if task is None:
            continue
        ordered = order_blocks(sec, task.blocks)
        task.blocks = ordered if ordered is not None else task.blocks   # a loop was reported
        resolve_kinds(sec, task.blocks)
        tasks.append(task)
    if not secs:
        return None
    _check_periods(secs, tasks)
    tasks.sort(key=lambda t: t.period_us)
    return ControlSpec(tasks) if tasks else None


def _check_periods(secs: dict[str, Section], tasks: list[TaskSpec]) -> None:
    if not tasks:
        return
    fastest = min(tasks, key=lambda t: t.period_us)
    for t in tasks:
        if t.period_us % fastest.period_us:
            secs[t.name].error("period_us", f"expected an integer multiple of the fastest task's period "
                                            f"({fastest.name}: {fastest.period_us} us), found {t.period_us}")


def _parse_task(name: str, sec: Section, tags: dict[str, Tag], bound: dict[str, str]) -> TaskSpec | None:
    period = sec.get_int("period_us", min=PERIOD_MIN_US, max=PERIOD_MAX_US)
    task = TaskSpec(
        name=name,
        period_us=period or PERIOD_MIN_US,
        priority=_or(sec.get_int("priority", 0, min=0, max=99), 0),
        cpu=_or(sec.get_int("cpu", -1, min=-1, max=4095), -1),
        mlock=bool(sec.get_bool("mlock", False)),
        overrun=sec.get_str("overrun", "skip", choices=OVERRUN_CHOICES) or "skip",
        write_period_ms=_or(sec.get_int("write_period_ms", 0, min=0, max=3_600_000), 0),
        ring_size=_or(sec.get_int("ring_size", RING_DEFAULT, min=64, max=1 << 22), RING_DEFAULT),
        retain_interval_ms=_or(sec.get_int("retain_interval_ms", RETAIN_INTERVAL_DEFAULT_MS, min=100,
                                           max=3_600_000), RETAIN_INTERVAL_DEFAULT_MS),
        cpu_dma_latency_us=_or(sec.get_int("cpu_dma_latency_us", -1, min=-1, max=2_000_000_000), -1),
    )
    if task.write_period_ms and task.write_period_ms < 10:
        sec.error("write_period_ms", f"expected 0 (write on change only) or at least 10, found {task.write_period_ms}")
    block_secs = sec.sections("block")
    if not block_secs and not sec.has("block"):
        sec.error("block", "expected at least one block table (task.<name>.block.<block>)")
    sec.finish()
    # first pass: types, so that references to other blocks can be checked in any order
    types: dict[str, BlockType | None] = {}   # None: the type was wrong (already reported)
    for bname, bsec in block_secs.items():
        tname = bsec.get_str("type", choices=list(BLOCK_TYPES))
        types[bname] = BLOCK_TYPES[tname] if tname is not None else None
    for bname, bsec in block_secs.items():
        if types[bname] is None:
            bsec.finish(also_known=bsec.keys())
            continue
        spec = _parse_block(bname, bsec, types, tags, bound)
        bsec.finish()
        task.blocks.append(spec)
    return task if period is not None else None


def _or(value: Any, default: Any) -> Any:
    return default if value is None else value


def _parse_block(name: str, sec: Section, types: dict[str, BlockType | None], tags: dict[str, Tag],
                 bound: dict[str, str]) -> BlockSpec:
    btype = types[name]
    assert btype is not None
    spec = BlockSpec(name=name, btype=btype, path=sec.path)
    spec.report = _parse_report(sec, btype)
    spec.deadband = _or(sec.get_float("deadband", 0.0, min=0.0), 0.0)
    if spec.deadband and all(p.kind == BOOL for p in btype.outputs):
        sec.error("deadband", f"expected a deadband only on blocks with numeric outputs, found {btype.name}")
    bad_after = sec.get_int("bad_after_ms", None, min=0, max=86_400_000)
    spec.bad_after_ms = bad_after or 0
    spec.retain = bool(sec.get_bool("retain", False))
    if spec.retain and btype.name not in RETAINABLE:
        sec.error("retain", f"expected retain only on blocks that keep state ({', '.join(sorted(RETAINABLE))}), "
                            f"found {btype.name}")
        spec.retain = False

    ins = sec.section("in")
    if ins is not None:
        for pin_name in ins.keys():
            pin = btype.input(pin_name)
            if pin is None:
                ins.raw(pin_name)
                ins.error(pin_name, f"expected an input pin of {btype.name} "
                                    f"({', '.join(p.name for p in btype.inputs)}), found {pin_name!r}")
                continue
            src = _parse_source(ins, pin, types, tags)
            if src is not None:
                spec.inputs[pin_name] = src
        ins.finish()
    _check_inputs(sec, spec)

    outs = sec.section("out")
    if outs is not None:
        for pin_name in outs.keys():
            ref = outs.get_str(pin_name)
            if _output_pin(outs, btype, pin_name) is None:
                continue
            if ref is None:
                continue
            tag = _bind_output(outs, pin_name, ref, tags, bound)
            if tag is not None:
                spec.outputs[pin_name] = tag
        outs.finish()

    safe = sec.section("safe")
    if safe is not None:
        for pin_name in safe.keys():
            value = safe.get_scalar(pin_name)
            pin = _output_pin(safe, btype, pin_name)
            if pin is None:
                continue
            v = _const_for(safe, pin_name, pin, value)
            if v is not None:
                spec.safe[pin_name] = v
        safe.finish()
    if bad_after is not None and safe is None:
        sec.error("bad_after_ms", "expected bad_after_ms only together with safe values (safe = { PIN = value })")
    return spec


def _parse_report(sec: Section, btype: BlockType) -> frozenset[str]:
    """`report`: true (every output, the default), false (none) or an array of output pin names."""
    value = sec.raw("report", True)
    every = frozenset(p.name for p in btype.outputs)
    if isinstance(value, bool):
        return every if value else frozenset()
    if not isinstance(value, list):
        sec.error("report", f"expected true, false or an array of output pins, found {describe(value)}")
        return every
    pins = set()
    for i, name in enumerate(value):
        if not isinstance(name, str) or btype.output(name) is None:
            sec.error(f"report[{i}]", f"expected an output pin of {btype.name} "
                                      f"({', '.join(p.name for p in btype.outputs)}), found {describe(name)}")
            continue
        pins.add(name)
    return frozenset(pins)


def _parse_source(ins: Section, pin: Pin, types: dict[str, BlockType | None],
                  tags: dict[str, Tag]) -> Source | None:
    value = ins.get_scalar(pin.name)
    if value is None:
        return None
    if isinstance(value, str) and (pin.kind != TIME or parse_time_ms(value) is None):
        if pin.const_only:
            ins.error(pin.name, f"expected a constant for {pin.name} (it sizes the block), found {describe(value)}")
            return None
        return _parse_reference(ins, pin, value, types, tags)
    v = _const_for(ins, pin.name, pin, value)
    if v is None:
        return None
    vtype = BOOL if isinstance(value, bool) else INT if isinstance(value, int) or pin.kind == INT else "num"
    return Source("const", value=v, vtype=vtype)


def _output_pin(sec: Section, btype: BlockType, pin_name: str) -> Pin | None:
    """The output pin of a block type named by a key of ``out`` or ``safe``, or None after an issue."""
    pin = btype.output(pin_name)
    if pin is None:
        sec.error(pin_name, f"expected an output pin of {btype.name} "
                            f"({', '.join(p.name for p in btype.outputs)}), found {pin_name!r}")
    return pin


def _const_for(sec: Section, key: str, pin: Pin, value: Any) -> float | None:
    """A constant for a pin as a float, checking its type; None after recording an issue."""
    if value is None:
        return None
    kind = pin.kind
    if isinstance(value, str):
        ms = parse_time_ms(value) if kind == TIME else None
        if ms is None:
            wanted = "a bool or number" if kind == GENERIC else kind_name(kind)
            if kind == TIME:
                wanted += ' or a time literal such as "500ms"'
            sec.error(key, f"expected {wanted}, found {describe(value)}")
            return None
        return ms
    if kind == BOOL and not isinstance(value, bool):
        sec.error(key, f"expected a bool (true or false), found {describe(value)}")
        return None
    if kind in NUMERIC_KINDS and isinstance(value, bool):
        sec.error(key, f"expected {kind_name(kind)}, found {describe(value)}")
        return None
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 2**53:
        sec.error(key, f"expected a number within ±2**53 (block values are doubles), found {describe(value)}")
        return None
    if kind == INT and not float(value).is_integer():
        sec.error(key, f"expected a whole number, found {describe(value)}")
        return None
    if kind == TIME and value < 0:
        sec.error(key, f"expected a time >= 0 ms, found {describe(value)}")
        return None
    return float(value)


def _parse_reference(ins: Section, pin: Pin, ref: str, types: dict[str, BlockType | None],
                     tags: dict[str, Tag]) -> Source | None:
    head, dot, tail = ref.partition(".")
    expected = "expected a tag (device.tag), a block output (block.PIN) or a constant"
    if not dot or not head or not tail:
        ins.error(pin.name, f"{expected}, found {describe(ref)}")
        return None
    is_block, is_tag = head in types, ref in tags
    if is_block and is_tag:
        ins.error(pin.name, f"expected an unambiguous reference, found {ref!r}, which names both a block "
                            f"output and a tag (rename the block)")
        return None
    if is_block:
        btype = types[head]
        if btype is None:   # that block's type is wrong, reported at its own path: accept the wire
            return Source("block", block=head, pin=tail)
        out = btype.output(tail)
        if out is None:
            ins.error(pin.name, f"expected an output pin of block {head!r} ({btype.name}: "
                                f"{', '.join(p.name for p in btype.outputs)}), found {tail!r}")
            return None
        return Source("block", block=head, pin=tail)
    if is_tag:
        tag = tags[ref]
        if tag_kind(tag) is None:
            ins.error(pin.name, f"expected a bool or numeric tag (strings are not in the process image), "
                                f"found {ref!r} of type {tag.dtype.value!r}")
            return None
        if pin.kind != GENERIC and not kinds_compatible(pin.kind, tag_kind(tag)):  # type: ignore[arg-type]
            ins.error(pin.name, f"expected {kind_name(pin.kind)} for input {pin.name}, "
                                f"found tag {ref!r} of type {tag.dtype.value!r}")
            return None
        return Source("tag", tag=tag)
    ins.error(pin.name, f"{expected}, found {ref!r}, which is neither a tag nor a block of this task")
    return None


def _check_inputs(sec: Section, spec: BlockSpec) -> None:
    btype = spec.btype
    if btype.extensible:
        if len(spec.inputs) < 2 and not _has_issue(sec, sec.path_of("in")):
            sec.error("in", f"expected at least two inputs (IN1, IN2, ... IN{len(btype.inputs)}) for "
                            f"{btype.name}, found {len(spec.inputs)}")
        return
    for pin in btype.inputs:
        if pin.default is None and pin.name not in spec.inputs:
            if not _has_issue(sec, sec.path_of(f"in.{pin.name}")):
                sec.error(f"in.{pin.name}", f"missing required input of {btype.name}")
    if btype.name == "MAVG" and "N" in spec.inputs:
        n = spec.inputs["N"].value
        if not 1 <= n <= MAVG_MAX_N:
            sec.error("in.N", f"expected a window between 1 and {MAVG_MAX_N} cycles, found {int(n)}")
    if btype.name in ("GT", "GE", "LT", "LE", "EQ", "NE") and "HYST" in spec.inputs:
        src = spec.inputs["HYST"]
        if src.kind == "const" and src.value < 0:
            sec.error("in.HYST", f"expected a hysteresis >= 0, found {src.value:g}")


def _has_issue(sec: Section, path: str) -> bool:
    """True when an issue was already recorded at path or below it."""
    return any(i.path == path or i.path.startswith(path + ".") for i in sec.issues.items)


def _bind_output(outs: Section, pin: str, ref: str, tags: dict[str, Tag], bound: dict[str, str]) -> Tag | None:
    tag = tags.get(ref)
    if tag is None:
        outs.error(pin, f"expected a writable tag (device.tag), found {ref!r}, which is not a tag")
        return None
    if not tag.writable:
        outs.error(pin, f"expected a writable tag, found {ref!r} with access = \"read\" "
                        f"(set access = \"write\" on the tag to let control write it)")
        return None
    if tag_kind(tag) is None:
        outs.error(pin, f"expected a bool or numeric tag, found {ref!r} of type {tag.dtype.value!r}")
        return None
    here = outs.path_of(pin)
    if ref in bound:
        outs.error(pin, f"expected each tag to be written by one output only, found {ref!r} "
                        f"already bound at {bound[ref]}")
        return None
    bound[ref] = here
    return tag
