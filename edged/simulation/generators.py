"""Per-tag value generators for `edged simulate`: the optional [simulate.<device>.tag.<tag>] tables of a cell.

Each generator gives the engineering value of one tag at time t (seconds since the simulation
started). A ``lag`` generator links tags: the value follows another tag (typically a writable
setpoint) through a first-order lag, like an actual temperature following its setpoint.
"""
from __future__ import annotations

import csv
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from edged.schema import Section
from edged.tag import DataType, Tag

GENERATORS = ("constant", "sine", "ramp", "random_walk", "counter", "square", "steps", "replay", "lag")


@dataclass(slots=True)
class Generator:
    """One tag's generator: ``value(t, read)`` where ``read(key)`` gives another tag's emulated value."""

    tag: Tag
    kind: str
    params: dict[str, Any]
    rng: random.Random = field(default_factory=random.Random)
    state: Any = None

    def value(self, t: float, dt: float, read: Callable[[str], Any]) -> Any:
        """The tag's value at time t (dt seconds after the previous step)."""
        p = self.params
        k = self.kind
        if k == "constant":
            v: Any = p["value"]
        elif k == "sine":
            v = p["offset"] + p["amplitude"] * math.sin(2 * math.pi * t / p["period_s"])
        elif k == "ramp":
            v = p["min"] + (p["max"] - p["min"]) * ((t % p["period_s"]) / p["period_s"])
        elif k == "square":
            v = p["high"] if (t % p["period_s"]) < p["period_s"] / 2 else p["low"]
        elif k == "counter":
            v = p["start"] + p["step"] * int(t // p["every_s"])
        elif k == "steps":
            seq = p["values"]
            v = seq[int(t // p["every_s"]) % len(seq)]
        elif k == "random_walk":
            cur = p["start"] if self.state is None else self.state
            cur = min(p["max"], max(p["min"], cur + self.rng.uniform(-p["step"], p["step"])))
            self.state = v = cur
        elif k == "replay":
            rows = p["rows"]
            span = p["span"]
            tt = (t % span) if p["loop"] and span > 0 else t
            v = self.state if self.state is not None else rows[0][1]
            for ts, val in rows:
                if ts > tt:
                    break
                v = val
            self.state = v
        else:  # lag: first-order lag towards another tag's value
            target = read(p["follow"])
            cur = p["start"] if self.state is None else self.state
            if isinstance(target, (int, float)) and not isinstance(target, bool):
                tau = p["time_constant_s"]
                cur = cur + (float(target) - cur) * (1.0 - math.exp(-dt / tau)) if tau > 0 else float(target)
            self.state = v = cur
        return _typed(self.tag, v)


def _typed(tag: Tag, v: Any) -> Any:
    """Fit a generated value to the tag's type (integers rounded, booleans from truthiness)."""
    dt = tag.dtype
    if dt is DataType.BOOL:
        return bool(v)
    if dt.is_integer and isinstance(v, float):
        return round(v)
    if dt is DataType.STRING and not isinstance(v, str):
        return str(v)
    return v


def parse_simulate(sims: dict[str, Section], tags: dict[str, Tag], base_dir: Path | None = None
                   ) -> dict[str, Generator]:
    """Read the [simulate.<device>.tag.<tag>] tables into generators by tag key (issues recorded on the sections)."""
    out: dict[str, Generator] = {}
    for dev, dsec in sims.items():
        seed = dsec.get_int("seed", 0, min=0, max=2**63 - 1) or 0
        for tname, tsec in dsec.sections("tag").items():
            key = f"{dev}.{tname}"
            tag = tags.get(key)
            if tag is None:
                tsec.error(None, f"expected a tag of the cell ([device.{dev}.tag.{tname}]), found no tag {key!r}")
                tsec.finish(also_known=tsec.keys())
                continue
            gen = _parse_one(tsec, tag, tags, base_dir)
            tsec.finish()
            if gen is not None:
                gen.rng.seed(seed ^ hash_key(key))
                out[key] = gen
        dsec.finish()
    return out


def hash_key(key: str) -> int:
    """A stable per-tag seed offset (Python's hash() is salted per process)."""
    h = 0
    for c in key.encode():
        h = (h * 131 + c) & 0xFFFFFFFF
    return h


def _parse_one(sec: Section, tag: Tag, tags: dict[str, Tag], base_dir: Path | None) -> Generator | None:
    kind = sec.get_str("generator", choices=list(GENERATORS))
    if kind is None:
        return None
    f = sec.get_float
    p: dict[str, Any] = {}
    if kind == "constant":
        p["value"] = sec.get_scalar("value")
    elif kind == "sine":
        p.update(amplitude=f("amplitude", 1.0), period_s=f("period_s", 60.0, min=0.001), offset=f("offset", 0.0))
    elif kind == "ramp":
        p.update(min=f("min", 0.0), max=f("max", 100.0), period_s=f("period_s", 60.0, min=0.001))
    elif kind == "square":
        p.update(low=sec.get_scalar("low", 0), high=sec.get_scalar("high", 1), period_s=f("period_s", 10.0, min=0.001))
    elif kind == "counter":
        p.update(start=sec.get_int("start", 0), step=sec.get_int("step", 1), every_s=f("every_s", 1.0, min=0.001))
    elif kind == "steps":
        p.update(values=sec.get_list("values", item=(bool, int, float, str), expected="an array of values"),
                 every_s=f("every_s", 1.0, min=0.001))
        if p["values"] is not None and not p["values"]:
            sec.error("values", "expected at least one value, found an empty array")
            return None
    elif kind == "random_walk":
        p.update(start=f("start", 0.0), step=f("step", 1.0, min=0.0), min=f("min", -1e300), max=f("max", 1e300))
    elif kind == "replay":
        p.update(loop=sec.get_bool("loop", True))
        name = sec.get_str("file")
        if name is not None:
            rows = _load_csv(sec, Path(name) if base_dir is None else base_dir / name, tag)
            if rows is None:
                return None
            p.update(rows=rows, span=rows[-1][0] if rows else 0.0)
    elif kind == "lag":
        follow = sec.get_str("follow")
        p.update(time_constant_s=f("time_constant_s", 5.0, min=0.0), start=f("start", 0.0), follow=follow)
        if follow is not None and follow not in tags:
            sec.error("follow", f"expected a tag of the cell as DEVICE.TAG, found {follow!r}")
            return None
    if any(v is None for v in p.values()):
        return None
    if kind in ("sine", "ramp", "random_walk", "lag") and not (tag.dtype.is_numeric or tag.dtype is DataType.ANY):
        sec.error("generator", f"expected a numeric tag for generator {kind!r}, found type {tag.dtype.value!r}")
        return None
    return Generator(tag, kind, p)


def _load_csv(sec: Section, path: Path, tag: Tag) -> list[tuple[float, Any]] | None:
    """Rows ``time,tag,value`` of a replay file for one tag, sorted by time (seconds from the start)."""
    try:
        text = path.read_text()
    except OSError as exc:
        sec.error("file", f"cannot read replay file {path}: {exc.strerror or exc}")
        return None
    rows: list[tuple[float, Any]] = []
    for i, row in enumerate(csv.reader(text.splitlines())):
        if not row or row[0].startswith("#") or (i == 0 and row[0].strip().lower() == "time"):
            continue
        if len(row) != 3:
            sec.error("file", f"expected rows of time,tag,value in {path}, found {len(row)} field(s) on line {i + 1}")
            return None
        if row[1].strip() != tag.key:
            continue
        try:
            ts = float(row[0])
        except ValueError:
            sec.error("file", f"expected a time in seconds on line {i + 1} of {path}, found {row[0]!r}")
            return None
        raw = row[2].strip()
        try:
            val: Any = float(raw) if tag.dtype.is_numeric else raw
        except ValueError:
            sec.error("file", f"expected a number for {tag.key} on line {i + 1} of {path}, found {raw!r}")
            return None
        rows.append((ts, val))
    if not rows:
        sec.error("file", f"expected rows for {tag.key} in {path}, found none")
        return None
    rows.sort(key=lambda r: r[0])
    return rows
