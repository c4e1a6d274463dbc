"""`edged demo`: emulated devices plus the daemon; writes JSON lines quickly and serves lint-clean metrics."""
from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from daemon_support import Proc, eventually, free_port, metric, scrape


def test_demo_writes_jsonl_and_serves_promtool_clean_metrics(tmp_path: Path) -> None:
    port = free_port()
    t0 = time.monotonic()
    p = Proc(["demo", "--state-dir", str(tmp_path / "demo"), "--metrics-port", str(port)], tmp_path)
    try:
        url = p.wait_for(r"metrics: (http://\S+)", 60).group(1)
        data = Path(p.wait_for(r"data:\s+(\S+)", 10).group(1))
        ready = time.monotonic()

        def lines() -> list[dict]:
            if not data.exists():
                return []
            return [json.loads(x) for x in data.read_text().splitlines() if x.strip()]

        first = eventually(lines, 30, 0.05, "JSON lines in the demo sink")
        first_at = time.monotonic()
        print(f"first JSON line {first_at - t0:.2f}s after spawn, {first_at - ready:.2f}s after ready")
        # the 5 s start-up goal is reported above, not asserted: a timed assertion flakes on a busy machine
        row = first[0]
        assert {"ts", "ts_ns", "device", "tag", "value", "quality"} <= set(row)
        # the demo's devices move: wait for a changing tag and both devices
        eventually(lambda: {x["device"] for x in lines()} >= {"press1", "robot1"}, 30, what="both devices")
        # the control task's outputs: events in the sink, counters written to the press and read back
        eventually(lambda: any(x["device"] == "press_logic" and x["tag"] == "parts.CV" for x in lines()), 30,
                   what="control task samples")
        eventually(lambda: any(x["tag"] == "good_parts" and x["value"] for x in lines()), 30,
                   what="good_parts written by the control task and read back")
        text = eventually(lambda: (t := scrape(url)) and "edged_tag_value" in t and t, 30, what="metrics")
        assert metric(text, "edged_cycle_cycles_total", task="press_logic") > 0
        assert metric(text, "edged_device_up", device="press1") == 1.0
        assert metric(text, "edged_tag_value", device="press1", tag="spindle_speed", unit="rpm") is not None
        promtool = shutil.which("promtool")
        if promtool is None:
            pytest.fail("promtool is not installed (apt-get install prometheus); make test installs it")
        lint = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
        assert lint.returncode == 0 and not lint.stdout.strip() and not lint.stderr.strip(), \
            f"promtool findings:\n{lint.stdout}{lint.stderr}"
    finally:
        code = p.stop()
    assert code == 0, p.stderr
    assert "Traceback" not in p.stderr
