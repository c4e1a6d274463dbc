"""Status at a glance: GET /status, `edged status` (table and --json) against a running demo, STATUS= lines,
TLS and basic auth on the metrics/status server, and the watchdog stopping when the event loop is blocked."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from daemon_support import Proc, eventually, free_port, scrape

REPO = Path(__file__).resolve().parents[1]


def edged(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edged", *args], capture_output=True, text=True, timeout=60)


def test_edged_status_prints_the_device_states_of_a_running_demo(tmp_path: Path) -> None:
    port = free_port()
    p = Proc(["demo", "--state-dir", str(tmp_path / "demo"), "--metrics-port", str(port)], tmp_path)
    try:
        url = p.wait_for(r"metrics: (http://\S+)", 60).group(1).replace("/metrics", "/status")

        def both_up() -> dict | None:
            s = json.loads(scrape(url))
            return s if all(d["state"] == "up" and d["last_good_read"] for d in s["devices"].values()) else None

        s = eventually(both_up, 30, what="both demo devices up in /status")
        assert set(s["devices"]) >= {"press1", "robot1"}
        press = s["devices"]["press1"]
        assert press["driver"] == "modbus" and press["tags"] > 0 and press["scans"]
        assert "units" in press and "driver_status" in press
        task = s["cycle_tasks"]["press_logic"]
        assert task["period_s"] == 0.01 and task["cycles"] > 0 and "lateness_p99_s" in task
        assert s["spool"]["depth_samples"] >= 0 and "oldest_age_s" in s["spool"]
        assert s["sinks"]["local"]["state"] == "ready" and s["sinks"]["local"]["lag_samples"] is not None
        assert s["config"]["file"] == str(tmp_path / "demo" / "demo-cell.toml") and s["config"]["loaded_at"]
        n = len(s["devices"])
        assert s["summary"].startswith(f"{n}/{n} devices up, spool ")

        res = edged("status", "--url", url)
        assert res.returncode == 0, res.stderr
        out = res.stdout
        assert "\033[" not in out  # not a terminal: no colours
        rows = {ln.split()[0]: ln.split() for ln in out.splitlines() if ln.startswith(("press1", "robot1"))}
        assert rows["press1"][:3] == ["press1", "modbus", "up"] and rows["robot1"][2] == "up", out
        assert "CYCLE TASK" in out and "press_logic" in out and "spool:" in out

        res = edged("status", "--url", url, "--json")
        assert res.returncode == 0 and json.loads(res.stdout)["devices"]["robot1"]["state"] == "up"

        # the demo's cell is a file in its state folder: an edited copy is applied by SIGHUP
        cell_file = tmp_path / "demo" / "demo-cell.toml"
        cell_file.write_text(cell_file.read_text() + '\n[device.extra]\ndriver = "sim"\n'
                                                      '[device.extra.tag.n]\naddress = "counter"\nscan_ms = 100\n')
        p.p.send_signal(signal.SIGHUP)
        p.wait_for(r"reload applied", 30, stream="err")
        assert p.p.poll() is None
        after = json.loads(scrape(url))
        assert after["reload"]["last_result"] == "ok" and "extra" in after["devices"]
    finally:
        assert p.stop() == 0, p.stderr


def test_status_lines_to_systemd_carry_a_summary(tmp_path: Path) -> None:
    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(0.2)
    cell = tmp_path / "cell.toml"
    cell.write_text(f'[cell]\nname = "n"\nstate_dir = "{tmp_path / "state"}"\n'
                    f'[metrics]\nlisten = "127.0.0.1:{free_port()}"\n'
                    '[device.sim1]\ndriver = "sim"\n[device.sim1.tag.c]\naddress = "counter"\nscan_ms = 100\n'
                    f'[sink.file]\ntype = "jsonl"\npath = "{tmp_path / "out.jsonl"}"\n')
    got: list[str] = []

    def drain() -> list[str]:
        try:
            while True:
                got.append(sock.recv(4096).decode())
        except socket.timeout:
            pass
        return got

    p = Proc(["run", "-c", str(cell)], tmp_path, env={"NOTIFY_SOCKET": str(sock_path)})
    try:
        eventually(lambda: any(m == "STATUS=1/1 devices up, spool 0, file ready" or
                               m.startswith("STATUS=1/1 devices up, spool ") for m in drain()), 30,
                   what="a STATUS= summary")
    finally:
        assert p.stop() == 0, p.stderr
        sock.close()
    assert any(m.startswith("STATUS=0/1 devices up") or m.startswith("STATUS=1/1") for m in got)


def test_metrics_and_status_over_tls_with_basic_auth(tmp_path: Path) -> None:
    from mosquitto_support import make_pki

    pki = make_pki(tmp_path / "pki")
    pw = tmp_path / "metrics.pass"
    pw.write_text("scrape-secret\n")
    pw.chmod(0o600)
    port = free_port()
    cell = tmp_path / "cell.toml"
    cell.write_text(f'[cell]\nname = "n"\nstate_dir = "{tmp_path / "state"}"\n'
                    f'[metrics]\nlisten = "127.0.0.1:{port}"\ntls_cert = "{pki.server_cert}"\n'
                    f'tls_key = "{pki.server_key}"\nusername = "prom"\npassword_file = "{pw}"\n'
                    '[device.sim1]\ndriver = "sim"\n[device.sim1.tag.c]\naddress = "counter"\nscan_ms = 100\n')
    p = Proc(["run", "-c", str(cell)], tmp_path)
    try:
        p.wait_for(r"running", 30, stream="err")
        import ssl

        ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
        ctx.check_hostname = False
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(f"https://127.0.0.1:{port}/metrics", context=ctx, timeout=5)
        assert e.value.code == 401
        with pytest.raises(OSError):  # plain HTTP on a TLS port does not get an answer
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
        import base64

        req = urllib.request.Request(f"https://127.0.0.1:{port}/metrics",
                                     headers={"Authorization": "Basic " + base64.b64encode(b"prom:scrape-secret")
                                              .decode()})
        assert "edged_device_up" in urllib.request.urlopen(req, context=ctx, timeout=5).read().decode()
        bad = urllib.request.Request(req.full_url, headers={"Authorization": "Basic " +
                                                            base64.b64encode(b"prom:wrong").decode()})
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(bad, context=ctx, timeout=5)
        # edged status finds URL, TLS and credentials in the cell; the server's CA signed its certificate
        res = edged("status", "-c", str(cell), "--json", "--cafile", str(pki.ca_cert))
        assert res.returncode == 0, res.stderr
        st = json.loads(res.stdout)
        assert st["devices"]["sim1"]["tags"] == 1 and len(st["config"]["sha256"]) == 64
        assert "scrape-secret" not in p.stdout + p.stderr
    finally:
        assert p.stop() == 0, p.stderr


def test_watchdog_pings_stop_while_the_event_loop_is_blocked(tmp_path: Path) -> None:
    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(0.2)
    cell = tmp_path / "cell.toml"
    cell.write_text(f'[cell]\nname = "n"\nstate_dir = "{tmp_path / "state"}"\n[metrics]\nenabled = false\n')
    script = tmp_path / "block.py"
    # the daemon's own Runtime in a subprocess; a test hook blocks its event loop for 2 s after READY
    script.write_text(textwrap.dedent(f"""
        import asyncio, time
        from edged import sdnotify
        from edged.cell import load_cell
        from edged.runtime import Runtime

        async def block():
            await asyncio.sleep(1.5)
            sdnotify.notify("X-TEST=block-start")
            time.sleep(2.0)
            sdnotify.notify("X-TEST=block-end")

        async def main():
            asyncio.get_running_loop().create_task(block())
            await Runtime(load_cell({str(cell)!r})).run_forever()

        asyncio.run(main())
    """))
    env = dict(os.environ, NOTIFY_SOCKET=str(sock_path), WATCHDOG_USEC="200000", PYTHONUNBUFFERED="1")
    p = subprocess.Popen([sys.executable, str(script)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    got: list[str] = []
    sock.setblocking(False)  # pings come faster than a recv timeout: read what is there, never wait
    try:
        def drain() -> list[str]:
            try:
                while True:
                    got.append(sock.recv(4096).decode())
            except BlockingIOError:
                pass
            return got

        eventually(lambda: "X-TEST=block-end" in drain() and
                   got.index("X-TEST=block-end") < len(got) - 2 and
                   got[got.index("X-TEST=block-end"):].count("WATCHDOG=1") >= 2, 30, what="pings after the block")
    finally:
        p.terminate()
        p.wait(20)
        sock.close()
    start, end = got.index("X-TEST=block-start"), got.index("X-TEST=block-end")
    assert got[:start].count("WATCHDOG=1") >= 1  # pinging before
    assert "WATCHDOG=1" not in got[start:end]    # silent while the loop is blocked: systemd's watchdog fires


def test_table_colours_states_only_when_asked_and_a_missing_daemon_is_exit_1(tmp_path: Path) -> None:
    from edged.commands.status import render

    snap = {"cell": "c", "version": "1", "pid": 1, "uptime_s": 3, "time": "2026-01-01T00:00:10.000Z",
            "summary": "1/2 devices up", "config": {"file": "/etc/edged/cell.toml", "sha256": "ab" * 32,
                                                   "loaded_at": "2026-01-01T00:00:00.000Z"},
            "reload": {"count": 0}, "devices": {
                "p1": {"driver": "modbus", "state": "up", "since": "2026-01-01T00:00:01.000Z",
                       "last_good_read": "2026-01-01T00:00:09.500Z", "tags": 3, "last_error": None,
                       "units": {"unit 2": "silent"}, "driver_status": {"pdu": 240}},
                "p2": {"driver": "modbus", "state": "down", "since": "2026-01-01T00:00:02.000Z",
                       "last_good_read": None, "tags": 1, "last_error": "connection refused",
                       "last_error_at": "2026-01-01T00:00:02.000Z", "units": {}, "driver_status": {}}},
            "cycle_tasks": {}, "spool": None, "sinks": {}}
    plain = render(snap, colour=False)
    assert "\033[" not in plain
    assert "connection refused (8.0s ago)" in plain and "unit 2" in plain and "pdu" in plain
    coloured = render(snap, colour=True)
    assert "\033[32mup" in coloured and "\033[31mdown" in coloured and "\033[33msilent" in coloured
    res = edged("status", "--url", f"http://127.0.0.1:{free_port()}/status")
    assert res.returncode == 1 and "edged status:" in res.stderr
