"""Hardware-in-the-loop fixtures: the same tests run against a real cell or one emulated by `edged simulate`."""
from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from edged.cell import Cell, load_cell


def pytest_addoption(parser: pytest.Parser) -> None:
    """Command-line options of the HIL suite."""
    g = parser.getgroup("edged-hil")
    g.addoption("--cell", default=os.environ.get("EDGED_HIL_CELL"), help="cell file (or $EDGED_HIL_CELL)")
    g.addoption("--real", action="store_true", help="talk to the real devices of the cell (default: emulate them)")
    g.addoption("--allow-writes", action="store_true",
                help="write to writable tags (always on when emulated; think twice on a real cell)")
    g.addoption("--report", default="commissioning-report.md", help="where the commissioning report goes")
    g.addoption("--soak-seconds", type=float, default=5.0, help="how long the daemon runs in the run test")


class Hil:
    """What a HIL test needs: the cell, how to run edged, and the report it adds findings to."""

    def __init__(self, config: pytest.Config, cell_path: Path, cell: Cell, workdir: Path) -> None:
        self.config = config
        self.cell_path = cell_path
        self.cell = cell
        self.workdir = workdir
        self.real = bool(config.getoption("--real"))
        self.allow_writes = bool(config.getoption("--allow-writes")) or not self.real
        self.soak_seconds = float(config.getoption("--soak-seconds"))
        self.findings: list[tuple[str, str]] = []

    def edged(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        """Run an edged command to completion."""
        return subprocess.run([sys.executable, "-m", "edged", *args], cwd=self.workdir, capture_output=True,
                              text=True, timeout=timeout)

    def read(self, *tags: str) -> tuple[int, list[dict[str, Any]], str]:
        """`edged read --json`: exit code, rows, stderr."""
        res = self.edged("read", "-c", str(self.cell_path), "--json", *tags)
        rows = json.loads(res.stdout) if res.stdout.strip() else []
        return res.returncode, rows, res.stderr

    def note(self, section: str, text: str) -> None:
        """Add a line to the commissioning report."""
        self.findings.append((section, text))


@pytest.fixture(scope="session")
def hil(pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hil]:
    """The cell under test, emulated by `edged simulate` unless --real."""
    path = pytestconfig.getoption("--cell")
    if not path:
        pytest.exit("give the cell: --cell CELL.toml (or EDGED_HIL_CELL)", returncode=2)
    cell_path = Path(path).resolve()
    cell = load_cell(cell_path)
    h = Hil(pytestconfig, cell_path, cell, tmp_path_factory.mktemp("hil"))
    sim = None
    if not h.real:
        sim = subprocess.Popen([sys.executable, "-m", "edged", "simulate", "-c", str(cell_path), "--animate"],
                               cwd=h.workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = sim.stdout.readline() if sim.stdout else ""
        if "serving" not in line:
            sim.kill()
            pytest.exit(f"edged simulate did not start: {line}{sim.stderr.read() if sim.stderr else ''}", returncode=1)
        time.sleep(0.5)
    pytestconfig._edged_hil = h  # type: ignore[attr-defined]
    try:
        yield h
    finally:
        if sim is not None:
            sim.send_signal(signal.SIGTERM)
            try:
                sim.wait(20)
            except subprocess.TimeoutExpired:
                sim.kill()


_results: list[tuple[str, str, str]] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Collect each test's outcome for the report."""
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        doc = report.nodeid.split("::")[-1]
        msg = ""
        if report.outcome == "failed":
            msg = str(report.longrepr).strip().splitlines()[-1][:300]
        elif report.outcome == "skipped" and isinstance(report.longrepr, tuple):
            msg = str(report.longrepr[2])
        _results.append((doc, report.outcome, msg))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Write the commissioning report (markdown)."""
    h: Hil | None = getattr(session.config, "_edged_hil", None)
    if h is None:
        return
    out = Path(session.config.getoption("--report"))
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"# Commissioning report: cell `{h.cell.name}`", "",
             f"- cell file: `{h.cell_path}`", f"- devices: {'real' if h.real else 'emulated by edged simulate'}",
             f"- date: {now}", f"- result: **{'PASSED' if exitstatus == 0 else 'FAILED'}**", "",
             "## Checks", "", "| check | result | detail |", "|---|---|---|"]
    lines += [f"| {name} | {outcome} | {msg.replace('|', '/')} |" for name, outcome, msg in _results]
    sections: dict[str, list[str]] = {}
    for section, text in h.findings:
        sections.setdefault(section, []).append(text)
    for section, texts in sections.items():
        lines += ["", f"## {section}", "", *texts]
    out.write_text("\n".join(lines) + "\n")
