"""Spool and sink metrics: names and values as documented, and `promtool check metrics` accepts them."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from edged.spool.config import SpoolSpec
from edged.spool.metrics import register_spool_metrics
from edged.spool.spool import Spool
from edged.tag import Sample
from edged.upstream.metrics import sink_metrics


def test_spool_and_sink_metrics_have_values_and_pass_promtool(tmp_path: Path) -> None:
    reg = CollectorRegistry()
    sp = Spool.open(tmp_path, SpoolSpec(max_bytes=2048, overflow="drop_newest"), ["up", "local"])
    register_spool_metrics(sp, reg)
    for i in range(30):
        sp.append([Sample(1000 + i * 10 + j, "press1", "count", i * 10 + j, 0) for j in range(10)])
    b = sp.take("up", 25)
    sp.ack(b)
    m = sink_metrics(reg)
    assert sink_metrics(reg) is m  # shared by every sink of the registry
    m.published.labels("up").inc(25)
    m.connected.labels("up").set(1)
    m.latency.labels("up").observe(0.004)
    m.commands.labels("up", "refused", "read_only").inc()
    st = sp.stats()
    get = reg.get_sample_value
    assert get("edged_spool_depth_samples") == st.depth_samples > 0
    assert get("edged_spool_bytes") == st.depth_bytes > 0
    assert get("edged_spool_dropped_samples_total") == st.dropped_total > 0
    assert get("edged_spool_gaps_total") == 2  # one gap record per sink
    assert get("edged_spool_sink_lag_samples", {"sink": "local"}) == st.depth_samples
    assert get("edged_spool_acked_samples_total", {"sink": "up"}) == 25
    assert get("edged_spool_oldest_sample_age_seconds") is not None
    assert get("edged_spool_append_duration_seconds_count") == 30
    assert get("edged_spool_append_duration_seconds_sum") > 0
    assert get("edged_sink_published_samples_total", {"sink": "up"}) == 25
    assert get("edged_sink_connected", {"sink": "up"}) == 1
    assert get("edged_sink_publish_latency_seconds_count", {"sink": "up"}) == 1
    assert get("edged_commands_total", {"sink": "up", "result": "refused", "reason": "read_only"}) == 1
    sp.close()
    text = generate_latest(reg)
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool (Debian package prometheus) is not installed")
    proc = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stdout.decode() + proc.stderr.decode()
