"""House style that a reviewer would otherwise check by hand: docstrings, type hints, .pyx thread headers.

Rules (from the developers' brief):
- every module, class and public function or method in edged/ and drivers/ has a docstring whose
  summary is one line (a longer text follows after a blank line); bench/ scripts have docstrings;
- public functions in edged/ and drivers/ have type hints on every argument and the return;
- every cext/*.pyx and *.pxi starts with a header (the comments and docstring before any code)
  that names the thread(s) calling it (``Thread:`` or ``Threads:``) and says whether it runs
  without the GIL.
Each failure lists every offender of one file as ``path:line: name: problem``.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Iterator

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCES = sorted(p for d in ("edged", "drivers", "bench") for p in (ROOT / d).rglob("*.py"))
CYTHON = sorted((ROOT / "cext").glob("*.pyx")) + sorted((ROOT / "cext").glob("*.pxi"))
Def = ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef


def public_defs(body: list[ast.stmt], prefix: str = "") -> Iterator[tuple[str, Def]]:
    """Public classes and functions of a module, and the public methods and classes inside public classes.

    Functions nested in functions are helpers, not API, and are not listed.
    """
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and not node.name.startswith("_"):
            yield prefix + node.name, node
            if isinstance(node, ast.ClassDef):
                yield from public_defs(node.body, f"{prefix}{node.name}.")


def summary_problem(node: ast.Module | Def) -> str | None:
    """What is wrong with a docstring's summary line, or None when it is a one-line summary."""
    raw = ast.get_docstring(node, clean=False)
    if raw is None or not raw.strip():
        return "has no docstring"
    lines = raw.split("\n")
    if not lines[0].strip():
        return "docstring starts with an empty line (put the one-line summary right after the quotes)"
    if len(lines) > 1 and lines[1].strip():
        return "docstring summary runs over more than one line (one line, then a blank line, then details)"
    return None


def missing_hints(node: ast.FunctionDef | ast.AsyncFunctionDef) -> list[str]:
    """The arguments (and ``return``) of a function that lack a type hint."""
    args = node.args
    every = args.posonlyargs + args.args + args.kwonlyargs + [a for a in (args.vararg, args.kwarg) if a]
    out = [a.arg for a in every if a.annotation is None and a.arg not in ("self", "cls")]
    if node.returns is None:
        out.append("return")
    return out


def problems_of(path: Path, root: Path = ROOT) -> list[str]:
    """Every style problem of one Python file, as ``path:line: name: problem``."""
    rel = path.relative_to(root)
    tree = ast.parse(path.read_text(), str(path))
    out = []
    core = rel.parts[0] in ("edged", "drivers")  # bench/ scripts: a docstring, of any shape, is enough

    def check(node: ast.Module | Def) -> str | None:
        problem = summary_problem(node)
        return problem if core or problem == "has no docstring" else None

    problem = check(tree)
    if problem:
        out.append(f"{rel}:1: module {problem}")
    for name, node in public_defs(tree.body):
        problem = check(node)
        if problem:
            out.append(f"{rel}:{node.lineno}: {name} {problem}")
        if core and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            lacking = missing_hints(node)
            if lacking:
                out.append(f"{rel}:{node.lineno}: {name} lacks type hints for {', '.join(lacking)}")
    return out


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_docstrings_and_type_hints(path: Path) -> None:
    """Module, public classes and functions: a one-line docstring summary; public functions: type hints."""
    problems = problems_of(path)
    assert not problems, "style problems:\n" + "\n".join(problems)


def cython_header(text: str) -> str:
    """The leading comment lines and module docstring of a .pyx/.pxi, up to the first line of code."""
    lines = text.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        stripped = lines[i].strip()
        if not stripped or stripped.startswith("#"):
            out.append(stripped)
            i += 1
            continue
        quote = stripped[:3]
        if quote in ('"""', "'''"):
            out.append(stripped)
            closed = stripped.count(quote) >= 2
            i += 1
            while not closed and i < len(lines):
                out.append(lines[i])
                closed = quote in lines[i]
                i += 1
            continue
        break
    return "\n".join(out)


def cython_header_problems(path: Path) -> list[str]:
    """What the header of one Cython file lacks."""
    head = cython_header(path.read_text())
    out = []
    if not re.search(r"\bThreads?:", head):
        out.append("the header does not name the thread that calls it (a 'Thread:' or 'Threads:' line)")
    if not re.search(r"\bGIL\b|\bnogil\b", head, re.IGNORECASE):
        out.append("the header does not say whether it runs without the GIL")
    return [f"cext/{path.name}:1: {p}" for p in out]


@pytest.mark.parametrize("path", CYTHON, ids=lambda p: p.name)
def test_cython_files_say_which_thread_calls_them_and_about_the_gil(path: Path) -> None:
    """The header before any code names the calling thread(s) and the GIL (not a mention deep in the code)."""
    problems = cython_header_problems(path)
    assert not problems, "\n".join(problems)


# -- the checks themselves ---------------------------------------------------------------------------------
def _problems_of_source(tmp_path: Path, source: str) -> list[str]:
    target = tmp_path / "edged" / "mod.py"
    target.parent.mkdir()
    target.write_text(source)
    return [p.split(": ", 1)[1] for p in problems_of(target, tmp_path)]


def test_the_docstring_check_finds_each_kind_of_offender(tmp_path: Path) -> None:
    """Missing, wrapped and late-starting docstrings, missing hints; private and nested helpers are exempt."""
    source = '''"""A module."""


def good(x: int) -> int:
    """One line."""
    def nested(y):
        return y
    return x


def bare(x: int) -> int:
    return x


def wraps(x) -> None:
    """A summary that
    wraps onto a second line."""


class Thing:
    """A thing.

    Details after a blank line are fine.
    """

    def method(self) -> None:
        """
        Summary on the second line."""

    def _private(self):
        pass

    class Inner:
        pass
'''
    assert _problems_of_source(tmp_path, source) == [
        "bare has no docstring",
        "wraps docstring summary runs over more than one line (one line, then a blank line, then details)",
        "wraps lacks type hints for x",
        "Thing.method docstring starts with an empty line (put the one-line summary right after the quotes)",
        "Thing.Inner has no docstring",
    ]


@pytest.mark.parametrize("text, ok", [
    ('# cython: boundscheck=False\n"""Codec.\n\nThread: the asyncio thread, with the GIL.\n"""\nimport x\n', True),
    ("# Part of x.\n# Threads: a cycle thread, nogil.\n\nfrom libc cimport y\n", True),
    ('"""Codec."""\n# Thread: asyncio.\ndef f():\n    pass  # runs without the GIL\n', False),
    ("def f():\n    pass\n# Thread: asyncio, holds the GIL\n", False),
])
def test_the_cython_header_check_reads_only_the_header(tmp_path: Path, text: str, ok: bool) -> None:
    """Words in the code below the header do not count."""
    path = tmp_path / "x.pyx"
    path.write_text(text)
    assert (cython_header_problems(path) == []) is ok
