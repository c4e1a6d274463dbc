"""The fuzz harness: runs every fuzz/fuzz_<name>.py target for a set number of inputs and reports crashes.

A target module exposes ``TARGET(data: bytes) -> None``, ``EXPECTED = (SomeError, ...)`` (the only
exceptions it may raise) and optionally ``SEEDS = [bytes, ...]``. Anything else it raises is a crash:
the input is saved under fuzz/crashes/ (one file per distinct crash: exception type and place) with
its traceback beside it, and counted.

Engines: ``atheris`` (coverage-guided, libFuzzer; each target in its own process) when it is installed,
else ``random`` (seeded mutations of the seeds, in-process; what the test suite uses for its short
deterministic slice). Usage::

    python fuzz/harness.py [--runs N] [--engine atheris|random] [--seed S] [name ...]
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Callable, Iterator

FUZZ_DIR = Path(__file__).resolve().parent
CRASH_DIR = FUZZ_DIR / "crashes"
DEFAULT_RUNS = 1_000_000
MAX_INPUT = 64 * 1024  # libFuzzer -max_len, and the largest input the random engine makes

# Bytes that make parsers of text formats take their rarer branches (nesting, quoting, escapes, numbers).
TOKENS = [b"[", b"]", b"{", b"}", b'"', b"'", b"\\", b"\n", b"=", b",", b".", b":", b"#", b"-", b"+", b"e",
          b"0", b"1", b"9" * 40, b"nan", b"inf", b"true", b"null", b"\x00", b"\xff", b"\xc3\xa9", b"\xe2\x80\xa8",
          b"[" * 200, b"{a=" * 50, b'{"value":', b'"id":', b"[[", b"]]"]


@dataclass
class Report:
    """What one target did: inputs run and distinct crashes (signature -> saved input)."""

    name: str
    runs: int = 0
    crashes: dict[str, Path] = field(default_factory=dict)
    seconds: float = 0.0
    engine: str = "random"
    error: str = ""

    def line(self) -> str:
        """One summary line for people."""
        rate = f", {self.runs / self.seconds:,.0f}/s" if self.seconds > 0 else ""
        text = f"{self.name}: {self.runs:,} inputs ({self.engine}{rate}), {len(self.crashes)} crash(es)"
        for sig, path in self.crashes.items():
            text += f"\n    {sig}\n      input: {path}"
        if self.error:
            text += f"\n    harness error: {self.error}"
        return text


def discover(names: list[str] | None = None) -> list[Path]:
    """The target files fuzz/fuzz_*.py, optionally only those named (``cell`` or ``fuzz_cell``)."""
    files = sorted(FUZZ_DIR.glob("fuzz_*.py"))
    if names:
        wanted = {n.removeprefix("fuzz_").removesuffix(".py") for n in names}
        files = [f for f in files if f.stem.removeprefix("fuzz_") in wanted]
        missing = wanted - {f.stem.removeprefix("fuzz_") for f in files}
        if missing:
            raise SystemExit(f"no fuzz target(s) {', '.join(sorted(missing))} in {FUZZ_DIR}")
    return files


def load(path: Path) -> ModuleType:
    """Import a target file as a module and check it follows the convention."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses and pickling look the module up by name
    spec.loader.exec_module(module)
    if not callable(getattr(module, "TARGET", None)):
        raise TypeError(f"{path.name}: expected a function TARGET(data: bytes) -> None")
    expected = getattr(module, "EXPECTED", ())
    if not isinstance(expected, tuple) or not all(isinstance(e, type) and issubclass(e, BaseException)
                                                  for e in expected):
        raise TypeError(f"{path.name}: expected EXPECTED to be a tuple of exception classes")
    seeds = getattr(module, "SEEDS", [])
    if not all(isinstance(s, bytes) for s in seeds):
        raise TypeError(f"{path.name}: expected SEEDS to be a list of bytes")
    return module


