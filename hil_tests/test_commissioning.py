"""Commissioning checks for a cell: config, reachability, every tag readable, writes round-trip, the daemon runs clean."""
from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from conftest import Hil


def test_config_is_valid(hil: Hil) -> None:
    """`edged check` accepts the cell and prints its request plan."""
    res = hil.edged("check", "-c", str(hil.cell_path), "--plan")
    assert res.returncode == 0, res.stderr
    hil.note("Request plan", "```\n" + res.stdout.strip() + "\n```")


def test_every_tag_reads_with_good_quality(hil: Hil) -> None:
    """Every device answers and every tag reads with good quality."""
    code, rows, err = hil.read()
    bad = [r for r in rows if r["quality"] != "good"]
    table = ["| tag | value | unit | quality |", "|---|---|---|---|"]
    table += [f"| {r['tag']} | {r['value']} | {r['unit']} | {r['quality']} |" for r in rows]
    hil.note("Values read", "\n".join(table))
    assert code == 0 and not bad, f"{len(bad)} tag(s) not good: {[r['tag'] for r in bad]}\n{err}"
    assert {r["tag"] for r in rows} == set(hil.cell.tags)


def _probe_value(tag) -> object:
    """A safe value to write: the middle of the configured range, or the type's small values."""
    if tag.dtype.value == "bool":
        return True
    if tag.dtype.value == "string":
        return "HIL"
    lo = tag.min if tag.min is not None else 0
    hi = tag.max if tag.max is not None else lo + 100
    mid = (lo + hi) / 2
    return round(mid) if tag.dtype.is_integer else mid


def test_writable_tags_round_trip(hil: Hil) -> None:
    """Each writable tag accepts a value in range and reads it back; the old value is restored."""
    writable = [t for t in hil.cell.tags.values() if t.writable]
    if not writable:
        pytest.skip("the cell has no writable tags")
    if not hil.allow_writes:
        pytest.skip("writes to a real cell need --allow-writes")
    done = []
    for tag in writable:
        _, before, _ = hil.read(tag.key)
        value = _probe_value(tag)
        w = hil.edged("write", "-c", str(hil.cell_path), tag.key, repr(value).replace("'", '"').replace("True", "true"))
        assert w.returncode == 0, f"{tag.key}: {w.stderr}"
        _, after, _ = hil.read(tag.key)
        got = after[0]["value"]
        assert got == pytest.approx(value) if isinstance(value, float) else got == value, (tag.key, value, got)
        old = before[0]["value"] if before and before[0]["quality"] == "good" else None
        if old is not None:
            hil.edged("write", "-c", str(hil.cell_path), tag.key, str(old).lower() if isinstance(old, bool)
                      else (f'"{old}"' if isinstance(old, str) else str(old)))
        done.append(f"- `{tag.key}`: wrote {value!r}, read back {got!r}, restored {old!r}")
    hil.note("Write round trips", "\n".join(done))


def test_daemon_runs_clean(hil: Hil, tmp_path) -> None:
    """`edged run` keeps every device up, with no errors or scan overruns, for the soak time."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    text = hil.cell_path.read_text()
    text = re.sub(r"(?ms)^\[metrics\].*?(?=^\[|\Z)", "", text)
    text = re.sub(r'(?m)^state_dir\s*=.*$', "", text)
    text = text.replace("[cell]", f'[cell]\nstate_dir = "{tmp_path / "state"}"', 1)
    cell = tmp_path / "cell.toml"
    cell.write_text(text + f'\n[metrics]\nlisten = "127.0.0.1:{port}"\n')
    p = subprocess.Popen([sys.executable, "-m", "edged", "run", "-c", str(cell)], cwd=tmp_path,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(max(2.0, hil.soak_seconds))
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            metrics = r.read().decode()
    finally:
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=30)
    assert p.returncode == 0, err
    down = re.findall(r'edged_device_up\{device="([^"]+)"[^}]*\} 0\.0', metrics)
    errors = re.findall(r'edged_device_errors_total\{device="([^"]+)",kind="([^"]+)"\} ([1-9][\d.]*)', metrics)
    overruns = re.findall(r'edged_scan_overruns_total\{device="([^"]+)",scan="([^"]+)"\} ([1-9][\d.]*)', metrics)
    hil.note("Daemon run", f"{hil.soak_seconds:g} s: devices down {down or 'none'}, errors {errors or 'none'}, "
                           f"scan overruns {overruns or 'none'}")
    assert not down and not errors, (down, errors)
