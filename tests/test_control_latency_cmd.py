"""`edged latency-test` as a subprocess: JSON fields, text output and option errors (no timing assertions)."""
from __future__ import annotations

import json
import subprocess
import sys


def edged(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edged", *args], capture_output=True, text=True, timeout=120)


def test_json_output() -> None:
    res = edged("latency-test", "--period-us", "1000", "--seconds", "0.5", "--json", "--load", "--blocks", "50")
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    for key in ("p50_us", "p99_us", "p999_us", "max_us", "overruns", "cycles"):
        assert key in data
    assert data["cycles"] > 0 and data["blocks"] == 50 and data["load"] is True
    assert 0 <= data["p50_us"] <= data["p99_us"] <= data["p999_us"] <= data["max_us"]


def test_text_output_reports_what_was_granted() -> None:
    res = edged("latency-test", "--period-us", "2000", "--seconds", "0.2", "--cpu", "4095")
    assert res.returncode == 0, res.stderr
    assert "lateness: p50" in res.stdout and "overruns:" in res.stdout
    assert "affinity: refused (EINVAL)" in res.stdout


def test_bad_period_is_a_usage_error() -> None:
    res = edged("latency-test", "--period-us", "50")
    assert res.returncode == 2
    assert "expected 100..10000000, found 50" in res.stderr


def test_mlock_is_granted_or_refused_with_a_reason() -> None:
    res = edged("latency-test", "--period-us", "1000", "--seconds", "0.2", "--mlock", "--json")
    assert res.returncode == 0, res.stderr
    m = json.loads(res.stdout)["mlock"]
    assert m["requested"] is True
    assert m["granted"] is True or m["error"] in ("EPERM", "ENOMEM", "EAGAIN")
