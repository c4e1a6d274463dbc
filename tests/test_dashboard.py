"""The Grafana dashboard (config/grafana/edged-dashboard.json): every metric it queries exists in a running
demo's /metrics (the demo forwards to a real mosquitto so the sink metrics exist), and every query parses
(promtool check rules, with each query as a recording rule)."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import warnings
from pathlib import Path

import pytest

from daemon_support import Proc, eventually, free_port, scrape
from mosquitto_support import mosquitto  # noqa: F401

REPO = Path(__file__).resolve().parents[1]
DASHBOARD = REPO / "config" / "grafana" / "edged-dashboard.json"
# metrics other work adds; the panel is kept, the check skipped with the reason while they are absent
PENDING = {"edged_machine_state_seconds_total": "added by the CNC/PLC machine-state work (issue: CNC helper); "
                                                "the demo has no machine-state tracker yet"}
PROMQL_WORDS = {"sum", "by", "rate", "increase", "histogram_quantile", "max", "count", "le", "without", "on"}


def queries() -> list[tuple[str, str]]:
    """(panel title, expr) of every target."""
    dash = json.loads(DASHBOARD.read_text())
    return [(p["title"], t["expr"]) for p in dash["panels"] for t in p.get("targets", [])]


def metric_names(expr: str) -> set[str]:
    """The metric names a query reads (identifiers starting edged_ outside label matchers and strings)."""
    expr = re.sub(r'"[^"]*"', "", expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)
    return {n for n in re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr) if n.startswith("edged_")}


def exposed(text: str) -> set[str]:
    """Every series name in an exposition, plus histogram/counter sample names derived from # TYPE lines."""
    names = set()
    for line in text.splitlines():
        m = re.match(r"# TYPE (\S+) (\w+)", line)
        if m:
            base, kind = m.groups()
            names.add(base)
            if kind == "counter":
                names.add(base if base.endswith("_total") else base + "_total")
            if kind == "histogram":
                names.update({base + "_bucket", base + "_sum", base + "_count"})
        elif line and not line.startswith("#"):
            names.add(re.match(r"[^{ ]+", line).group(0))
    return names


def test_every_dashboard_query_parses(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is not installed (apt-get install prometheus); make test installs it")
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"edged_dashboard:q{i}", "expr": expr} for i, (_title, expr) in enumerate(queries())]}]}
    path = tmp_path / "rules.json"  # JSON is YAML
    path.write_text(json.dumps(rules))
    res = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"SUCCESS: {len(queries())} rules found" in res.stdout + res.stderr


def test_a_broken_query_would_be_caught(tmp_path: Path) -> None:
    """The parse check is real: promtool rejects a malformed query."""
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"groups": [{"name": "x", "rules": [{"record": "x:y", "expr": "sum by (device (x)"}]}]}))
    res = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert res.returncode != 0


def test_every_metric_the_dashboard_queries_exists_in_a_running_demo(tmp_path: Path, mosquitto) -> None:
    wanted = {n: title for title, expr in queries() for n in metric_names(expr)}
    assert len(wanted) >= 15, wanted
    port = free_port()
    p = Proc(["demo", "--state-dir", str(tmp_path / "demo"), "--metrics-port", str(port),
              "--mqtt", f"127.0.0.1:{mosquitto.port}"], tmp_path)
    try:
        url = p.wait_for(r"metrics: (http://\S+)", 60).group(1)
        # wait until the sink forwarded and the cycle task ran, so histograms and counters have series
        text = eventually(lambda: (t := scrape(url)) and "edged_sink_published_samples_total{" in t
                          and "edged_cycle_lateness_seconds_bucket{" in t and t, 40, what="a full exposition")
    finally:
        assert p.stop() == 0, p.stderr
    have = exposed(text)
    missing = {n: wanted[n] for n in wanted if n not in have and n not in PENDING}
    assert not missing, f"queried by the dashboard but not in the demo's /metrics: {missing}"
    for name, reason in PENDING.items():
        if name not in have:
            warnings.warn(f"dashboard check skipped {name}: {reason}")  # the rest of the check ran
