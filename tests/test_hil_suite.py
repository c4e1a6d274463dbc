"""The hardware-in-the-loop suite runs against an emulated cell and writes a commissioning report."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_hil_suite_passes_on_the_emulated_demo_cell(tmp_path: Path) -> None:
    cell = tmp_path / "cell.toml"
    text = subprocess.run([sys.executable, "-m", "edged", "demo", "--print-config", "--state-dir",
                           str(tmp_path / "state")], capture_output=True, text=True, check=True, cwd=tmp_path).stdout
    cell.write_text(text)
    report = tmp_path / "report.md"
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(ROOT / "hil_tests"),
                          "--cell", str(cell), "--report", str(report), "--soak-seconds", "2"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    text = report.read_text()
    assert "# Commissioning report: cell `demo-cell`" in text
    assert "**PASSED**" in text
    assert "| test_every_tag_reads_with_good_quality | passed |" in text
    assert "press1.spindle_speed" in text  # the values read are in the report
