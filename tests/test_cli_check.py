"""`edged check`: the example cell is valid, --plan shows the Modbus requests, check does no I/O; CLI basics."""
from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from edged.driver import available_drivers

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "config" / "example-cell.toml"
VERSION = (REPO / "edged" / "VERSION").read_text().strip()
needs_modbus = pytest.mark.skipif("modbus" not in available_drivers(), reason="the modbus driver is not installed")


def edged(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run the edged CLI as a real subprocess."""
    return subprocess.run([sys.executable, "-m", "edged", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120)


def test_example_cell_is_valid(tmp_path: Path) -> None:
    """The shipped example passes `edged check` with exit 0 and a one-line summary."""
    proc = edged("check", "-c", str(EXAMPLE), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    summary = proc.stdout.splitlines()[0]
    assert summary.startswith(f"{EXAMPLE}: ok: cell 'press-line-3', 4 device(s), ")


@needs_modbus
def test_plan_lists_modbus_requests(tmp_path: Path) -> None:
    """--plan prints, per Modbus device and scan group, one line per read request."""
    proc = edged("check", "-c", str(EXAMPLE), "--plan", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.splitlines()
    for device in ("press1", "robot1", "oven", "conveyor"):
        assert f"device {device} (modbus):" in out
    assert "  scan fast every 100 ms: " in "\n".join(out)
    request = re.compile(r"^    unit \d+ (co|di|hr|ir) \d+(\.\.\d+)? \(\d+ (bit|bits|reg|regs)\): \w")
    requests = [line for line in out if request.match(line)]
    assert requests, proc.stdout
    # Both units of the RTU line appear, each with its own unit id.
    assert any(line.startswith("    unit 2 ") for line in requests)
    # press1: oil_temp (hr 0..1) and motor_current (hr 2..3) share one request in scan "normal".
    assert any(re.match(r"^    unit 1 hr 0\.\.\d+ .*oil_temp.*motor_current", line) for line in requests)


def test_check_does_no_io(tmp_path: Path) -> None:
    """check opens no socket and creates no file: a listening port sees no connection, the folder stays empty."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.setblocking(False)
    port = listener.getsockname()[1]
    cell = tmp_path / "cell.toml"
    text = EXAMPLE.read_text().replace('host = "192.168.10.21"', 'host = "127.0.0.1"') \
                              .replace("port = 502\nunit_id = 1", f"port = {port}\nunit_id = 1", 1)
    assert f"port = {port}" in text
    cell.write_text(text + f'\n[sink.lake]\ntype = "jsonl"\npath = "{tmp_path / "out" / "lake.jsonl"}"\n')
    try:
        proc = edged("check", "-c", "cell.toml", cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        with pytest.raises(BlockingIOError):
            listener.accept()
    finally:
        listener.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cell.toml"]


MENTIONED_PATHS = ["/dev/serial/by-id/usb-FTDI_USB-RS485_Cable_FT4ABCDE-if00-port0", "/etc/edged-check-test/ca.pem",
                   "/etc/edged-check-test/client.pem", "/etc/edged-check-test/client.key",
                   "/etc/edged-check-test/mqtt.pass", "lake.jsonl"]
_NET_CALL = re.compile(r"^\d+\s+(socket|connect|bind|listen|sendto|sendmsg)\(")
_WRITE_OPEN = re.compile(r"^\d+\s+open(at)?\(.*(O_WRONLY|O_RDWR|O_CREAT)")


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed")
def test_check_touches_no_path_the_config_names(tmp_path: Path) -> None:
    """Under strace: no socket, no file opened for writing, and no path the config names is even looked at."""
    extra = """
[sink.upstream]
type = "mqtt"
host = "192.0.2.1"
tls_ca = "/etc/edged-check-test/ca.pem"
tls_cert = "/etc/edged-check-test/client.pem"
tls_key = "/etc/edged-check-test/client.key"
username = "line3"
password_file = "/etc/edged-check-test/mqtt.pass"

[sink.lake]
type = "jsonl"
path = "lake.jsonl"
"""
    (tmp_path / "cell.toml").write_text(EXAMPLE.read_text() + extra)
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.run(["strace", "-f", "-qq", "-e", "trace=%file,%network", "-o", "trace.txt",
                           sys.executable, "-m", "edged", "check", "-c", "cell.toml"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    if proc.returncode != 0 and "ptrace" in proc.stderr:
        pytest.skip(f"strace cannot trace here: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stderr
    trace = (tmp_path / "trace.txt").read_text().splitlines()
    assert any('"cell.toml"' in line and "open" in line for line in trace)
    assert [line for line in trace if _NET_CALL.match(line)] == []
    assert [line for line in trace if _WRITE_OPEN.match(line)] == []
    for path in MENTIONED_PATHS:
        assert [line for line in trace if f'"{path}"' in line or f'/{path}"' in line] == [], path


def test_relative_config_path_and_other_cwd(tmp_path: Path) -> None:
    """The config may be given relative to the working directory; the summary names it as given."""
    shutil.copy(EXAMPLE, tmp_path / "line3.toml")
    proc = edged("check", "--config", "line3.toml", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("line3.toml: ok: ")


def test_version(tmp_path: Path) -> None:
    """`edged --version` prints the package version and exits 0."""
    proc = edged("--version", cwd=tmp_path)
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"edged {VERSION}"


@pytest.mark.parametrize("args, message", [
    (["check"], "the following arguments are required: -c/--config"),
    (["check", "-c"], "argument -c/--config: expected one argument"),
    (["check", "-c", "x.toml", "--bogus"], "unrecognized arguments: --bogus"),
    (["no-such-command"], "invalid choice: 'no-such-command'"),
    (["--log-level", "loud", "check", "-c", "x.toml"], "argument --log-level: invalid choice: 'loud'"),
])
def test_usage_errors_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    """Wrong command lines exit 2 with argparse's usage and a message saying what is wrong."""
    proc = edged(*args, cwd=tmp_path)
    assert proc.returncode == 2
    assert "usage: edged" in proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_no_command_prints_help_and_exits_2(tmp_path: Path) -> None:
    """`edged` alone shows the commands (check among them) and exits 2."""
    proc = edged(cwd=tmp_path)
    assert proc.returncode == 2
    assert "check" in proc.stderr and "usage: edged" in proc.stderr


def test_check_reports_errors_with_file_name_and_count(tmp_path: Path) -> None:
    """An invalid cell exits 2; each error line starts with the file name as given; a count follows."""
    (tmp_path / "bad.toml").write_text('[cell]\nname = "x"\ncolour = "red"\n[metrics]\nenabled = "yes"\n')
    proc = edged("check", "-c", "bad.toml", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert "bad.toml: metrics.enabled: expected a boolean (true or false), found string 'yes'" in lines
    assert any(line.startswith("bad.toml: cell.colour: unknown key (allowed here: ") for line in lines)
    assert lines[-1] == "edged: 2 config error(s)"
