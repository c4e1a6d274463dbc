"""Broken cell files, one per file in config_errors/: `edged check` names every mistake, exit 2, no traceback.

Each case file starts with comment lines that say what `edged check -c cell.toml` must print:

    # expect: dotted.path: message prefix      (the stderr line "cell.toml: dotted.path: message prefix...")
    # expect: dotted.path: prefix...fragment   ("..." stands for any text: the parts appear in order)
    # xfail: waits for <module>                (the case documents intent; the module has not landed)

The number of `expect` lines is the exact number of errors: one mistake gives one error, and a
file with several mistakes reports all of them at once.
"""
from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

CASES = Path(__file__).resolve().parent / "config_errors"
FILE = "cell.toml"
_TOTAL = re.compile(r"^edged: (\d+) config error\(s\)$")


@dataclass(frozen=True)
class Expected:
    """One expected error line: dotted path and message, where "..." stands for any text."""

    path: str
    message: str

    def matches(self, line: str) -> bool:
        """True when a stderr line is this error."""
        head = f"{FILE}: {self.path}: "
        if not line.startswith(head):
            return False
        rest = line[len(head):]
        first, *others = self.message.split("...")
        if not rest.startswith(first):
            return False
        pos = len(first)
        for part in others:
            pos = rest.find(part, pos)
            if pos < 0:
                return False
            pos += len(part)
        return True


def parse_case(text: str) -> tuple[list[Expected], str | None]:
    """The expected errors and the xfail reason (if any) from a case's header comments."""
    expected: list[Expected] = []
    xfail = None
    for line in text.splitlines():
        if line.startswith("# expect: "):
            path, sep, message = line[len("# expect: "):].partition(": ")
            assert sep, f"malformed expect line: {line!r}"
            expected.append(Expected(path, message.rstrip()))
        elif line.startswith("# xfail: "):
            xfail = line[len("# xfail: "):].strip()
    return expected, xfail


def _params() -> list:
    params = []
    for case in sorted(CASES.glob("*.toml")):
        _, xfail = parse_case(case.read_text())
        marks = [pytest.mark.xfail(strict=False, reason=xfail)] if xfail else []
        params.append(pytest.param(case, id=case.stem, marks=marks))
    return params


def run_check(tmp_path: Path, text: str) -> subprocess.CompletedProcess[str]:
    """Run `edged check -c cell.toml` on a text in a fresh folder."""
    (tmp_path / FILE).write_text(text)
    return subprocess.run([sys.executable, "-m", "edged", "check", "-c", FILE], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)


def test_there_are_enough_cases() -> None:
    """The table covers at least 30 broken configs, each with at least one expected error."""
    cases = sorted(CASES.glob("*.toml"))
    assert len(cases) >= 30
    for case in cases:
        expected, _ = parse_case(case.read_text())
        assert expected, f"{case.name} has no '# expect:' line"


@pytest.mark.parametrize("case", _params())
def test_broken_config_is_reported(case: Path, tmp_path: Path) -> None:
    """Exit 2, every expected error line on stderr, exactly that many errors, no traceback."""
    text = case.read_text()
    expected, _ = parse_case(text)
    proc = run_check(tmp_path, text)
    err = proc.stderr
    assert "Traceback" not in err, err
    assert proc.returncode == 2, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{err}"
    assert proc.stdout == ""
    lines = err.splitlines()
    missing = [e for e in expected if not any(e.matches(line) for line in lines)]
    assert not missing, "not reported: " + ", ".join(f"{e.path}: {e.message}" for e in missing) + "\nstderr:\n" + err
    totals = [int(m[1]) for m in map(_TOTAL.match, lines) if m]
    assert totals == [len(expected)], f"expected exactly {len(expected)} error(s)\nstderr:\n{err}"
    issue_lines = [line for line in lines if line.startswith(f"{FILE}: ")]
    assert len(issue_lines) == len(expected), err


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    """A config path that does not exist is reported like any config error (exit 2)."""
    proc = subprocess.run([sys.executable, "-m", "edged", "check", "-c", "nowhere.toml"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "nowhere.toml: (file): cannot read the file: No such file or directory" in proc.stderr.splitlines()
    assert "Traceback" not in proc.stderr


def test_non_utf8_file_is_a_config_error(tmp_path: Path) -> None:
    """A file saved in a legacy encoding is refused with a clear message."""
    (tmp_path / FILE).write_bytes(b'[cell]\nname = "Pr\xfcfstand"\n')
    proc = subprocess.run([sys.executable, "-m", "edged", "check", "-c", FILE], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert any(line.startswith(f"{FILE}: (file): expected UTF-8 text") for line in proc.stderr.splitlines())
    assert "Traceback" not in proc.stderr


def test_parse_case_reads_header() -> None:
    """The header format is read as documented, and matching is by path and message prefix."""
    expected, xfail = parse_case("# Why.\n# expect: a.b: expected x, found y\n# xfail: waits for z\n[cell]\n")
    assert expected == [Expected("a.b", "expected x, found y")] and xfail == "waits for z"
    assert expected[0].matches(f"{FILE}: a.b: expected x, found y (more)")
    assert not expected[0].matches(f"{FILE}: a.bc: expected x, found y")
    assert Expected("a", "...found y").matches(f"{FILE}: a: expected x, found y")
    assert Expected("a", "expected (...), found 'y'").matches(f"{FILE}: a: expected (p, q), found 'y'")
    assert not Expected("a", "expected (...), found 'y'").matches(f"{FILE}: a: found 'y' expected (p, q)")
