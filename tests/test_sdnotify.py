"""The systemd notify protocol: READY=1 after start-up, WATCHDOG=1 pings, STOPPING=1 on SIGTERM (fake NOTIFY_SOCKET)."""
from __future__ import annotations

import socket
from pathlib import Path

from daemon_support import Proc, eventually, free_port


def test_daemon_notifies_ready_watchdog_and_stopping(tmp_path: Path) -> None:
    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(0.2)
    cell = tmp_path / "cell.toml"
    cell.write_text(f'[cell]\nname = "n"\nstate_dir = "{tmp_path / "state"}"\n'
                    f'[metrics]\nlisten = "127.0.0.1:{free_port()}"\n')
    got: list[str] = []

    def drain() -> list[str]:
        try:
            while True:
                got.append(sock.recv(4096).decode())
        except socket.timeout:
            pass
        return got

    p = Proc(["run", "-c", str(cell)], tmp_path, env={"NOTIFY_SOCKET": str(sock_path), "WATCHDOG_USEC": "400000"})
    try:
        eventually(lambda: any(m.startswith("READY=1") for m in drain()), 30, what="READY=1")
        eventually(lambda: sum(m == "WATCHDOG=1" for m in drain()) >= 3, 30, what="three WATCHDOG=1")
    finally:
        assert p.stop() == 0, p.stderr
        sock.close()
    drain_after = got
    assert any("STATUS=running cell n" in m for m in drain_after)


def test_notify_without_socket_and_watchdog_interval(monkeypatch) -> None:
    import os

    from edged import sdnotify

    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    assert sdnotify.notify("READY=1") is False
    assert sdnotify.watchdog_interval_s() is None
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert sdnotify.watchdog_interval_s() == 0.5
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    assert sdnotify.watchdog_interval_s() is None
