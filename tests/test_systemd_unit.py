"""The shipped systemd unit verifies cleanly and keeps its hardening (systemd-analyze, offline)."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parent.parent / "systemd" / "edged.service"
analyze = shutil.which("systemd-analyze")
pytestmark = pytest.mark.skipif(analyze is None, reason="systemd-analyze is not installed (Debian package systemd)")


def unit_copy(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at an existing binary (verify checks that the executable exists)."""
    text = UNIT.read_text().replace("/usr/local/bin/edged", shutil.which("true") or "/bin/true")
    out = tmp_path / "edged.service"
    out.write_text(text)
    return out


def test_unit_is_notify_with_watchdog_and_no_restart_on_config_error() -> None:
    text = UNIT.read_text()
    assert re.search(r"^Type=notify$", text, re.M)
    assert re.search(r"^WatchdogSec=\d+", text, re.M)
    assert re.search(r"^RestartPreventExitStatus=2$", text, re.M)
    assert re.search(r"^StateDirectory=edged$", text, re.M)


def test_systemd_analyze_verify_is_clean(tmp_path: Path) -> None:
    res = subprocess.run([analyze, "verify", str(unit_copy(tmp_path))], capture_output=True, text=True)
    assert res.returncode == 0 and not res.stderr.strip(), res.stderr


def test_security_exposure_stays_low(tmp_path: Path) -> None:
    res = subprocess.run([analyze, "security", "--offline=yes", str(unit_copy(tmp_path))],
                         capture_output=True, text=True)
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", res.stdout + res.stderr)
    assert m, res.stdout + res.stderr
    assert float(m.group(1)) <= 2.5, res.stdout
