"""Commissioning checks for a cell, on the bench (emulated) or the real cell: every tag, writes, metrics, upstream,
fault recovery and no loss. The daemon under test is the real `edged run` (see conftest.py)."""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import FaultResult, Hil, TagResult, wait_until
from support import metric

from edged.spool.config import SpoolSpec
from edged.spool.spool import Spool
from edged.tag import DataType, Tag


def test_config_is_valid(hil: Hil) -> None:
    """`edged check` accepts the cell and prints its request plan."""
    res = hil.edged("check", "-c", str(hil.cell_path), "--plan")
    assert res.returncode == 0, res.stderr
    hil.note("Request plan", "```\n" + res.stdout.strip() + "\n```")


def _type_ok(tag: Tag, value: Any) -> bool:
    """The JSON value fits the tag's type (and array dimensions)."""
    if tag.dims:
        return isinstance(value, list) and len(value) == math.prod(tag.dims)
    dt = tag.dtype
    if dt is DataType.BOOL:
        return isinstance(value, bool)
    if dt.is_integer and not tag.scaled:
        return isinstance(value, int) and not isinstance(value, bool)
    if dt.is_numeric:
        return (isinstance(value, (int, float)) and not isinstance(value, bool)) or value in ("nan", "inf", "-inf")
    if dt in (DataType.STRING, DataType.DATETIME):
        return isinstance(value, str)
    if dt is DataType.STRUCT:
        return isinstance(value, dict)
    return value is not None


