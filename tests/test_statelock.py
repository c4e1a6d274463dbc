"""Two daemons on one state folder: the second is refused (exit 1, names the holder's PID); the first runs on."""
from __future__ import annotations

import signal
from pathlib import Path

from daemon_support import Proc, eventually, free_port, metric, scrape
from edged.statelock import LOCK_NAME, StateDirBusy, StateLock


def write_cell(tmp_path: Path, metrics_port: int) -> Path:
    """A sim counter into a JSON-lines sink; only the metrics port differs between the two daemons."""
    path = tmp_path / f"cell-{metrics_port}.toml"
    path.write_text(f"""
[cell]
name = "line"
state_dir = "state"

[metrics]
listen = "127.0.0.1:{metrics_port}"

[device.sim1]
driver = "sim"

[device.sim1.tag.a]
address = "counter:0"
scan_ms = 20

[sink.local]
type = "jsonl"
path = "samples.jsonl"
""")
    return path


def test_a_second_daemon_on_the_same_state_dir_exits_1_naming_the_first(tmp_path: Path) -> None:
    port1 = free_port()
    first = Proc(["run", "-c", str(write_cell(tmp_path, port1))], cwd=tmp_path)
    try:
        first.wait_for(r"cell line running", 60, stream="err")
        second = Proc(["run", "-c", str(write_cell(tmp_path, free_port()))], cwd=tmp_path)
        assert second.wait(60) == 1, second.stderr
        assert f"in use by PID {first.p.pid}" in second.stderr, second.stderr
        assert "Traceback" not in second.stderr
        assert "running" not in second.stderr  # refused before the spool, sinks or metrics were touched
        url = f"http://127.0.0.1:{port1}/metrics"
        before = metric(scrape(url), "edged_spool_appended_samples_total") or 0
        eventually(lambda: (metric(scrape(url), "edged_spool_appended_samples_total") or 0) > before + 5, 30,
                   what="the first daemon still acquiring")
    finally:
        assert first.stop(signal.SIGTERM, timeout=60) == 0, first.stderr
    assert "UNIQUE constraint" not in first.stderr
    values = [line for line in (tmp_path / "state" / "samples.jsonl").read_text().splitlines() if '"value"' in line]
    assert len(values) == len(set(values))  # one writer: no duplicate lines


def test_the_lock_is_released_on_exit_and_held_against_other_opens(tmp_path: Path) -> None:
    lock = StateLock.acquire(tmp_path / "s")
    assert (tmp_path / "s" / LOCK_NAME).read_text().strip().isdigit()
    try:
        StateLock.acquire(tmp_path / "s")  # another open file description conflicts, even in one process
        raise AssertionError("the second acquire should have been refused")
    except StateDirBusy as exc:
        assert exc.pid is not None and str(exc.pid) in str(exc)
    lock.release()
    StateLock.acquire(tmp_path / "s").release()


def test_a_second_demo_on_the_same_state_dir_exits_1(tmp_path: Path) -> None:
    state = tmp_path / "demo"
    first = Proc(["demo", "--state-dir", str(state), "--metrics-port", str(free_port())], tmp_path)
    try:
        first.wait_for(r"edged demo: cell", 60)
        second = Proc(["demo", "--state-dir", str(state), "--metrics-port", str(free_port()), "--seconds", "30"],
                      tmp_path)
        assert second.wait(60) == 1, second.stdout + second.stderr
        assert f"in use by PID {first.p.pid}" in second.stderr, second.stderr
        assert "Traceback" not in second.stderr
    finally:
        assert first.stop(signal.SIGTERM, timeout=60) == 0, first.stderr
