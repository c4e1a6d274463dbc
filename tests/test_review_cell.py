"""Review regressions of the cell loader: state_dir resolution and paths the OS cannot use."""
from __future__ import annotations

from pathlib import Path

import pytest

from edged.cell import load_cell
from edged.errors import ConfigError

CELL = """
[cell]
name = "c"
{state}
[device.s]
driver = "sim"
[device.s.tag.n]
address = "counter"
type = "uint32"
"""


def write(tmp_path: Path, state: str) -> Path:
    folder = tmp_path / "etc"
    folder.mkdir(exist_ok=True)
    f = folder / "cell.toml"
    f.write_text(CELL.format(state=state))
    return f


@pytest.mark.parametrize("systemd", [False, True])
def test_relative_state_dir_is_relative_to_the_file_also_under_systemd(tmp_path: Path, monkeypatch,
                                                                       systemd: bool) -> None:
    monkeypatch.chdir(tmp_path)
    if systemd:
        monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "lib" / "edged"))
    else:
        monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    cell = load_cell(write(tmp_path, 'state_dir = "data"'))
    assert cell.state_dir == tmp_path / "etc" / "data"


def test_state_directory_is_the_default_under_systemd(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", f"{tmp_path}/a:{tmp_path}/b")
    assert load_cell(write(tmp_path, "")).state_dir == tmp_path / "a"
    monkeypatch.delenv("STATE_DIRECTORY")
    monkeypatch.chdir(tmp_path)
    assert load_cell(write(tmp_path, "")).state_dir == tmp_path / "var"


def test_state_dir_with_a_nul_character_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_cell(write(tmp_path, 'state_dir = "a\\u0000b"'))
    assert [i.path for i in info.value.issues] == ["cell.state_dir"]
    assert "NUL" in info.value.issues[0].message


def test_scan_ms_never_silently_joins_a_scan_group_of_another_interval(tmp_path: Path) -> None:
    """scan_ms = 100 makes a group "100ms"; a [scan.100ms] of 500 ms must not slow the tag down unnoticed."""
    f = write(tmp_path, "[scan.100ms]\ninterval_ms = 500\n[scan.fast]\ninterval_ms = 100\n")
    f.write_text(f.read_text() + "scan_ms = 100\n")
    with pytest.raises(ConfigError) as info:
        load_cell(f)
    assert [i.path for i in info.value.issues] == ["device.s.tag.n.scan_ms"]
    assert "interval_ms = 500" in info.value.issues[0].message
    f.write_text(f.read_text().replace("interval_ms = 500", "interval_ms = 100"))
    cell = load_cell(f)  # the same interval: the tag shares the group
    assert cell.tags["s.n"].scan == "100ms" and cell.scans["100ms"].interval_s == 0.1


@pytest.mark.parametrize("key, value", [("heartbeat_s", "1" + "0" * 400), ("heartbeat_s", "-" + "9" * 400),
                                        ("default_scan_ms", "1" + "0" * 400), ("heartbeat_s", "1" * 5000)])
def test_huge_integers_are_config_errors_not_tracebacks(tmp_path: Path, key: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_cell(write(tmp_path, f"{key} = {value}"))
    text = "\n".join(str(i) for i in info.value.issues)
    assert len(text) < 400  # the number is described, not printed in full
    assert f"cell.{key}" in text or "(syntax)" in text


def test_huge_integer_in_a_tag_float_key(tmp_path: Path) -> None:
    f = write(tmp_path, "")
    f.write_text(f.read_text() + "scale = 1" + "0" * 400 + "\n")
    with pytest.raises(ConfigError) as info:
        load_cell(f)
    assert [i.path for i in info.value.issues] == ["device.s.tag.n.scale"]
    assert "expected a finite number" in info.value.issues[0].message
