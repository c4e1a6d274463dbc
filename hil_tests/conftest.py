"""Hardware-in-the-loop fixtures: one suite for an emulated cell (CI, the bench) and the real cell, safe by default.

The suite runs the real daemon (`edged run` as a subprocess) against ``--cell``; without ``--cell``
it takes the demo cell. Emulated (the default), `edged simulate --rewrite` serves every device on
loopback and the fault scenarios run. ``--real`` talks to the plant: read-only (`edged run
--read-only`: no write, no control task) unless ``--allow-writes``, and local sinks only unless
``--upstream``. A wrong flag can never write to a plant: ``--real`` refuses a cell whose endpoints are
all loopback (it would not be the plant), and emulation always serves a loopback copy of the cell.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pytest

import edged
from edged.cell import Cell, load_cell, parse_cell
from edged.simulation.rewrite import dump_cell, foreign_endpoints

from support import Broker, Process, Prometheus, edged_args, free_port, scrape, wait_port

# Test-only escape hatch: lets the suite's own safety test run --real against a recording emulator on
# loopback. Never set it against a plant.
ALLOW_LOOPBACK_REAL = "EDGED_HIL_ALLOW_LOOPBACK_REAL"


def pytest_addoption(parser: pytest.Parser) -> None:
    """Command-line options of the HIL suite."""
    g = parser.getgroup("edged-hil")
    g.addoption("--cell", default=os.environ.get("EDGED_HIL_CELL"),
                help="cell file (or $EDGED_HIL_CELL; default: the demo cell)")
    g.addoption("--real", action="store_true", help="talk to the real devices of the cell (default: emulate them)")
    g.addoption("--allow-writes", action="store_true",
                help="real cell: write to writable tags and run control tasks (emulated: always)")
    g.addoption("--upstream", action="store_true", help="real cell: keep the cell's own sinks (default: local only)")
    g.addoption("--report", default="commissioning-report.md", help="Markdown commissioning report")
    g.addoption("--junit-report", default=None, help="JUnit XML report (default: the Markdown report's name .xml)")
    g.addoption("--soak-seconds", type=float, default=5.0, help="how long the daemon runs before the run checks")


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """Write JUnit XML next to the Markdown report (pytest's own junitxml plugin)."""
    if not getattr(config.option, "xmlpath", None):
        junit = config.getoption("--junit-report") or str(Path(config.getoption("--report")).with_suffix(".xml"))
        config.option.xmlpath = junit


@dataclass
class TagResult:
    """What the suite found for one tag."""

    read_ok: bool = False
    value: Any = None
    quality: str = "-"
    latency_ms: float | None = None
    type_ok: bool | None = None
    write: str = "-"


@dataclass
class FaultResult:
    """One fault scenario."""

    device: str
    fault: str
    outcome: str
    recovery_s: float | None = None
    detail: str = ""


@dataclass
class Hil:
    """The cell under test, the daemon running it, and what goes into the report."""

    config: pytest.Config
    cell_path: Path
    cell: Cell  # the cell as given
    target_path: Path  # the cell edged talks to (the rewritten copy when emulated)
    target: Cell
    workdir: Path
    real: bool
    allow_writes: bool
    upstream: bool
    soak_seconds: float
    run_path: Path | None = None  # the daemon's cell: target with a local state dir, metrics and sinks
    metrics_url: str = ""
    daemon: Process | None = None
    sim: Process | None = None
    client: Any = None  # SimulatorClient when emulated
    broker: Broker | None = None
    prometheus: Prometheus | None = None
    jsonl: Path | None = None
    tags: dict[str, TagResult] = field(default_factory=dict)
    faults: list[FaultResult] = field(default_factory=list)
    findings: list[tuple[str, str]] = field(default_factory=list)

    @property
    def emulated(self) -> bool:
        """True when edged simulate serves the cell."""
        return not self.real

    def edged(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        """Run an edged command to completion."""
        return subprocess.run(edged_args(*args), cwd=self.workdir, capture_output=True, text=True, timeout=timeout)

    def read(self, *tags: str) -> tuple[int, list[dict[str, Any]], str]:
        """`edged read --json` on the target cell: exit code, rows, stderr."""
        res = self.edged("read", "-c", str(self.target_path), "--json", *tags)
        rows = json.loads(res.stdout) if res.stdout.strip() else []
        return res.returncode, rows, res.stderr

    def metrics(self) -> dict:
        """The daemon's metrics now."""
        return scrape(self.metrics_url)

    def note(self, section: str, text: str) -> None:
        """Add a section text to the commissioning report."""
        self.findings.append((section, text))


def _demo_cell(workdir: Path) -> Path:
    text = subprocess.run(edged_args("demo", "--print-config", "--state-dir", str(workdir / "demo-state")),
                          capture_output=True, text=True, check=True, cwd=workdir).stdout
    path = workdir / "demo-cell.toml"
    path.write_text(text)
    return path


def _run_cell(h: Hil) -> Path:
    """The daemon's copy of the target cell: local state dir and metrics; sinks local (plus the suite's broker when
    emulated, or the cell's own with --upstream); no control task on a real cell without --allow-writes."""
    data = tomllib.loads(h.target_path.read_text())
    data.setdefault("cell", {})["state_dir"] = str(h.workdir / "state")
    port = free_port()
    data["metrics"] = {"listen": f"127.0.0.1:{port}"}
    h.metrics_url = f"http://127.0.0.1:{port}/metrics"
    h.jsonl = h.workdir / "samples.jsonl"
    sinks: dict[str, Any] = dict(data.get("sink") or {}) if (h.real and h.upstream) else {}
    sinks["hil_local"] = {"type": "jsonl", "path": str(h.jsonl)}
    if h.broker is not None:
        sinks["hil_upstream"] = {"type": "mqtt", "host": "127.0.0.1", "port": h.broker.port,
                                 "client_id": "edged-hil"}
    data["sink"] = sinks
    if h.real and not h.allow_writes:
        data.pop("task", None)
    path = h.workdir / "run-cell.toml"
    path.write_text(dump_cell(data))
    return path


@pytest.fixture(scope="session")
def hil(pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hil]:
    """The cell under test, emulated by `edged simulate` unless --real, with the daemon running it."""
    workdir = tmp_path_factory.mktemp("hil")
    given = pytestconfig.getoption("--cell")
    cell_path = Path(given).resolve() if given else _demo_cell(workdir)
    cell = load_cell(cell_path)
    real = bool(pytestconfig.getoption("--real"))
    data = tomllib.loads(cell_path.read_text())
    if real and not foreign_endpoints(data) and os.environ.get(ALLOW_LOOPBACK_REAL) != "1":
        pytest.exit(f"--real: {cell_path} names only loopback endpoints, so it is not a plant; run it emulated "
                    "(without --real)", returncode=2)
    h = Hil(pytestconfig, cell_path, cell, cell_path, cell, workdir, real,
            allow_writes=bool(pytestconfig.getoption("--allow-writes")) or not real,
            upstream=bool(pytestconfig.getoption("--upstream")),
            soak_seconds=float(pytestconfig.getoption("--soak-seconds")))
    pytestconfig._edged_hil = h  # type: ignore[attr-defined]
    try:
        if not real:
            from edged.simulation.control import SimulatorClient

            sim_path = workdir / "sim-cell.toml"
            h.sim = Process(edged_args("simulate", "-c", str(cell_path), "--rewrite", str(sim_path),
                                       "--control-port", "0"), cwd=workdir)
            line = h.sim.wait_for("control API", timeout=120)
            if line is None or h.sim.wait_for("serving", timeout=60) is None:
                pytest.exit(f"edged simulate did not start:\n{h.sim.output}", returncode=1)
            h.client = SimulatorClient(line.split()[-1])
            h.target_path = sim_path
            h.target = parse_cell(tomllib.loads(sim_path.read_text()), str(sim_path), base_dir=workdir)
            if Broker.available():
                h.broker = Broker(workdir)
                h.broker.subscribe(h.target.name)
        h.run_path = _run_cell(h)
        args = ["run", "-c", str(h.run_path)] + ([] if h.allow_writes else ["--read-only"])
        h.daemon = Process(edged_args(*args), cwd=workdir)
        port = int(h.metrics_url.rsplit(":", 1)[1].split("/")[0])
        if not wait_port(port, 60):
            pytest.exit(f"edged run did not start:\n{h.daemon.output}", returncode=1)
        if Prometheus.available():
            h.prometheus = Prometheus(workdir, f"127.0.0.1:{port}")
        yield h
    finally:
        for proc in (h.daemon, h.sim):
            if proc is not None:
                proc.stop()
        if h.prometheus is not None:
            h.prometheus.stop()
        if h.broker is not None:
            h.broker.stop()


# -- the report -------------------------------------------------------------------------------------
_results: list[tuple[str, str, str]] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Collect each test's outcome for the report."""
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        name = report.nodeid.split("::")[-1]
        msg = ""
        if report.outcome == "failed":
            msg = str(report.longrepr).strip().splitlines()[-1][:300]
        elif report.outcome == "skipped" and isinstance(report.longrepr, tuple):
            msg = str(report.longrepr[2]).removeprefix("Skipped: ")
        _results.append((name, report.outcome, msg))


def _cell(v: Any, width: int = 80) -> str:
    return str(v).replace("|", "/").replace("\n", " ")[:width]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Write the Markdown commissioning report."""
    h: Hil | None = getattr(session.config, "_edged_hil", None)
    if h is None:
        return
    out = Path(session.config.getoption("--report"))
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    digest = hashlib.sha256(h.cell_path.read_bytes()).hexdigest()
    mode = ("real devices, " + ("writes allowed" if h.allow_writes else "read-only (no write, no control task)")
            + (", upstream sinks" if h.upstream else ", local sinks only")) if h.real else \
        "emulated by edged simulate (loopback copy of the cell)"
    lines = [f"# Commissioning report: cell `{h.cell.name}`", "",
             f"- cell file: `{h.cell_path}` (sha256 `{digest}`)", f"- edged version: {edged.__version__}",
             f"- devices: {mode}", f"- date: {now}", f"- result: **{'PASSED' if exitstatus == 0 else 'FAILED'}**",
             "", "## Checks", "", "| check | result | detail |", "|---|---|---|"]
    lines += [f"| {name} | {outcome} | {_cell(msg, 300)} |" for name, outcome, msg in _results]
    if h.tags:
        lines += ["", "## Devices and tags", "", "| device | tag | read ok | value | quality | latency ms | type ok | "
                  "write |", "|---|---|---|---|---|---|---|---|"]
        for key in sorted(h.tags):
            r = h.tags[key]
            dev, _, tag = key.partition(".")
            lat = "-" if r.latency_ms is None else f"{r.latency_ms:.0f}"
            lines.append(f"| {dev} | {tag} | {'yes' if r.read_ok else 'NO'} | {_cell(r.value)} | {r.quality} | {lat} | "
                         f"{'-' if r.type_ok is None else ('yes' if r.type_ok else 'NO')} | {_cell(r.write)} |")
    if h.faults:
        lines += ["", "## Fault scenarios", "", "| device | fault | outcome | recovery s | detail |",
                  "|---|---|---|---|---|"]
        for f in h.faults:
            rec = "-" if f.recovery_s is None else f"{f.recovery_s:.2f}"
            lines.append(f"| {f.device} | {f.fault} | {f.outcome} | {rec} | {_cell(f.detail)} |")
    sections: dict[str, list[str]] = {}
    for section, text in h.findings:
        sections.setdefault(section, []).append(text)
    for section, texts in sections.items():
        lines += ["", f"## {section}", "", *texts]
    out.write_text("\n".join(lines) + "\n")


def wait_until(pred: Any, timeout: float, step: float = 0.1) -> float | None:
    """Seconds until pred() was true, or None after the timeout."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            if pred():
                return time.monotonic() - t0
        except Exception:  # a scrape that failed mid-restart: try again
            pass
        time.sleep(step)
    return None
