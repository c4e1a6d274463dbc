"""`edged opcua browse` against the demo cell's OPC UA robot: the tree, and a --toml snippet that check and read accept."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from daemon_support import Proc, free_port

DEMO_ARM_TAGS = {"axis1", "axis2", "axis3", "program_state", "cycle_counter", "speed_override"}


def _edged(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edged", *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_browse_toml_of_the_demo_robot_is_a_cell_that_check_and_read_accept(tmp_path: Path) -> None:
    demo = _edged("demo", "--print-config", "--state-dir", str(tmp_path / "state"), cwd=tmp_path)
    assert demo.returncode == 0, demo.stderr
    (tmp_path / "demo.toml").write_text(demo.stdout)
    endpoint = re.search(r'endpoint = "(opc\.tcp://127\.0\.0\.1:\d+)"', demo.stdout).group(1)
    server = Proc(["simulate", "-c", "demo.toml", "--device", "arm1", "--set", 'arm1.program_state="RUNNING"',
                   "--set", "arm1.axis1=12.5", "--set", "arm1.cycle_counter=7"], cwd=tmp_path)
    try:
        server.wait_for("serving", timeout=60)
        tree = _edged("opcua", "browse", endpoint, "--security", "None", cwd=tmp_path)
        assert tree.returncode == 0, tree.stderr
        assert re.search(r"^\s+\d+:Axis1\.Position  nsu=urn:edged:demo:robot;s=Axis1\.Position  Double  r  deg$",
                         tree.stdout, re.M), tree.stdout
        assert re.search(r"SpeedOverride  Double  rw  %$", tree.stdout, re.M), tree.stdout
        assert re.search(r"^\s+\d+:ProgramState  .*  String  r$", tree.stdout, re.M), tree.stdout

        snippet = _edged("opcua", "browse", endpoint, "--security", "None", "--toml", "--device", "arm", cwd=tmp_path)
        assert snippet.returncode == 0, snippet.stderr
        assert 'address = "nsu=urn:edged:demo:robot;s=Axis1.Position"' in snippet.stdout
        assert "ns=" not in snippet.stdout.replace("nsu=", "")  # namespace URIs only, no indexes
        cell = tmp_path / "browsed.toml"
        cell.write_text('[cell]\nname = "browsed"\n\n' + snippet.stdout)
        check = _edged("check", "-c", str(cell), cwd=tmp_path)
        assert check.returncode == 0, check.stdout + check.stderr
        read = _edged("read", "-c", str(cell), "--json", cwd=tmp_path)
        assert read.returncode == 0, read.stderr
        rows = {r["tag"]: r for r in json.loads(read.stdout)}
        assert len(rows) == len(DEMO_ARM_TAGS) and all(r["quality"] == "good" for r in rows.values())
        by_addr = {name.split(".", 1)[1]: r for name, r in rows.items()}
        assert by_addr["Axis1_Position"]["value"] == 12.5 and by_addr["Axis1_Position"]["unit"] == "deg"
        assert by_addr["ProgramState"]["value"] == "RUNNING"
        assert by_addr["CycleCounter"]["value"] == 7 and by_addr["CycleCounter"]["type"] == "uint32"
    finally:
        server.stop()


def test_browse_of_an_unreachable_endpoint_says_so(tmp_path: Path) -> None:
    res = _edged("opcua", "browse", f"opc.tcp://127.0.0.1:{free_port()}", "--security", "None", "--timeout", "1",
                 cwd=tmp_path)
    assert res.returncode == 1
    assert "cannot connect to opc.tcp://127.0.0.1" in res.stderr and "Traceback" not in res.stderr
