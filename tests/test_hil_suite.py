"""The hardware-in-the-loop suite: on the emulated demo cell it passes with its fault scenarios and writes both
reports; against a "real" cell it never writes and runs no control task unless told to."""
from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from daemon_support import Proc
from edged.simulation.control import SimulatorClient

ROOT = Path(__file__).resolve().parent.parent


def hil(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(ROOT / "hil_tests"),
                           "--report", str(tmp_path / "report.md"), "--soak-seconds", "2", *args],
                          capture_output=True, text=True, cwd=tmp_path, timeout=600,
                          env=dict(os.environ, **(env or {})))


def test_hil_suite_passes_on_the_emulated_demo_cell_with_fault_scenarios_and_both_reports(tmp_path: Path) -> None:
    res = hil(tmp_path)
    assert res.returncode == 0, res.stdout[-5000:] + res.stderr[-3000:]
    text = (tmp_path / "report.md").read_text()
    assert "# Commissioning report: cell `demo-cell`" in text and "**PASSED**" in text
    assert "sha256 `" in text and "edged version:" in text
    assert "| test_every_tag_reads_with_its_type_and_a_plausible_value | passed |" in text
    assert "| press1 | spindle_speed | yes |" in text
    assert "## Fault scenarios" in text and "| press1 | stop | recovered |" in text
    assert "| test_zz_no_sample_accepted_into_the_spool_is_lost | passed |" in text
    suite = ET.parse(tmp_path / "report.xml").getroot()
    cases = suite.iter("testcase")
    assert {c.get("name") for c in cases} >= {"test_config_is_valid", "test_writable_tags_round_trip"}
    assert suite.find("testsuite") is not None or suite.tag == "testsuite"


CELL = """
[cell]
name = "plant"
state_dir = "state"

[device.press]
driver = "modbus"
host = "127.0.0.1"
port = {port}
timeout_s = 0.5

[device.press.tag.count]
address = "hr:0"
type = "uint16"

[device.press.tag.setpoint]
address = "hr:1"
type = "uint16"
access = "write"
min = 0
max = 100

[device.press.tag.lamp]
address = "hr:2"
type = "uint16"
access = "write"

[task.blink]
period_us = 10000

[task.blink.block.on]
type = "MOVE"
in = {{ IN = 7 }}
out = {{ OUT = "press.lamp" }}
"""


def test_a_real_cell_run_without_allow_writes_never_writes_and_runs_no_control_task(tmp_path: Path) -> None:
    from daemon_support import free_port

    cell = tmp_path / "plant.toml"
    cell.write_text(CELL.format(port=free_port()))
    sim = Proc(["simulate", "-c", str(cell), "--control-port", "0"], cwd=tmp_path)
    try:
        client = SimulatorClient(sim.wait_for(r"control API (http://\S+)", timeout=60).group(1))
        sim.wait_for("serving", timeout=60)
        # the plant's cell names only loopback endpoints here, so the suite would refuse --real: the test-only
        # switch lets it run against this recording emulator exactly as against a plant
        res = hil(tmp_path, "--cell", str(cell), "--real", env={"EDGED_HIL_ALLOW_LOOPBACK_REAL": "1"})
        assert res.returncode == 0, res.stdout[-5000:] + res.stderr[-3000:]
        report = (tmp_path / "report.md").read_text()
        assert "read-only (no write, no control task)" in report
        assert "| test_writable_tags_round_trip | skipped | writes to a real cell need --allow-writes |" in report
        assert "fault scenarios need the emulated cell" in report
        assert client.writes() == {"press": 0}  # no write, from a test or from the control task
        assert client.value("press.lamp") == 0
    finally:
        sim.stop()


def test_real_refuses_a_cell_that_is_not_a_plant(tmp_path: Path) -> None:
    cell = tmp_path / "plant.toml"
    cell.write_text(CELL.format(port=1502))
    res = hil(tmp_path, "--cell", str(cell), "--real")
    assert res.returncode == 2
    assert "names only loopback endpoints, so it is not a plant" in res.stdout + res.stderr