def _plausible(tag: Tag, value: Any) -> bool:
    """A numeric value lies within the tag's configured min/max (a writable tag's bounds bind reads too)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or tag.dims:
        return True
    lo = tag.min if tag.min is not None else -math.inf
    hi = tag.max if tag.max is not None else math.inf
    return lo <= value <= hi


def test_every_tag_reads_with_its_type_and_a_plausible_value(hil: Hil) -> None:
    """Every configured tag reads with good quality, the right type and a value within its range."""
    code, rows, err = hil.read()
    got = {r["tag"]: r for r in rows}
    problems = []
    for key, tag in hil.target.tags.items():
        r = got.get(key)
        res = hil.tags.setdefault(key, TagResult())
        if r is None:
            problems.append(f"{key}: not read")
            continue
        res.value, res.quality = r["value"], r["quality"]
        res.read_ok = r["quality"] == "good"
        res.type_ok = _type_ok(tag, r["value"]) if res.read_ok else None
        if not res.read_ok:
            problems.append(f"{key}: quality {r['quality']}")
        elif not res.type_ok:
            problems.append(f"{key}: value {r['value']!r} is not of type {tag.dtype.value}")
        elif not _plausible(tag, r["value"]):
            problems.append(f"{key}: value {r['value']!r} outside [{tag.min}, {tag.max}]")
    assert set(got) == set(hil.target.tags)
    assert not problems, "\n".join(problems) + "\n" + err


def _probe_value(tag: Tag, old: Any) -> Any:
    """A safe value to write: inside the configured range and different from the current one."""
    if tag.dtype is DataType.BOOL:
        return not old if isinstance(old, bool) else True
    if tag.dtype is DataType.STRING:
        return "HIL" if old != "HIL" else "HIL2"
    lo = tag.min if tag.min is not None else 0
    hi = tag.max if tag.max is not None else lo + 100
    value = (lo + hi) / 2
    if tag.dtype.is_integer:
        value = round(value)
    if isinstance(old, (int, float)) and value == old:
        value = lo if old != lo else hi
    return value


def _literal(value: Any) -> str:
    return json.dumps(value)


def test_writable_tags_round_trip(hil: Hil) -> None:
    """Each writable tag takes a value in range and reads it back; the old value is restored in every case."""
    writable = [t for t in hil.target.tags.values() if t.writable]
    if not writable:
        pytest.skip("the cell has no writable tags")
    if not hil.allow_writes:
        pytest.skip("writes to a real cell need --allow-writes")
    driven = {}
    for task in (hil.target.control.tasks if hil.target.control is not None else []):
        for block in task.blocks:
            for t in block.outputs.values():
                driven[t.key] = task.name
    failures = []
    for tag in writable:
        res = hil.tags.setdefault(tag.key, TagResult())
        if tag.key in driven and hil.daemon is not None:
            res.write = f"not tried: control task {driven[tag.key]} drives it"
            continue
        _, before, _ = hil.read(tag.key)
        old = before[0]["value"] if before and before[0]["quality"] == "good" else None
        value = _probe_value(tag, old)
        try:
            w = hil.edged("write", "-c", str(hil.target_path), tag.key, _literal(value))
            if w.returncode != 0:
                res.write = f"refused: {w.stderr.strip()[-120:]}"
                failures.append(f"{tag.key}: {w.stderr.strip()}")
                continue
            _, after, _ = hil.read(tag.key)
            got = after[0]["value"] if after else None
            same = got == pytest.approx(value, rel=1e-6, abs=1e-6) if isinstance(value, float) else got == value
            res.write = f"wrote {value!r}, read {got!r}" + ("" if same else " (MISMATCH)")
            if not same:
                failures.append(f"{tag.key}: wrote {value!r}, read back {got!r}")
        finally:
            if old is not None:
                hil.edged("write", "-c", str(hil.target_path), tag.key, _literal(old))
    assert not failures, "\n".join(failures)


def test_daemon_keeps_every_device_up(hil: Hil) -> None:
    """`edged run` keeps every device up, without errors, for the soak time; poll latency per device goes in the
    report."""
    time.sleep(max(2.0, hil.soak_seconds))
    m = hil.metrics()
    down = [d for d in hil.target.devices if metric(m, "edged_device_up", device=d) != 1.0]
    errors = {d: metric(m, "edged_device_errors_total", device=d) for d in hil.target.devices}
    lat = []
    for d in hil.target.devices:
        n = metric(m, "edged_poll_duration_seconds_count", device=d)
        s = metric(m, "edged_poll_duration_seconds_sum", device=d)
        mean_ms = 1000 * s / n if n else None
        lat.append(f"- `{d}`: {int(n)} polls" + (f", mean {mean_ms:.1f} ms" if mean_ms is not None else " (pushed)"))
        for key, tag in hil.target.tags.items():
            if tag.device == d and key in hil.tags and mean_ms is not None:
                hil.tags[key].latency_ms = mean_ms
    hil.note("Daemon run", f"{hil.soak_seconds:g} s soak: devices down {down or 'none'}; errors "
                           f"{ {d: e for d, e in errors.items() if e} or 'none'}\n\n" + "\n".join(lat))
    assert not down, f"devices down: {down}\n{hil.daemon.output[-3000:] if hil.daemon else ''}"
    assert not any(errors.values()), errors


def test_prometheus_scrapes_every_device_up(hil: Hil) -> None:
    """A real Prometheus server scrapes the daemon and sees every device up."""
    if hil.prometheus is None:
        pytest.skip("the prometheus server is not installed (Debian package prometheus)")
    devices = set(hil.target.devices)

    def all_up() -> bool:
        res = hil.prometheus.query("edged_device_up == 1")  # type: ignore[union-attr]
        return {r["metric"].get("device") for r in res} >= devices

    took = wait_until(all_up, 60, 0.5)
    assert took is not None, hil.prometheus.query("edged_device_up")  # type: ignore[union-attr]
    assert hil.prometheus.query('up{job="edged"}')[0]["value"][1] == "1"  # type: ignore[union-attr]


def _jsonl_samples(path: Path) -> tuple[set[tuple[str, str, int]], int]:
    samples: set[tuple[str, str, int]] = set()
    gaps = 0
    if not path.exists():
        return samples, gaps
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if "gap" in row:
            gaps += int(row["gap"].get("count", 0))
        elif "ts_ns" in row:
            samples.add((row["device"], row["tag"], int(row["ts_ns"])))
    return samples, gaps


def test_upstream_receives_every_tag(hil: Hil) -> None:
    """Every configured tag reaches the upstream: the local sink, and the suite's MQTT broker when emulated."""
    want = {(t.device, t.name) for t in hil.target.tags.values()}

    def local() -> set[tuple[str, str]]:
        return {(d, t) for d, t, _ in _jsonl_samples(hil.jsonl)[0]} if hil.jsonl else set()

    wait_until(lambda: local() >= want, 30, 0.5)
    missing = want - local()
    assert not missing, f"never reached the local sink: {sorted(missing)}"
    if hil.broker is not None:
        wait_until(lambda: {(d, t) for d, t, _ in hil.broker.samples} >= want, 30, 0.5)  # type: ignore[union-attr]
        missing = want - {(d, t) for d, t, _ in hil.broker.samples}
        assert not missing, f"never reached the MQTT broker: {sorted(missing)}"


# fault, how to undo it (None: it undoes itself)
SCENARIOS: list[tuple[str, str | None]] = [
    ("stop", "start"), ("latency", "clear"), ("drop:0.5", "clear"), ("exception:4", "clear"), ("malformed", "clear"),
    ("silence-unit", "clear"), ("namespace-restart", None), ("stop-publishing", "clear"), ("unplug", "replug"),
    ("plc-stop", "plc-run"),
]
HOLD_S = 1.5


def _state(m: dict, device: str) -> str:
    for s in ("up", "degraded", "down", "connecting"):
        if metric(m, "edged_device_state", device=device, state=s) == 1.0:
            return s
    return "?"


