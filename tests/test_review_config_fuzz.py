"""Deterministic fuzz of the cell loader: random mutations of the example cell give ConfigError or a Cell, never a crash."""
from __future__ import annotations

import copy
import random
import tomllib
from pathlib import Path
from typing import Any

import pytest

from edged.cell import Cell, parse_cell
from edged.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parent.parent / "config" / "example-cell.toml"
ODD: list[Any] = [0, -1, 2**70, -2**70, 1.5, float("nan"), float("inf"), True, "", "x", "ü名", " ", "a.b",
                  [], [1], ["a"], [{}], {}, {"x": 1}, "hr:0", "40001", "-1", 10**30, 10**400, -(10**400)]
DELETE = object()


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, prefix + (i,))
    return out


def _mutate(doc: dict, rng: random.Random) -> dict:
    for _ in range(rng.randint(1, 3)):
        path = rng.choice(_paths(doc))
        if not path:
            continue
        parent = doc
        for k in path[:-1]:
            parent = parent[k]
        value = rng.choice(ODD + [DELETE])
        if value is DELETE:
            del parent[path[-1]]
        elif rng.random() < 0.7 or not isinstance(parent, dict):
            parent[path[-1]] = copy.deepcopy(value)
        else:
            parent[rng.choice(["zz", "ü", "a b", "", "type", "address", "scan"])] = copy.deepcopy(value)
    return doc


@pytest.mark.parametrize("seed", range(4))
def test_mutated_example_cells_never_crash_the_loader(seed: int) -> None:
    base = tomllib.loads(EXAMPLE.read_text())
    rng = random.Random(seed)
    errors = 0
    for _ in range(150):
        doc = _mutate(copy.deepcopy(base), rng)
        try:
            assert isinstance(parse_cell(doc, "cell.toml"), Cell)
        except ConfigError as exc:
            errors += 1
            for issue in exc.issues:
                text = str(issue)
                assert text.startswith("cell.toml: "), text
                assert "Traceback" not in text
    assert errors > 0  # the mutations do reach the validators


@pytest.mark.parametrize("source, where", [
    ("", "cell"),
    ('device = "x"\n[cell]\nname = "c"\n', "device"),
    ('[cell]\nname = "c"\n[[device]]\ndriver = "sim"\n', "device"),
    ('[cell]\nname = "c"\n[device.d]\ndriver = "sim"\n[[device.d.tag]]\naddress = "counter"\n', "device.d.tag"),
    ('[cell]\nname = "c"\n[device.d]\ndriver = "sim"\ntag.t = "x"\n', "device.d.tag.t"),
    ('[cell]\nname = "c"\n[scan.a]\ninterval_ms = 99999999999999999999\n', "scan.a.interval_ms"),
    ('spool = [1]\n[cell]\nname = "c"\n', "spool"),
    ('[cell]\nname = "c"\n[metrics]\nlisten = "h:\u0663"\n', "metrics.listen"),
])
def test_odd_documents_name_the_path(source: str, where: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_cell(tomllib.loads(source), "cell.toml")
    assert any(i.path == where for i in info.value.issues), [str(i) for i in info.value.issues]
