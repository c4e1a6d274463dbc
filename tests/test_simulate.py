"""`edged simulate`: any cell emulated from its file (rewritten to loopback), generators, faults and the control API."""
from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from daemon_support import Proc
from edged.cell import parse_cell
from edged.errors import ConfigError
from edged.simulation.control import SimulatorClient, SimulatorError
from edged.simulation.rewrite import foreign_endpoints, is_loopback_host, rewrite_cell

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config" / "example-cell.toml"


def edged(*args: str, cwd: Path, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edged", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def start_sim(tmp_path: Path, cell: Path, *extra: str) -> tuple[Proc, SimulatorClient, Path]:
    out = tmp_path / "sim.toml"
    p = Proc(["simulate", "-c", str(cell), "--rewrite", str(out), "--control-port", "0", *extra], cwd=tmp_path)
    url = p.wait_for(r"control API (http://\S+)", timeout=60).group(1)
    p.wait_for(r"serving ", timeout=60)
    return p, SimulatorClient(url), out


def test_the_example_cell_with_real_addresses_is_served_rewritten_and_read_good(tmp_path: Path) -> None:
    data = tomllib.loads(EXAMPLE.read_text())
    assert foreign_endpoints(data), "the example cell names real addresses and serial ports"
    p, client, sim = start_sim(tmp_path, EXAMPLE)
    try:
        res = edged("read", "-c", str(sim), "--json", cwd=tmp_path)
        assert res.returncode == 0, res.stderr
        rows = {r["tag"]: r for r in json.loads(res.stdout)}
        cell = parse_cell(data, str(EXAMPLE), base_dir=EXAMPLE.parent)
        assert set(rows) == set(cell.tags)
        bad = [k for k, r in rows.items() if r["quality"] != "good"]
        assert not bad, bad
        # generators of the [simulate] tables drive the values
        assert 37.0 - 0.1 <= rows["press1.oil_temp"]["value"] <= 53.0 + 0.1
        assert 150.0 - 0.1 <= rows["press1.hydraulic_pressure"]["value"] <= 210.0 + 0.1
        assert rows["oven.zone1_setpoint"]["value"] == pytest.approx(180.0)
        assert 19.9 <= rows["oven.zone1_temp"]["value"] < 180.0  # follows its setpoint through a lag
        rewritten = tomllib.loads(sim.read_text())
        assert [f for f in foreign_endpoints(rewritten) if "serial port" not in f] == []  # its ptys exist now
        assert rewritten["device"]["press1"]["host"] == "127.0.0.1"
        assert rewritten["task"] == data["task"] and rewritten["sink"] == data["sink"]  # only endpoints change
    finally:
        p.stop()


def test_a_cell_with_real_addresses_is_refused_without_rewrite(tmp_path: Path) -> None:
    res = edged("simulate", "-c", str(EXAMPLE), cwd=tmp_path)
    assert res.returncode == 2
    assert "device.press1.host: expected a loopback endpoint" in res.stderr
    assert "--rewrite" in res.stderr and "Traceback" not in res.stderr


GATEWAY = """
[cell]
name = "gw"
state_dir = "state"

[device.gw]
driver = "modbus"
host = "10.20.30.40"
timeout_s = 0.3
backoff_initial_s = 0.1
backoff_max_s = 0.5

[device.gw.tag.a]
address = "hr:0"
type = "uint16"

[device.gw.tag.b]
address = "hr:1"
type = "uint16"
unit_id = 9

[device.gw.tag.sp]
address = "hr:2"
type = "uint16"
access = "write"

[simulate.gw.tag.a]
generator = "constant"
value = 11
"""


def test_faults_through_the_control_api_and_the_command_line(tmp_path: Path) -> None:
    cell = tmp_path / "gw.toml"
    cell.write_text(GATEWAY)
    p, client, sim = start_sim(tmp_path, cell, "--fault", "gw=latency:10ms")
    try:
        assert set(client.devices()["gw"]) >= {"stop", "start", "latency", "silence-unit", "exception", "clear"}
        assert client.value("gw.a") == 11
        client.set_value("gw.b", 5)

        def read() -> dict[str, dict]:
            res = edged("read", "-c", str(sim), "--json", cwd=tmp_path)
            return {r["tag"]: r for r in json.loads(res.stdout)}

        rows = read()
        assert rows["gw.a"]["value"] == 11 and rows["gw.b"]["value"] == 5
        client.fault("gw=silence-unit:9")
        rows = read()
        assert rows["gw.a"]["quality"] == "good" and rows["gw.b"]["quality"] == "bad"
        client.fault("gw=clear")
        client.fault("gw=stop")
        assert all(r["quality"] == "bad" for r in read().values())
        client.fault("gw=start")
        assert all(r["quality"] == "good" for r in read().values())
        assert client.writes()["gw"] == 0
        assert edged("write", "-c", str(sim), "gw.sp", "7", cwd=tmp_path).returncode == 0
        assert client.writes()["gw"] == 1 and client.value("gw.sp") == 7
        with pytest.raises(SimulatorError, match="cannot play 'plc-stop'"):
            client.fault("gw=plc-stop")
        with pytest.raises(SimulatorError, match="not emulated"):
            client.fault("nope=stop")
    finally:
        p.stop()


def test_simulate_tables_are_checked_with_dotted_paths(tmp_path: Path) -> None:
    text = GATEWAY + """
[simulate.gw.tag.missing]
generator = "sine"

[simulate.gw.tag.b]
generator = "wobble"

[simulate.gw.tag.sp]
generator = "lag"
follow = "gw.nothing"
"""
    with pytest.raises(ConfigError) as ei:
        parse_cell(tomllib.loads(text), "c.toml")
    msg = str(ei.value)
    assert "simulate.gw.tag.missing: expected a tag of the cell" in msg
    assert "simulate.gw.tag.b.generator: expected one of" in msg
    assert "simulate.gw.tag.sp.follow: expected a tag of the cell as DEVICE.TAG, found 'gw.nothing'" in msg


def test_generators_replay_a_csv_and_lag_converges(tmp_path: Path) -> None:
    (tmp_path / "trace.csv").write_text("time,tag,value\n0,gw.a,1\n1.5,gw.a,2\n3,gw.a,3\n")
    text = GATEWAY.replace('generator = "constant"\nvalue = 11', 'generator = "replay"\nfile = "trace.csv"') + """
[simulate.gw.tag.b]
generator = "lag"
follow = "gw.sp"
time_constant_s = 1.0
"""
    cell = parse_cell(tomllib.loads(text), "c.toml", base_dir=tmp_path)
    replay, lag = cell.simulate["gw.a"], cell.simulate["gw.b"]
    assert [replay.value(t, 0.1, lambda k: None) for t in (0.0, 1.0, 1.6, 2.9)] == [1, 1, 2, 2]
    v = 0
    for _ in range(100):
        v = lag.value(0.0, 0.1, lambda k: 100)
    assert 99 <= v <= 100  # 10 time constants


def test_rewrite_is_generic_over_endpoints(tmp_path: Path) -> None:
    data = {"device": {"a": {"driver": "x", "host": "192.0.2.5", "port": 102},
                       "b": {"driver": "y", "endpoint": "opc.tcp://robot.plant:4840/UA/Server"},
                       "c": {"driver": "z", "port": "/dev/ttyUSB7"},
                       "d": {"driver": "z", "port": "tcp://10.0.0.9:5051"}}}
    out = rewrite_cell(data, tmp_path)
    assert out["device"]["a"]["host"] == "127.0.0.1" and out["device"]["a"]["port"] != 102
    assert out["device"]["b"]["endpoint"].startswith("opc.tcp://127.0.0.1:")
    assert out["device"]["b"]["endpoint"].endswith("/UA/Server")
    assert out["device"]["c"]["port"] == str(tmp_path / "c.pty")
    assert out["device"]["d"]["port"].startswith("tcp://127.0.0.1:")
    assert not foreign_endpoints({"device": {k: v for k, v in out["device"].items() if k != "c"}})
    assert is_loopback_host("127.0.0.5") and is_loopback_host("::1") and not is_loopback_host("10.1.1.1")
