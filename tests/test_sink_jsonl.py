"""The JSON-lines sink: line format, gaps, rotation, write errors keep data in the spool, config keys."""
from __future__ import annotations

import asyncio
import json
import time
import tomllib
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from edged.schema import Issues, Section
from edged.sinks.base import SinkContext, WriteResult
from edged.sinks.jsonl import JsonlSink, JsonlSpec, default_spec, parse_spec, rfc3339
from edged.spool.config import SpoolSpec
from edged.spool.spool import Spool
from edged.tag import Sample


async def _no_write(key: str, value: object, source: str) -> WriteResult:
    return WriteResult(False, key, error="no writes here")


def ctx(state_dir: Path) -> SinkContext:
    return SinkContext(cell_name="cell", tags={}, write=_no_write, registry=CollectorRegistry(), state_dir=state_dir)


def lines(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


async def until(cond, timeout: float = 30.0) -> bool:
    """Poll cond() until true or timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        await asyncio.sleep(0.02)
    return cond()


async def run_sink(sink: JsonlSink):
    task = asyncio.create_task(sink.run())
    await asyncio.sleep(0)
    return task


async def stop(task: asyncio.Task, sink: JsonlSink) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await sink.close()


async def test_lines_carry_rfc3339_time_ns_device_tag_value_quality(tmp_path: Path) -> None:
    sp = Spool.open(tmp_path / "spool", SpoolSpec(), ["local"])
    sink = JsonlSink(default_spec(), sp, ctx(tmp_path))
    task = await run_sink(sink)
    ts = 1_764_057_600_123_456_789  # 2025-11-25T08:00:00.123456789Z
    sp.append([Sample(ts, "press1", "oil_temp", 41.5, 0), Sample(ts + 1000, "press1", "run", True, 1),
               Sample(ts + 2000, "oven", "state", "idle", 2), Sample(ts + 3000, "oven", "t", float("nan"), 2)])
    out = tmp_path / "samples.jsonl"
    assert await until(lambda: len(lines(out)) == 4)
    await stop(task, sink)
    got = lines(out)
    assert got[0] == {"ts": "2025-11-25T08:00:00.123456Z", "ts_ns": ts, "device": "press1", "tag": "oil_temp",
                      "value": 41.5, "quality": "good"}
    assert (got[1]["value"], got[1]["quality"]) == (True, "uncertain")
    assert (got[2]["value"], got[2]["quality"]) == ("idle", "bad")
    assert got[3]["value"] == "nan"
    assert sp.stats().depth_samples == 0
    sp.close()


async def test_dropped_samples_appear_as_gap_lines(tmp_path: Path) -> None:
    sp = Spool.open(tmp_path / "spool", SpoolSpec(max_bytes=2048, overflow="drop_newest"), ["local"])
    for i in range(30):
        sp.append([Sample(1000 + i * 10 + j, "press1", "counter", i * 10 + j, 0) for j in range(10)])
    sp.flush()  # committed (and the overflow counted) by the spool's writer thread
    sink = JsonlSink(default_spec(), sp, ctx(tmp_path))
    task = await run_sink(sink)
    out = tmp_path / "samples.jsonl"
    dropped = sp.stats().dropped_total
    assert await until(lambda: len(lines(out)) == 300 - dropped + 1)
    await stop(task, sink)
    got = lines(out)
    gaps = [x["gap"] for x in got if "gap" in x]
    values = [x["value"] for x in got if "gap" not in x]
    assert len(gaps) == 1 and gaps[0]["count"] == dropped == 300 - len(values)
    assert gaps[0]["device"] == "press1" and gaps[0]["start"] == rfc3339(gaps[0]["start_ns"])
    assert values == list(range(len(values)))
    sp.close()


async def test_rotation_keeps_the_configured_number_of_files(tmp_path: Path) -> None:
    sp = Spool.open(tmp_path / "spool", SpoolSpec(), ["lake"])
    spec = JsonlSpec(name="lake", path=str(tmp_path / "out" / "lake.jsonl"), max_bytes=4096, keep=2,
                     batch_samples=20)
    sink = JsonlSink(spec, sp, ctx(tmp_path))
    task = await run_sink(sink)
    for i in range(50):
        sp.append([Sample(1000 + i * 20 + j, "d", "t", i * 20 + j, 0) for j in range(20)])
    assert await until(lambda: sp.stats().depth_samples == 0)
    await stop(task, sink)
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert files == ["lake.jsonl", "lake.jsonl.1", "lake.jsonl.2"]
    for p in (tmp_path / "out").iterdir():
        assert p.stat().st_size <= 4096
    newest = lines(tmp_path / "out" / "lake.jsonl")
    older = lines(tmp_path / "out" / "lake.jsonl.1")
    assert newest[-1]["value"] == 999 and older[-1]["value"] + 1 == newest[0]["value"]
    sp.close()


async def test_write_errors_keep_samples_in_the_spool_until_the_file_works(tmp_path: Path) -> None:
    blocker = tmp_path / "out"
    blocker.write_text("a file where the sink wants a folder")
    sp = Spool.open(tmp_path / "spool", SpoolSpec(), ["lake"])
    sink = JsonlSink(JsonlSpec(name="lake", path=str(blocker / "lake.jsonl")), sp, ctx(tmp_path))
    task = await run_sink(sink)
    sp.append([Sample(1000 + i, "d", "t", i, 0) for i in range(10)])
    assert await until(lambda: sink._failing)
    assert sp.stats().depth_samples == 10
    blocker.unlink()
    assert await until(lambda: len(lines(blocker / "lake.jsonl")) == 10, timeout=60)
    await stop(task, sink)
    assert [x["value"] for x in lines(blocker / "lake.jsonl")] == list(range(10))
    sp.close()


def test_partial_last_line_after_a_crash_is_terminated(tmp_path: Path) -> None:
    from edged.sinks.jsonl import RotatingFile

    path = tmp_path / "x.jsonl"
    path.write_bytes(b'{"a": 1}\n{"b"')
    f = RotatingFile(path, 1 << 20, 1)
    f.write(b'{"c": 3}\n')
    f.close()
    assert path.read_bytes().splitlines()[-1] == b'{"c": 3}'


def _parse(text: str) -> tuple[JsonlSpec, list[str]]:
    issues = Issues("cell.toml")
    sec = Section(tomllib.loads(text), "sink.lake", issues)
    spec = parse_spec("lake", sec, {})
    sec.finish()
    return spec, [f"{i.path}: {i.message}" for i in issues.items]


@pytest.mark.parametrize("text, error", [
    ("max_bytes = 100", "sink.lake.max_bytes: expected a value at least 4096, found 100"),
    ("keep = -1", "sink.lake.keep: expected a value between 0 and 1000, found -1"),
    ("fsync = 'yes'", "sink.lake.fsync: expected a boolean (true or false), found string 'yes'"),
    ("path = 'out/'", "sink.lake.path: expected a file path, found a directory 'out/'"),
    ("rotate = 5", "sink.lake.rotate: unknown key"),
])
def test_jsonl_config_errors(text: str, error: str) -> None:
    _, errors = _parse(text)
    assert any(e.startswith(error) for e in errors), errors


def test_jsonl_config_values() -> None:
    spec, errors = _parse("path = '/data/x.jsonl'\nmax_bytes = 8192\nkeep = 0\nbatch_samples = 10\nfsync = true")
    assert not errors
    assert (spec.name, spec.kind, spec.path, spec.max_bytes, spec.keep, spec.batch_samples, spec.fsync) == \
        ("lake", "jsonl", "/data/x.jsonl", 8192, 0, 10, True)
    assert (default_spec().name, default_spec().path) == ("local", "samples.jsonl")