def signature(exc: BaseException) -> str:
    """What makes two crashes the same: exception type and the innermost frame inside the repository."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename != __file__]
    root = str(FUZZ_DIR.parent)
    inner = [f for f in frames if f.filename.startswith(root)] or frames
    where = f"{Path(inner[-1].filename).name}:{inner[-1].lineno}" if inner else "?"
    return f"{type(exc).__name__} at {where}"


class Checker:
    """Calls a target on one input; records an unexpected exception as a crash (saved once per signature)."""

    def __init__(self, name: str, module: ModuleType, crash_dir: Path = CRASH_DIR) -> None:
        self.name = name
        self.target: Callable[[bytes], None] = module.TARGET
        self.expected: tuple[type[BaseException], ...] = getattr(module, "EXPECTED", ())
        self.crash_dir = crash_dir
        self.report = Report(name)

    def __call__(self, data: bytes) -> None:
        """Run one input."""
        self.report.runs += 1
        try:
            self.target(data)
        except self.expected:
            pass
        except Exception as exc:  # noqa: BLE001 - every other exception is what we are looking for
            self.crash(data, exc)

    def crash(self, data: bytes, exc: BaseException) -> None:
        """Save the input (first one per signature) and its traceback under the crash folder."""
        sig = signature(exc)
        if sig in self.report.crashes:
            return
        self.crash_dir.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha1(data).hexdigest()[:16]
        slug = re.sub(r"[^\w.-]+", "_", sig)[:80]
        path = self.crash_dir / f"{self.name}-{slug}-{digest}.bin"
        path.write_bytes(data)
        path.with_suffix(".txt").write_text("".join(traceback.format_exception(exc)))
        self.report.crashes[sig] = path


# -- the random engine: seeded mutations, deterministic for a given seed -----------------------------------
def mutate(rng: random.Random, data: bytes, pool: list[bytes]) -> bytes:
    """One to four random edits of ``data``: flip, insert, delete, repeat, splice, truncate, tokens."""
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(9)
        pos = rng.randint(0, len(buf))
        if op == 0 and buf:
            i = rng.randrange(len(buf))
            buf[i] ^= 1 << rng.randrange(8)
        elif op == 1:
            buf[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif op == 2 and buf:
            del buf[pos:pos + rng.randint(1, 16)]
        elif op == 3 and buf:
            start = rng.randrange(len(buf))
            chunk = buf[start:start + rng.randint(1, 16)]
            buf[pos:pos] = chunk * rng.randint(2, 64)
        elif op == 4 and pool:
            other = rng.choice(pool)
            cut = rng.randint(0, len(other))
            buf[pos:] = other[cut:]
        elif op == 5:
            del buf[pos:]
        elif op == 6:
            buf[pos:pos] = rng.choice(TOKENS)
        elif op == 7 and buf:
            i = rng.randrange(len(buf))
            buf[i] = rng.choice(b"0123456789[]{}\"'=,.\n\\-+eE \x00\xff")
        else:
            buf[pos:pos] = rng.choice(TOKENS) * rng.randint(1, 300)
    return bytes(buf[:MAX_INPUT])


def inputs(seeds: list[bytes], runs: int, seed: int) -> Iterator[bytes]:
    """The seeds, then mutants of the seeds and of earlier mutants (a small evolving pool)."""
    rng = random.Random(seed)
    pool = list(seeds) or [b""]
    n = 0
    for s in seeds[:runs]:
        n += 1
        yield s
    while n < runs:
        parent = rng.choice(pool)
        child = mutate(rng, parent, pool)
        if len(pool) < 256:
            pool.append(child)
        elif rng.random() < 0.05:
            pool[rng.randrange(len(seeds), len(pool)) if len(pool) > len(seeds) else 0] = child
        n += 1
        yield child


def run_random(path: Path, runs: int, seed: int = 0, crash_dir: Path = CRASH_DIR) -> Report:
    """Run a target in this process on ``runs`` seeded inputs."""
    module = load(path)
    checker = Checker(path.stem.removeprefix("fuzz_"), module, crash_dir)
    t0 = time.perf_counter()
    for data in inputs(list(getattr(module, "SEEDS", [])), runs, seed):
        checker(data)
    checker.report.seconds = time.perf_counter() - t0
    return checker.report


# -- the atheris engine: one child process per target ------------------------------------------------------
def run_atheris(path: Path, runs: int, seed: int = 0, crash_dir: Path = CRASH_DIR) -> Report:
    """Run a target under atheris (libFuzzer) in a child process; read back its summary."""
    name = path.stem.removeprefix("fuzz_")
    with tempfile.TemporaryDirectory(prefix=f"fuzz-{name}-") as tmp:
        summary = Path(tmp) / "summary.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(path), "--runs", str(runs),
               "--seed", str(seed), "--summary", str(summary), "--crash-dir", str(crash_dir)]
        t0 = time.perf_counter()
        env = dict(os.environ, TMPDIR=tmp)  # the child's corpus and scratch files go where this removes them
        proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace", env=env)
        seconds = time.perf_counter() - t0
        report = Report(name, engine="atheris", seconds=seconds)
        done = re.findall(r"^Done (\d+) runs in", proc.stderr, re.M)
        if summary.exists():
            data = json.loads(summary.read_text())
            report.runs = int(data["runs"])
            report.crashes = {k: Path(v) for k, v in data["crashes"].items()}
        if done:
            report.runs = int(done[-1])
        if proc.returncode != 0 or not done:
            report.error = f"exit {proc.returncode}: " + "\n".join(proc.stderr.splitlines()[-15:])
        return report


def child(path: Path, runs: int, seed: int, summary: Path, crash_dir: Path) -> None:
    """In the child: instrument edged, load the target and hand it to libFuzzer (which exits when done)."""
    import atheris

    with atheris.instrument_imports(include=["edged"]):
        module = load(path)
    checker = Checker(path.stem.removeprefix("fuzz_"), module, crash_dir)
    corpus = Path(tempfile.mkdtemp(prefix="corpus-"))
    for i, s in enumerate(getattr(module, "SEEDS", [])):
        (corpus / f"seed-{i}").write_bytes(s[:MAX_INPUT])

    def save() -> None:
        summary.write_text(json.dumps({"runs": checker.report.runs,
                                       "crashes": {k: str(v) for k, v in checker.report.crashes.items()}}))

    def one(data: bytes) -> None:
        before = len(checker.report.crashes)
        checker(data)
        if len(checker.report.crashes) != before or checker.report.runs % 10_000 == 0:
            save()

    save()
    atheris.Setup([sys.argv[0], f"-runs={runs}", f"-seed={seed or 1}", f"-max_len={MAX_INPUT}",
                   "-rss_limit_mb=4096", str(corpus)], one)
    atheris.Fuzz()


def main(argv: list[str] | None = None) -> int:
    """Run the targets; exit 1 when any crashed (or the harness failed), else 0."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("names", nargs="*", help="targets to run (default: every fuzz/fuzz_*.py)")
    p.add_argument("--runs", type=int, default=int(os.environ.get("FUZZ_RUNS", DEFAULT_RUNS)),
                   help="inputs per target (default: $FUZZ_RUNS or 1,000,000)")
    p.add_argument("--engine", choices=["auto", "atheris", "random"], default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--crash-dir", type=Path, default=CRASH_DIR)
    p.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--summary", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(args.child, args.runs, args.seed, args.summary, args.crash_dir)
        return 0
    engine = args.engine
    if engine == "auto":
        engine = "atheris" if importlib.util.find_spec("atheris") is not None else "random"
    run = run_atheris if engine == "atheris" else run_random
    failed = False
    for path in discover(args.names):
        report = run(path, args.runs, args.seed, args.crash_dir)
        print(report.line(), flush=True)
        failed |= bool(report.crashes or report.error)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
