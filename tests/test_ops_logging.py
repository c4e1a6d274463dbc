"""Logging and secrets of the daemon as a subprocess: journald format, no secrets in a debug log,
credentials from $CREDENTIALS_DIRECTORY first, a warning for files others can read."""
from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from pathlib import Path

from daemon_support import Proc, eventually, free_port, metric, scrape
from mosquitto_support import Broker, make_password_file

from edged import logsetup

SECRET_RIGHT = "s3cret-Credential-7f3a"
SECRET_WRONG = "wrong-File-Password-91c2"


def cell_text(metrics_port: int, state: Path, broker_port: int | None = None, pw_file: Path | None = None) -> str:
    text = f"""
[cell]
name = "logcell"
state_dir = "{state}"
[metrics]
listen = "127.0.0.1:{metrics_port}"
[device.sim1]
driver = "sim"
[device.sim1.tag.count]
address = "counter"
scan_ms = 100
"""
    if broker_port is not None:
        text += f"""
[sink.up]
type = "mqtt"
host = "127.0.0.1"
port = {broker_port}
username = "edge"
password_file = "{pw_file}"
"""
    return text


def test_priorities_follow_syslog() -> None:
    assert [logsetup.priority(lv) for lv in (logging.CRITICAL, logging.ERROR, logging.WARNING, logging.INFO,
                                               logging.DEBUG)] == [2, 3, 4, 6, 7]


def test_journal_format_prefixes_every_line_and_has_no_timestamp() -> None:
    rec = logging.LogRecord("edged.device", logging.WARNING, __file__, 1, "device %s: up -> down", ("p1",), None)
    logsetup.DeviceField().filter(rec)
    assert rec.device == "p1"
    assert logsetup.JournalFormatter().format(rec) == "<4>edged.device: device p1: up -> down"


def test_under_journald_uses_priority_prefixes_without_timestamps(tmp_path: Path) -> None:
    port = free_port()
    cell = tmp_path / "cell.toml"
    cell.write_text(cell_text(port, tmp_path / "state"))
    cell.chmod(0o640)
    log_path = tmp_path / "stderr.log"
    with open(log_path, "w") as err:
        st = os.fstat(err.fileno())
        env = dict(os.environ, JOURNAL_STREAM=f"{st.st_dev}:{st.st_ino}", PYTHONUNBUFFERED="1")
        p = subprocess.Popen([sys.executable, "-m", "edged", "run", "-c", str(cell)], stderr=err,
                             stdout=subprocess.DEVNULL, env=env, cwd=tmp_path)
        try:
            eventually(lambda: "running" in log_path.read_text(), timeout=30, what="the running line")
        finally:
            p.terminate()
            assert p.wait(30) == 0
    lines = [ln for ln in log_path.read_text().splitlines() if ln]
    assert lines and all(re.match(r"^<[2-7]>edged[\w.]*: ", ln) for ln in lines), lines
    assert any(ln.startswith("<6>") and "running" in ln for ln in lines)
    assert not any(re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d", ln) for ln in lines), lines
    assert not any("readable by other users" in ln for ln in lines)  # 0640: no warning


def test_no_secret_in_a_debug_log_and_credentials_directory_first(tmp_path: Path) -> None:
    broker = Broker(directory=tmp_path / "broker", anonymous=False,
                    password_file=make_password_file(tmp_path / "broker" / "passwd", {"edge": SECRET_RIGHT}))
    broker.start()
    try:
        pw_file = tmp_path / "etc" / "mqtt.pass"
        pw_file.parent.mkdir()
        pw_file.write_text(SECRET_WRONG + "\n")  # what the cell names; systemd's credential copy wins
        pw_file.chmod(0o644)
        creds = tmp_path / "credentials"
        creds.mkdir()
        (creds / "mqtt.pass").write_text(SECRET_RIGHT + "\n")
        port = free_port()
        cell = tmp_path / "cell.toml"
        cell.write_text(cell_text(port, tmp_path / "state", broker.port, pw_file))
        cell.chmod(0o644)
        p = Proc(["--log-level", "debug", "run", "-c", str(cell)], cwd=tmp_path,
                 env={"CREDENTIALS_DIRECTORY": str(creds)})
        try:
            url = f"http://127.0.0.1:{port}/metrics"
            eventually(lambda: (metric(scrape(url), "edged_spool_acked_samples_total", sink="up") or 0) > 5,
                       timeout=40, what="samples forwarded with the credential's password")
        finally:
            assert p.stop() == 0, p.stderr
        log = p.stdout + p.stderr
        assert SECRET_RIGHT not in log and SECRET_WRONG not in log
        assert f"{cell} is readable by other users" in log
        # the credential copy is the file read, so the warning names it
        assert f"sink.up.password_file: {creds / 'mqtt.pass'} is readable by other users" in log
        assert SECRET_RIGHT not in broker.log() and SECRET_WRONG not in broker.log()
    finally:
        broker.stop()
