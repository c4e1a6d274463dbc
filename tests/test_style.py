"""House style that a reviewer would otherwise check by hand: docstrings, type hints, .pyx thread headers."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCES = sorted(p for d in ("edged", "drivers", "bench") for p in (ROOT / d).rglob("*.py"))


def public_defs(tree: ast.Module):
    """Module-level and class-level public functions and classes (not nested helpers)."""
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and not node.name.startswith("_"):
            yield node
            if isinstance(node, ast.ClassDef):
                for sub in node.body:
                    if isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef)) and not sub.name.startswith("_"):
                        yield sub


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_docstrings_and_type_hints(path: Path) -> None:
    tree = ast.parse(path.read_text(), str(path))
    problems = []
    if not ast.get_docstring(tree):
        problems.append("module has no docstring")
    for node in public_defs(tree):
        if not ast.get_docstring(node):
            problems.append(f"line {node.lineno}: {node.name} has no docstring")
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and path.parts[-2] != "bench":
            args = [a for a in node.args.args + node.args.kwonlyargs if a.arg not in ("self", "cls")]
            if node.returns is None or any(a.annotation is None for a in args):
                problems.append(f"line {node.lineno}: {node.name} lacks type hints")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("path", sorted((ROOT / "cext").glob("*.pyx")) + sorted((ROOT / "cext").glob("*.pxi")),
                         ids=lambda p: p.name)
def test_cython_files_say_which_thread_calls_them_and_about_the_gil(path: Path) -> None:
    head = path.read_text()[:3000].lower()
    assert re.search(r"thread", head) and re.search(r"gil", head), \
        f"{path.name}: the header must say which thread calls it and whether it runs without the GIL"
