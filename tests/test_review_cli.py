"""Review regressions of the CLI: `edged demo` failures are clear messages with the right exit code."""
from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

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
