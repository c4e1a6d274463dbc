"""A short deterministic slice of every fuzz target (fuzz/fuzz_*.py), and the harness itself.

`make fuzz` runs each target for FUZZ_RUNS inputs (1,000,000 by default); here each runs
FUZZ_TEST_RUNS seeded inputs (2,000 by default) so that `make test` stays fast and repeatable.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

FUZZ = Path(__file__).resolve().parent.parent / "fuzz"
sys.path.insert(0, str(FUZZ))
import harness  # noqa: E402

RUNS = int(os.environ.get("FUZZ_TEST_RUNS", "2000"))
TARGETS = harness.discover()


def test_the_fuzz_folder_has_the_targets_of_the_command_parsers_and_the_cell_loader() -> None:
    """The targets this suite promises exist (others add theirs next to them)."""
    names = {p.stem for p in TARGETS}
    assert {"fuzz_cell", "fuzz_mqtt_command", "fuzz_sparkplug_command"} <= names, names


@pytest.mark.parametrize("path", TARGETS, ids=lambda p: p.stem.removeprefix("fuzz_"))
def test_fuzz_target_slice(path: Path, tmp_path: Path) -> None:
    """The seeds and RUNS seeded mutants raise nothing but the target's EXPECTED exceptions."""
    report = harness.run_random(path, RUNS, seed=0, crash_dir=tmp_path)
    assert report.runs == RUNS
    assert not report.crashes, "\n" + report.line() + "\n" + "\n".join(
        p.with_suffix(".txt").read_text()[-3000:] for p in report.crashes.values())


def test_the_harness_saves_an_unexpected_exception_and_ignores_an_expected_one(tmp_path: Path) -> None:
    """A target that raises KeyError on some input is reported once per signature, input and traceback saved."""
    target = tmp_path / "fuzz_toy.py"
    target.write_text(
        "EXPECTED = (ValueError,)\n"
        "SEEDS = [b'ok', b'bad', b'value']\n"
        "def TARGET(data: bytes) -> None:\n"
        "    if data == b'value':\n"
        "        raise ValueError('expected')\n"
        "    if data.startswith(b'bad'):\n"
        "        raise KeyError(data)\n")
    report = harness.run_random(target, 50, seed=1, crash_dir=tmp_path / "crashes")
    assert report.runs == 50
    assert list(report.crashes) == ["KeyError at fuzz_toy.py:7"]
    saved = report.crashes["KeyError at fuzz_toy.py:7"]
    assert saved.read_bytes().startswith(b"bad") and "KeyError" in saved.with_suffix(".txt").read_text()


def test_the_random_engine_is_deterministic() -> None:
    """The same seed gives the same inputs (a failure here can be replayed)."""
    seeds = [b'{"value": 1}', b"[cell]"]
    assert list(harness.inputs(seeds, 300, 5)) == list(harness.inputs(seeds, 300, 5))
    assert list(harness.inputs(seeds, 300, 5)) != list(harness.inputs(seeds, 300, 6))


def test_a_target_without_the_convention_is_rejected(tmp_path: Path) -> None:
    """EXPECTED must be a tuple of exception classes and TARGET a function."""
    bad = tmp_path / "fuzz_bad.py"
    bad.write_text("EXPECTED = ValueError\ndef TARGET(data):\n    pass\n")
    with pytest.raises(TypeError, match="EXPECTED"):
        harness.load(bad)
