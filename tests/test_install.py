"""`make install` / `make uninstall` into a temporary root (DESTDIR): every file, link and mode.

Covered: the venv is created (without pip: --skip-pip), the /usr/local/bin/edged link and its target, the unit,
/etc/edged/cell.toml from the example with mode 0640 and only when absent, the printed systemctl commands, and
uninstall removing program, link, unit and drop-ins while keeping the config and the spool.
Not covered here (too slow for the suite): pip-installing edged into the venv (the Cython build); `make install`
without INSTALL_FLAGS runs exactly that step on top of what is tested.
"""
from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def make(target: str, root: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "-s", target, f"DESTDIR={root}", f"PYTHON={sys.executable}", *extra],
                          cwd=REPO, capture_output=True, text=True, timeout=120)


def test_install_and_uninstall_into_a_temporary_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    res = make("install", root, "INSTALL_FLAGS=--skip-pip")
    assert res.returncode == 0, res.stderr
    venv = root / "opt" / "edged"
    assert (venv / "pyvenv.cfg").is_file() and (venv / "bin" / "python").exists()
    link = root / "usr" / "local" / "bin" / "edged"
    assert link.is_symlink() and os.readlink(link) == "/opt/edged/bin/edged"
    unit = root / "etc" / "systemd" / "system" / "edged.service"
    assert unit.read_text() == (REPO / "systemd" / "edged.service").read_text()
    assert stat.S_IMODE(unit.stat().st_mode) == 0o644
    cell = root / "etc" / "edged" / "cell.toml"
    assert cell.read_bytes() == (REPO / "config" / "example-cell.toml").read_bytes()
    assert stat.S_IMODE(cell.stat().st_mode) == 0o640
    assert "systemctl daemon-reload" in res.stdout and "systemctl enable --now edged" in res.stdout
    assert "systemd-dropin" in res.stdout

    # an operator's config is never overwritten by a second install
    cell.write_text("# mine\n")
    spool = root / "var" / "lib" / "edged" / "spool"
    spool.mkdir(parents=True)
    (spool / "segment").write_text("data")
    dropin = unit.with_name("edged.service.d")
    dropin.mkdir()
    (dropin / "ipaddress.conf").write_text("[Service]\n")
    res = make("install", root, "INSTALL_FLAGS=--skip-pip")
    assert res.returncode == 0, res.stderr
    assert cell.read_text() == "# mine\n" and "left as it is" in res.stdout

    res = make("uninstall", root)
    assert res.returncode == 0, res.stderr
    assert not link.exists() and not link.is_symlink()
    assert not venv.exists() and not unit.exists() and not dropin.exists()
    assert cell.read_text() == "# mine\n"
    assert (spool / "segment").read_text() == "data"


def test_edged_install_with_a_prefix_points_the_unit_at_it(tmp_path: Path) -> None:
    res = subprocess.run([sys.executable, "-m", "edged", "install", "--destdir", str(tmp_path), "--prefix",
                          "/usr/local/edged-test", "--skip-pip", "--source", str(REPO)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    base = tmp_path / "usr" / "local" / "edged-test"
    unit = (base / "etc" / "systemd" / "system" / "edged.service").read_text()
    assert "ExecStart=/usr/local/edged-test/usr/local/bin/edged run -c /usr/local/edged-test/etc/edged/cell.toml" \
        in unit
    assert os.readlink(base / "usr" / "local" / "bin" / "edged") == "/usr/local/edged-test/opt/edged/bin/edged"


def test_install_refuses_a_directory_that_is_not_a_source_tree(tmp_path: Path) -> None:
    res = subprocess.run([sys.executable, "-m", "edged", "install", "--destdir", str(tmp_path), "--skip-pip",
                          "--source", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "not an edged source tree" in res.stderr