def _scan_counts(m: dict, devices: list[str]) -> dict[str, tuple[float, float]]:
    return {d: (metric(m, "edged_scans_total", device=d), metric(m, "edged_scan_overruns_total", device=d))
            for d in devices}


def test_fault_scenarios_recover_and_spare_the_other_devices(hil: Hil) -> None:
    """Each fault its emulator can play: the device recovers within its backoff bound after the fault ends, and
    the other devices keep their scan timing (emulated cells only)."""
    if not hil.emulated:
        pytest.skip("fault scenarios need the emulated cell (edged simulate); this run talks to real devices")
    supported = hil.client.devices()
    failures = []
    for name, dev in hil.target.devices.items():
        others = [d for d in hil.target.devices if d != name]
        for fault, undo in SCENARIOS:
            kind = fault.split(":")[0]
            if kind not in supported.get(name, []):
                hil.faults.append(FaultResult(name, kind, "not supported by its emulator"))
                continue
            if fault == "latency":
                fault = f"latency:{int(dev.spec.timeout_s * 2000)}ms"
            if fault == "silence-unit":
                fault = f"silence-unit:{getattr(getattr(dev.driver, 'settings', None), 'unit_id', 1)}"
            before = _scan_counts(hil.metrics(), others)
            hil.client.fault(f"{name}={fault}")
            time.sleep(HOLD_S)
            during = _state(hil.metrics(), name)
            t0 = time.monotonic()
            if undo:
                hil.client.fault(f"{name}={undo}")
            bound = dev.spec.backoff_max_s + 3 * dev.spec.timeout_s + 10.0
            took = wait_until(lambda: _state(hil.metrics(), name) == "up", bound, 0.1)
            after = _scan_counts(hil.metrics(), others)
            spoiled = []
            for d in others:
                scans = after[d][0] - before[d][0]
                overruns = after[d][1] - before[d][1]
                if overruns > max(1.0, 0.02 * scans):  # tolerance for a loaded 2-core machine, not for a stall
                    spoiled.append(f"{d}: {int(overruns)} overruns in {int(scans)} scans")
            detail = f"state during fault: {during}" + (f"; others: {', '.join(spoiled)}" if spoiled else "")
            if took is None:
                failures.append(f"{name} {fault}: not up within {bound:.0f} s")
                hil.faults.append(FaultResult(name, fault, "NOT RECOVERED", None, detail))
            else:
                hil.faults.append(FaultResult(name, fault, "recovered", time.monotonic() - t0 if undo else took,
                                              detail))
            if spoiled:
                failures.append(f"{name} {fault}: {'; '.join(spoiled)}")
    assert not failures, "\n".join(failures)


def test_zz_no_sample_accepted_into_the_spool_is_lost(hil: Hil) -> None:
    """After a clean stop, every sample of the spool either reached each sink or is still in the spool for it, and
    no gap was reported (the MQTT broker counts what arrived). Runs last: it stops the daemon."""
    if hil.broker is None:
        pytest.skip("needs the suite's MQTT broker (mosquitto) on an emulated cell")
    assert hil.daemon is not None
    code = hil.daemon.stop(timeout=30)
    assert code == 0, hil.daemon.output[-3000:]
    time.sleep(1.0)  # the broker's last deliveries to the counting subscriber
    state = hil.workdir / "state" / "spool"
    spool = Spool.open(state, SpoolSpec(), ["hil_local", "hil_upstream"])
    try:
        left: dict[str, set[tuple[str, str, int]]] = {}
        for consumer in ("hil_local", "hil_upstream"):
            rest: set[tuple[str, str, int]] = set()
            while (batch := spool.take(consumer, 100_000)) is not None and batch.samples:
                rest.update((s.device, s.tag, s.ts_ns) for s in batch.samples)
            left[consumer] = rest
    finally:
        spool.close()
    local, local_gaps = _jsonl_samples(hil.jsonl)  # type: ignore[arg-type]
    broker = set(hil.broker.samples)
    everything = local | left["hil_local"]
    assert everything, "no samples at all"
    lost_upstream = everything - broker - left["hil_upstream"]
    lost_local = (broker | left["hil_upstream"]) - everything
    hil.note("No loss", f"{len(everything)} samples accepted into the spool; {len(broker)} distinct at the broker, "
                        f"{len(left['hil_upstream'])} still spooled for it; gaps reported: broker "
                        f"{hil.broker.gaps}, local {local_gaps}")
    assert not lost_upstream, f"{len(lost_upstream)} samples never reached the broker: {sorted(lost_upstream)[:5]}"
    assert not lost_local, f"{len(lost_local)} samples never reached the local sink: {sorted(lost_local)[:5]}"
    assert hil.broker.gaps == 0 and local_gaps == 0
