"""Write a benchmark's results into its section of BENCHMARKS.md (whole section, or one subsection per command)."""
from __future__ import annotations

from pathlib import Path

PATH = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"


def _split(text: str, heading: str) -> tuple[str, str, str]:
    """(before, the section, after) of a ``## `` section; an absent section is empty, at the end."""
    start = text.find(heading + "\n")
    if start < 0:
        return text.rstrip("\n") + "\n\n", "", ""
    nxt = text.find("\n## ", start + len(heading))
    return text[:start], text[start:nxt + 1 if nxt >= 0 else len(text)], (text[nxt + 1:] if nxt >= 0 else "")


def replace_section(heading: str, block: str, path: Path = PATH) -> None:
    """Replace (or add) the section under ``heading`` (a ``## `` line) with ``block``."""
    before, _, after = _split(path.read_text() if path.exists() else "# Benchmarks\n", heading)
    path.write_text(before + block.rstrip("\n") + "\n" + ("\n" + after if after else ""))


def put_run(heading: str, cmd: str, text: str, notes: str | None = None, path: Path = PATH) -> None:
    """Replace (or add) the ``### `cmd``` subsection of a section, keeping the runs of other commands; ``notes``
    replaces the text between the heading and the first subsection when given."""
    before, section, after = _split(path.read_text() if path.exists() else "# Benchmarks\n", heading)
    head, _, _ = section.partition("\n### ")
    runs: dict[str, str] = {}
    for chunk in section.split("\n### ")[1:]:
        runs[chunk.split("\n", 1)[0]] = "### " + chunk.rstrip("\n") + "\n"
    runs[f"`{cmd}`"] = f"### `{cmd}`\n\n{text.strip()}\n"
    intro = f"{heading}\n\n{notes.strip()}\n" if notes is not None else (head.rstrip("\n") + "\n" if head else
                                                                       f"{heading}\n")
    body = intro + "\n" + "\n".join(runs.values())
    path.write_text(before + body + ("\n" + after if after else ""))
