"""`edged latency-test` as a subprocess: JSON fields, text output and option errors (no timing assertions)."""
from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys

import pytest


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


def test_mlock_is_granted_exactly_when_it_is_safe() -> None:
    res = edged("latency-test", "--period-us", "1000", "--seconds", "0.2", "--mlock", "--json")
    assert res.returncode == 0, res.stderr
    m = json.loads(res.stdout)["mlock"]
    assert m["requested"] is True
    # edged locks memory only when later allocations cannot fail for it: as root or with no MEMLOCK limit
    soft, _ = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    if os.geteuid() == 0 or soft == resource.RLIM_INFINITY:
        assert m == {"requested": True, "granted": True, "error": None}
    else:
        assert m == {"requested": True, "granted": False, "error": "EPERM"}


def test_verdict_follows_the_budget() -> None:
    """A budget no wake-up can meet gives "no"; one no wake-up can miss (the whole period) gives "yes"."""
    tight = json.loads(edged("latency-test", "--seconds", "0.3", "--budget-us", "0.001", "--json").stdout)
    assert tight["verdict"]["answer"] == "no" and tight["verdict"]["ok"] is False
    assert tight["verdict"]["cycles_over_budget"] == tight["cycles"]
    loose = json.loads(edged("latency-test", "--period-us", "2000", "--seconds", "0.3", "--budget-us", "1e9",
                             "--json").stdout)
    assert loose["verdict"]["answer"] == "yes" and loose["verdict"]["cycles_over_budget"] == 0


@pytest.mark.skipif(shutil.which("cyclictest") is None, reason="cyclictest (rt-tests) is not installed")
def test_compare_runs_cyclictest_side_by_side() -> None:
    res = edged("latency-test", "--compare", "--period-us", "2000", "--seconds", "0.3", "--budget-us", "1e9",
                "--json")
    assert res.returncode == 0, res.stderr
    r = json.loads(res.stdout)
    for run in (r["edged"]["idle"], r["edged"]["load"]):
        assert run["cycles"] > 0 and run["p50_us"] <= run["p99_us"] <= run["max_us"]
        assert run["page_faults"]["major"] >= 0 and run["page_faults"]["minor"] >= 0
        cum = run["distribution"]["cumulative"]
        assert cum == sorted(cum) and cum[-1] <= run["distribution"]["total"] == run["cycles"]
    assert r["edged"]["load"]["load"] is True and r["edged"]["idle"]["load"] is False
    ct = r["cyclictest"]
    assert ct["installed"] is True
    for run in (ct["idle"], ct["load"]):
        assert "error" not in run, run
        assert run["n"] == 150 and run["p50_us"] <= run["p99_us"] <= run["max_us"]
        cum = run["distribution"]["cumulative"]
        assert cum == sorted(cum) and cum[-1] <= run["distribution"]["total"] == 150
        assert "-i 2000 -l 150" in run["cmd"]
    assert r["ratios"]["p99_over_cyclictest_load"] == pytest.approx(r["edged"]["load"]["p99_us"] / ct["load"]["p99_us"])
    assert r["verdict"]["answer"] == "yes"
    assert isinstance(r["suggestions"], list) and any("priority = 80" in s for s in r["suggestions"])
    assert r["machine"]["cpus"] == os.cpu_count()


def test_compare_text_names_the_contenders_and_the_verdict() -> None:
    res = edged("latency-test", "--compare", "--period-us", "2000", "--seconds", "0.2", "--priority", "0")
    assert res.returncode == 0, res.stderr
    assert "edged, CPU burner" in res.stdout and "verdict: " in res.stdout
    if shutil.which("cyclictest") is None:
        assert "not installed" in res.stdout
    else:
        assert "cyclictest, CPU burner" in res.stdout
