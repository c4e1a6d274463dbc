"""Drive blocks from Python on a simulated clock, through the same C interpreter the cycle thread runs."""
from __future__ import annotations

import tomllib
from typing import Any

from edged.control.blocks_catalog import BOOL, INT, BlockType, block_type
from edged.control.config import ControlSpec, parse_control
from edged.control.graph import Layout, compile_task
from edged.schema import Issues, Section
from edged.tag import Tag


def _py(kind: str, value: float) -> Any:
    if kind == BOOL:
        return value != 0.0
    if kind == INT:
        return int(value)
    return value


class BlockSim:
    """One block whose inputs are set from Python; step(now_ns) runs one cycle of the C interpreter.

    ``const`` gives constant inputs; every other input pin of the type (the connected ones for
    extensible blocks, named in ``inputs``) is driven with set(). Unset optional pins take their
    defaults. Outputs come back as Python values keyed by pin name.
    """

    def __init__(self, type_name: str, const: dict[str, float | bool] | None = None,
                 inputs: list[str] | None = None, safe: dict[str, float] | None = None,
                 bad_after_ms: int = 0) -> None:
        bt: BlockType | None = block_type(type_name)
        if bt is None:
            raise ValueError(f"unknown block type {type_name!r}")
        self.type = bt
        const = dict(const or {})
        if inputs is None:
            inputs = [p.name for p in bt.inputs if p.name not in const and (not bt.extensible or p.name in ("IN1", "IN2"))]
        self.index: dict[str, int] = {}
        consts: list[tuple[int, float]] = []
        ins: list[int] = []
        n = 0
        for p in bt.inputs:
            if p.name in inputs:
                self.index[p.name] = n
            elif p.name in const:
                consts.append((n, float(const[p.name])))
            elif p.default is not None and not bt.extensible:
                consts.append((n, float(p.default)))
            else:
                if not bt.extensible:
                    raise ValueError(f"input {p.name} of {bt.name} needs a value")
                continue
            ins.append(n)
            n += 1
        outs = list(range(n, n + len(bt.outputs)))
        self.out_index = {p.name: i for p, i in zip(bt.outputs, outs)}
        heap_n = int(const.get("N", 0)) if bt.name == "MAVG" else 0
        safe_k = {k: float(safe[p.name]) for k, p in enumerate(bt.outputs) if safe and p.name in safe}
        from edged.cext.control import Program

        self.program = Program(n + len(outs), [(bt.code, ins, outs, heap_n, bad_after_ms * 1_000_000, safe_k)],
                               consts, [], [], [])
        for p in bt.inputs:   # driven pins start at their defaults
            if p.name in self.index and p.default is not None:
                self.program.set(self.index[p.name], float(p.default), 0)

    def set(self, **values: float | bool) -> "BlockSim":
        """Set driven inputs by pin name (quality good)."""
        for pin, v in values.items():
            self.program.set(self.index[pin], float(v), 0)
        return self

    def set_quality(self, pin: str, quality: int) -> "BlockSim":
        """Set the quality of a driven input, keeping its value."""
        value, _ = self.program.get(self.index[pin])
        self.program.set(self.index[pin], value, quality)
        return self

    def step(self, now_ns: int, **values: float | bool) -> dict[str, Any]:
        """Set inputs, run one cycle at monotonic time now_ns, return the outputs."""
        self.set(**values)
        self.program.step(now_ns)
        return self.outputs()

    def outputs(self) -> dict[str, Any]:
        """Current output values by pin name."""
        return {p.name: _py(p.kind, self.program.get(self.out_index[p.name])[0]) for p in self.type.outputs}

    def quality(self, pin: str) -> int:
        """Quality of an output pin."""
        return int(self.program.get(self.out_index[pin])[1])


def load_tasks(toml_text: str, tags: dict[str, Tag], file: str = "control.toml") -> ControlSpec:
    """Parse [task.*] tables from TOML text against given tags; raise ConfigError on issues."""
    issues = Issues(file)
    root = Section(tomllib.loads(toml_text), "", issues)
    spec = parse_control(root.sections("task"), tags)
    root.finish()
    issues.raise_if_any()
    if spec is None:
        raise ValueError("no [task.*] tables")
    return spec


def compile_tasks(spec: ControlSpec) -> list[Layout]:
    """Compile every task of a spec (its programs are built with Layout.program())."""
    return [compile_task(t) for t in spec.tasks]


_GROUP = [
    ("s", 'type = "LPF"\nin = {{ IN = {prev}, T = 100 }}'),
    ("c", 'type = "GT"\nin = {{ IN1 = "s{k}.OUT", IN2 = 40.0, HYST = 2.0 }}'),
    ("t", 'type = "TON"\nin = {{ IN = "c{k}.OUT", PT = 50 }}'),
    ("e", 'type = "R_TRIG"\nin = {{ CLK = "t{k}.Q" }}'),
    ("n", 'type = "CTU"\nin = {{ CU = "e{k}.Q", PV = 100 }}'),
    ("a", 'type = "AND"\nin = {{ IN1 = "c{k}.OUT", IN2 = "t{k}.Q" }}'),
    ("p", 'type = "PID"\nin = {{ PV = "s{k}.OUT", SP = 55.0, KP = 1.5, TR = 1000, XMIN = 0.0, XMAX = 100.0 }}'),
    ("l", 'type = "LIMIT"\nin = {{ MN = 0.0, IN = "p{k}.XOUT", MX = 80.0 }}'),
    ("m", 'type = "ADD"\nin = {{ IN1 = "l{k}.OUT", IN2 = "n{k}.CV" }}'),
    ("g", 'type = "SEL"\nin = {{ G = "a{k}.OUT", IN0 = "m{k}.OUT", IN1 = 0.0 }}'),
]


def synthetic_task_toml(nblocks: int, period_us: int, name: str = "bench", report: bool = True) -> str:
    """TOML of one task with nblocks blocks in a realistic mix, each depending on earlier ones.

    The mix: filter, compare, timer, edge, counter, logic, PID, limit, arithmetic, select.
    """
    lines = [f"[task.{name}]", f"period_us = {period_us}"]
    prev = "50.0"
    for i in range(nblocks):
        k, (prefix, body) = divmod(i, len(_GROUP))[0], _GROUP[i % len(_GROUP)]
        lines.append(f"[task.{name}.block.{prefix}{k}]")
        lines.append(body.format(k=k, prev=prev))
        if not report:
            lines.append("report = false")
        if prefix == "g":
            prev = f'"g{k}.OUT"'
    return "\n".join(lines) + "\n"


def synthetic_program(nblocks: int, period_us: int = 1000, report: bool = True) -> tuple[Any, Layout]:
    """A compiled Program (and its layout) of nblocks blocks from synthetic_task_toml."""
    spec = load_tasks(synthetic_task_toml(nblocks, period_us, report=report), {})
    lay = compile_task(spec.tasks[0])
    return lay.program(), lay
