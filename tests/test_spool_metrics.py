"""Spool metrics from a real spool: values match what the spool did (read back through take), promtool accepts them."""
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


def test_spool_metrics_count_what_the_spool_did_and_pass_promtool(tmp_path: Path) -> None:
    reg = CollectorRegistry()
    sp = Spool.open(tmp_path, SpoolSpec(max_bytes=2048, overflow="drop_newest", queue_samples=100,
                                       commit_interval_ms=60_000), ["up", "local"])
    register_spool_metrics(sp, reg)
    get = reg.get_sample_value
    for i in range(30):
        sp.append([Sample(1000 + i * 10 + j, "press1", "count", i * 10 + j, 0) for j in range(10)])
        sp.flush()
    # the hand-over queue holds 100 samples: of 15 appends of 10 with no commit due in between, 5 are dropped
    sp.flush()
    commits_before = get("edged_spool_commits_total")
    for i in range(15):
        sp.append([Sample(5000 + i, "press2", "count", 1000 + i, 0)] * 10)
    queue_dropped = get("edged_spool_queue_dropped_samples_total")
    assert queue_dropped == 50
    assert get("edged_spool_uncommitted_samples") == get("edged_spool_queue_samples") == 100
    sp.flush()
    assert get("edged_spool_uncommitted_samples") == 0 and get("edged_spool_queue_samples") == 0
    assert get("edged_spool_commits_total") > commits_before
    b = sp.take("up", 25)
    assert b is not None and len(b.samples) == 25
    sp.ack(b)
    kept: list[int] = []
    gap_samples = 0
    while (lb := sp.take("local", 10_000)) is not None:
        kept += [s.value for s in lb.samples]
        gap_samples += sum(g.count for g in lb.gaps)
        sp.ack(lb)
    appended = 300 + 150
    assert kept == sorted(kept) and 0 < len(kept) < appended
    assert get("edged_spool_appended_samples_total") == len(kept)
    assert get("edged_spool_dropped_samples_total") == appended - len(kept) == gap_samples
    assert get("edged_spool_depth_samples") == len(kept) - 25  # "up" acked 25, "local" acked everything
    assert get("edged_spool_sink_lag_samples", {"sink": "local"}) == 0
    assert get("edged_spool_sink_lag_samples", {"sink": "up"}) == len(kept) - 25
    assert get("edged_spool_acked_samples_total", {"sink": "up"}) == 25
    assert get("edged_spool_acked_samples_total", {"sink": "local"}) == len(kept)
    assert get("edged_spool_gaps_total") >= 2  # at least one gap record per sink
    assert get("edged_spool_bytes") > 0
    assert get("edged_spool_append_duration_seconds_count") == 45
    commits = get("edged_spool_commits_total")
    assert get("edged_spool_commit_duration_seconds_count") == commits
    assert get("edged_spool_commit_duration_seconds_bucket", {"le": "+Inf"}) == commits
    assert get("edged_spool_commit_duration_seconds_sum") > 0
    assert get("edged_spool_commit_failures_total") == 0
    sp.close()
    text = generate_latest(reg)
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool (Debian package prometheus) is not installed")
    proc = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stdout.decode() + proc.stderr.decode()
