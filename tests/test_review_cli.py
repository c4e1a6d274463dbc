"""Review regressions of the CLI: `edged demo` failures are clear messages with the right exit code."""
from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from edged.driver import emulator_for
from edged.commands.demo import demo_toml


def edged(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edged", *args], capture_output=True, text=True, timeout=120,
                          cwd=cwd)


@pytest.mark.parametrize("broker", ["bad:x", "host:0", "a\"b:1883", "a b", ":1883"])
def test_demo_bad_mqtt_broker_is_a_usage_error(tmp_path: Path, broker: str) -> None:
    r = edged("demo", "--mqtt", broker, "--seconds", "1", "--state-dir", str(tmp_path / "d"), cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert "expected HOST:PORT" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "d").exists()


def test_demo_unusable_state_dir_exits_1_without_traceback(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    r = edged("demo", "--state-dir", str(blocker / "sub"), "--seconds", "1", cwd=tmp_path)
    assert r.returncode == 1, r.stderr
    assert "edged demo:" in r.stderr and "Not a directory" in r.stderr
    assert "Traceback" not in r.stderr


def test_demo_cell_takes_any_state_dir_path(tmp_path: Path) -> None:
    odd = tmp_path / 'we"ird\\dir'
    doc = tomllib.loads(demo_toml(odd, 9108, 1502, "localhost"))
    assert doc["cell"]["state_dir"] == str(odd)
    assert (doc["sink"]["upstream"]["host"], doc["sink"]["upstream"]["port"]) == ("localhost", 1883)


async def test_read_json_is_strict_json_for_nan_and_infinity(tmp_path: Path) -> None:
    """A float register holding NaN (a common sensor-fault value) must not make `edged read --json` print
    the non-JSON literal NaN."""
    import asyncio
    import json

    from daemon_support import free_port
    from edged.cell import load_cell

    cell_file = tmp_path / "cell.toml"
    cell_file.write_text(f"""
[cell]
name = "n"
[device.p]
driver = "modbus"
host = "127.0.0.1"
port = {free_port()}
[device.p.tag.temp]
address = "hr:0"
type = "float32"
[device.p.tag.flow]
address = "hr:2"
type = "float32"
""")
    cell = load_cell(cell_file)
    drv = cell.devices["p"].driver
    emu = emulator_for([drv])
    await emu.start()
    try:
        emu.set_value(cell.tags["p.temp"], float("nan"))
        emu.set_value(cell.tags["p.flow"], float("-inf"))
        proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "edged", "read", "--json", "-c",
                                                    str(cell_file), stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.PIPE, cwd=tmp_path)
        out, err = await asyncio.wait_for(proc.communicate(), 120)
    finally:
        await emu.stop()
    assert proc.returncode == 0, err.decode()

    def reject(literal: str) -> None:
        raise AssertionError(f"non-JSON literal {literal} in the output")

    rows = json.loads(out, parse_constant=reject)
    assert {r["tag"]: r["value"] for r in rows} == {"p.temp": "nan", "p.flow": "-inf"}
