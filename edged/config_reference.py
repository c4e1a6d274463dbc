"""List every config key the code reads (by table pattern) and compare it with docs/configuration.md."""
from __future__ import annotations

import argparse
import re
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, Callable, Iterable, Sequence

from edged import schema
from edged.errors import ConfigError, ConfigIssue
from edged.schema import Section

NAME = "<name>"
PIN = "<pin>"
ROOT_HEADING = "Top-level tables"

# Collections whose entries select an implementation, and the key that selects it.
DISCRIMINATORS = {"device": "driver", "sink": "type"}

# Modules that implement one driver / sink type: a key is specific to the implementation when
# one of these modules is on the stack while the key is read.
PLUGIN_MODULES: dict[str, tuple[str, ...]] = {
    "device": ("edged.drivers",),
    "sink": ("edged.sinks",),
}
# Modules that dispatch to plugins: keys they read are common to every implementation.
CORE_MODULES = frozenset({"edged.sinks.config", "edged.sinks.base"})

# Tables whose keys are the pin names of the block's type (documented with the block types).
PIN_TABLES = frozenset({"task.<name>.block.<name>.in", "task.<name>.block.<name>.out",
                        "task.<name>.block.<name>.safe"})


@dataclass(frozen=True, order=True)
class TableRef:
    """A table pattern such as ``device.<name>.tag.<name>``, optionally for one implementation.

    ``kind_key``/``kind`` say which implementation the keys belong to, e.g. ``driver``/``modbus``;
    both are empty for keys that every implementation reads. The root table has pattern "".
    """

    pattern: str
    kind_key: str = ""
    kind: str = ""

    def heading(self) -> str:
        """The markdown heading text (without ``### ``) that documents this table."""
        if not self.pattern:
            return ROOT_HEADING
        head = f"[{self.pattern}]"
        return f'{head} {self.kind_key} = "{self.kind}"' if self.kind_key else head


KeyIndex = dict[TableRef, set[str]]
# The defaults the code passes for a key (every distinct one seen), ``REQUIRED`` for a required key.
DefaultIndex = dict[tuple[TableRef, str], list[Any]]
REQUIRED = schema._REQUIRED  # the sentinel Section getters receive for a required key
_NOT_READING = object()


@dataclass(frozen=True)
class DocRow:
    """One key row of the reference: its table, key, the text of its Default column and its line number."""

    ref: TableRef
    key: str
    default: str
    line: int

_HEADING = re.compile(r'^\[(?P<pattern>[^\]\s]+)\]'
                      r'(?:\s+(?P<kind_key>\w+)\s*=\s*(?P<kinds>"[^"]+"(?:\s*(?:,|or)\s*"[^"]+")*))?'
                      r'(?:\s+[\u2014-]\s.*)?$')
_ROW_KEY = re.compile(r"^\|\s*`(?P<key>[^`]+)`\s*\|")


def parse_heading(text: str) -> list[TableRef]:
    """The tables a ``###`` heading documents (none when it is not a table heading).

    Forms: ``Top-level tables``, ``[cell]``, ``[device.<name>] driver = "modbus"``, and for keys
    several types share, ``[sink.<name>] type = "mqtt" or "sparkplug"``; a title may follow after
    `` — `` (an em dash or ``-`` between spaces).
    """
    text = text.strip()
    if text == ROOT_HEADING:
        return [TableRef("")]
    m = _HEADING.match(text)
    if m is None:
        return []
    if not m["kind_key"]:
        return [TableRef(m["pattern"])]
    return [TableRef(m["pattern"], m["kind_key"], kind) for kind in re.findall(r'"([^"]+)"', m["kinds"])]


def parse_doc(text: str) -> KeyIndex:
    """Keys documented in the reference: the backticked first column of the table under each table heading."""
    index: KeyIndex = {}
    for ref in doc_tables(text):
        index.setdefault(ref, set())
    for row in doc_rows(text):
        index[row.ref].add(row.key)
    return index


def doc_tables(text: str) -> list[TableRef]:
    """Every table the reference has a heading for (even one without rows)."""
    out: list[TableRef] = []
    for line in text.splitlines():
        if line.startswith("###") and not line.startswith("####"):
            out += parse_heading(line[3:])
    return out


def doc_rows(text: str) -> list[DocRow]:
    """Every key row under a table heading, in order (a row under a heading for two types counts for each)."""
    rows: list[DocRow] = []
    current: list[TableRef] = []
    header: list[str] = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            current = parse_heading(line[level:]) if level == 3 else []
            header = []
            continue
        if not current:
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.strip().startswith("|") else []
        if cells and cells[0] == "Key":
            header = [c.lower() for c in cells]
            continue
        m = _ROW_KEY.match(line.strip())
        if m:
            column = header.index("default") if "default" in header else -1
            default = cells[column] if 0 <= column < len(cells) else ""
            rows += [DocRow(ref, m["key"].strip(), default, number) for ref in current]
    return rows


def duplicate_rows(rows: Iterable[DocRow]) -> list[str]:
    """Keys documented twice under the same table heading, with the lines of both rows."""
    seen: dict[tuple[TableRef, str], DocRow] = {}
    out = []
    for row in rows:
        first = seen.setdefault((row.ref, row.key), row)
        if first is not row:
            out.append(f"{row.ref.heading()}: `{row.key}` is listed twice (lines {first.line} and {row.line})")
    return out


def doc_defaults(text: str) -> list[Any] | None:
    """The values a Default column states: [REQUIRED], its TOML literals in backticks, or None for prose.

    A default that depends on another key lists each value, e.g. "`1883`, or `8883` with TLS".
    """
    text = text.strip()
    if text.lower().startswith("required"):
        return [REQUIRED]
    if not text.startswith("`"):
        return None
    out = []
    for literal in re.findall(r"`([^`]*)`", text):
        try:
            out.append(tomllib.loads(f"v = {literal}")["v"])
        except tomllib.TOMLDecodeError:
            continue  # a key name or other code in the prose
    return out or None


def _same(code: Any, doc: Any) -> bool:
    if code is REQUIRED or doc is REQUIRED:
        return code is doc
    if isinstance(code, bool) or isinstance(doc, bool):
        return code is doc
    if isinstance(code, (int, float)) and isinstance(doc, (int, float)):
        return float(code) == float(doc)
    return bool(code == doc)


def _shown(value: Any) -> str:
    if value is REQUIRED:
        return "required"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, str):
        return f'`"{value}"`'
    return f"`{value:g}`" if isinstance(value, float) else f"`{value}`"


def wrong_defaults(code: DefaultIndex, rows: Iterable[DocRow]) -> list[str]:
    """Rows whose Default differs from the default the code passes when it reads the key.

    Compared only where both sides are definite: the code passed one default (not None, the same
    on every read) and the doc states "required" or a literal in backticks (prose such as "the
    cell name" is not checked, nor is a key whose default the code computes).
    """
    out = []
    for row in rows:
        if row.key == PIN:
            continue  # pins have the defaults of their block type (checked with the block-type table)
        seen = [d for d in code.get((row.ref, row.key), []) if d is not None]
        distinct = {repr(d) if d is not REQUIRED else "<required>" for d in seen}
        if len(distinct) != 1 or not isinstance(seen[0], (bool, int, float, str)) and seen[0] is not REQUIRED:
            continue
        stated = doc_defaults(row.default)
        if stated is None:
            if seen[0] is REQUIRED:
                out.append(f"{row.ref.heading()}: `{row.key}` is required, the reference says {row.default!r} "
                           f"(line {row.line})")
            continue
        if not any(_same(seen[0], d) for d in stated):
            out.append(f"{row.ref.heading()}: `{row.key}` defaults to {_shown(seen[0])} in the code, the reference "
                       f"says {row.default!r} (line {row.line})")
    return out


class KeyRecorder:
    """While active, records every key the config code asks a Section for, by table pattern."""

    def __init__(self) -> None:
        self.index: KeyIndex = {}
        self.defaults: DefaultIndex = {}
        self._pending: Any = _NOT_READING
        self._collections: set[str] = set()
        self._data: dict[str, Any] = {}
        self._saved: tuple[Callable[..., Any] | None, Any] | None = None

    def __enter__(self) -> "KeyRecorder":
        recorder = self
        original = Section.sections
        original_raw = Section.raw
        self._saved = (Section.recorder, original, original_raw)

        def sections(section: Section, key: str) -> dict[str, Section]:
            recorder._collections.add(section.path_of(key))
            return original(section, key)

        def raw(section: Section, key: str, default: Any = REQUIRED) -> Any:
            recorder._pending = default  # read by _record, which raw calls
            try:
                return original_raw(section, key, default)
            finally:
                recorder._pending = _NOT_READING

        Section.recorder = self._record
        Section.sections = sections  # type: ignore[method-assign]
        Section.raw = raw  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._saved is not None
        Section.recorder, Section.sections, Section.raw = self._saved  # type: ignore[method-assign]
        self._saved = None

    def load(self, data: dict[str, Any], file: str, base_dir: Path | None = None) -> list[ConfigIssue]:
        """Validate one parsed cell document while recording; return its config issues (if any)."""
        from edged.cell import parse_cell

        self._data = data
        self._collections = set()
        try:
            parse_cell(data, file, base_dir=base_dir)
        except ConfigError as exc:
            return exc.issues
        return []

    # -- recording ----------------------------------------------------------
    def _record(self, path: str, key: str) -> None:
        ref = self.table_ref(path, sys._getframe(1))
        name = PIN if ref.pattern in PIN_TABLES else key
        self.index.setdefault(ref, set()).add(name)
        if self._pending is not _NOT_READING:
            seen = self.defaults.setdefault((ref, name), [])
            if not any(d is self._pending or type(d) is type(self._pending) and d == self._pending for d in seen):
                seen.append(self._pending)

    def _named(self, path: str) -> list[tuple[str, str, str]]:
        """(collection segment, name, concrete path of the named table) for each name in a path."""
        out = []
        segs = path.split(".") if path else []
        for i in range(1, len(segs)):
            if ".".join(segs[:i]) in self._collections:
                out.append((segs[i - 1], segs[i], ".".join(segs[: i + 1])))
        return out

    def pattern(self, path: str) -> str:
        """Replace the user-chosen names in a concrete dotted path by ``<name>``."""
        segs = path.split(".") if path else []
        out = list(segs)
        for i in range(1, len(segs)):
            if ".".join(segs[:i]) in self._collections:
                out[i] = NAME
        return ".".join(out)

    def table_ref(self, path: str, frame: FrameType | None) -> TableRef:
        """The table a key read at ``path`` belongs to, given the stack that reads it."""
        pattern = self.pattern(path)
        modules = _stack_modules(frame)
        for collection, _name, concrete in reversed(self._named(path)):
            kind_key = DISCRIMINATORS.get(collection)
            if kind_key is None:
                continue
            if not any(_is_plugin(m, collection) for m in modules):
                return TableRef(pattern)
            kind = _lookup(self._data, concrete).get(kind_key)
            return TableRef(pattern, kind_key, kind) if isinstance(kind, str) else TableRef(pattern)
        return TableRef(pattern)


def _stack_modules(frame: FrameType | None) -> list[str]:
    out = []
    while frame is not None:
        out.append(str(frame.f_globals.get("__name__", "")))
        frame = frame.f_back
    return out


def _is_plugin(module: str, collection: str) -> bool:
    if module in CORE_MODULES:
        return False
    return any(module == p or module.startswith(p + ".") for p in PLUGIN_MODULES.get(collection, ()))


def _lookup(data: dict[str, Any], path: str) -> dict[str, Any]:
    node: Any = data
    for seg in path.split("."):
        node = node.get(seg) if isinstance(node, dict) else None
    return node if isinstance(node, dict) else {}


def collect(files: Iterable[str | Path]) -> tuple[KeyIndex, list[ConfigIssue]]:
    """Load cell files with recording on: the keys read per table, and any config issues found."""
    index, _, issues = collect_with_defaults(files)
    return index, issues


def collect_with_defaults(files: Iterable[str | Path]) -> tuple[KeyIndex, DefaultIndex, list[ConfigIssue]]:
    """Like ``collect``, and also the defaults the code passed for each key it read."""
    issues: list[ConfigIssue] = []
    with KeyRecorder() as rec:
        for file in files:
            path = Path(file)
            try:
                data = tomllib.loads(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, RecursionError) as exc:
                issues.append(ConfigIssue(str(file), "(file)", f"cannot load: {exc}"))
                continue
            issues.extend(rec.load(data, str(file), base_dir=path.resolve().parent))
    return rec.index, rec.defaults, issues


def compare(code: KeyIndex, doc: KeyIndex) -> tuple[list[tuple[TableRef, str]], list[tuple[TableRef, str]]]:
    """(keys the code reads that the doc lacks, keys the doc lists that the code never reads)."""
    undocumented = sorted((t, k) for t, keys in code.items() for k in keys if k not in doc.get(t, set()))
    stale = sorted((t, k) for t, keys in doc.items() for k in keys if k not in code.get(t, set()))
    return undocumented, stale


def skeleton(missing: Iterable[tuple[TableRef, str]]) -> str:
    """Markdown headings and empty table rows for keys the reference lacks."""
    out: list[str] = []
    last: TableRef | None = None
    for ref, key in sorted(missing):
        if ref != last:
            out += ["", f"### {ref.heading()}", "", "| Key | Type | Default | Meaning |", "|---|---|---|---|"]
            last = ref
        out.append(f"| `{key}` |  |  |  |")
    return "\n".join(out).lstrip("\n")


BLOCKS_BEGIN = "<!-- block types: generated by python -m edged.config_reference --blocks -->"
BLOCKS_END = "<!-- end of block types -->"


def _pin_text(pin: Any) -> str:
    from edged.control.blocks_catalog import HUGE

    text = f"`{pin.name}` {pin.kind}"
    if pin.const_only:
        text += " (constant)"
    if pin.default is not None:
        if isinstance(pin.default, bool):
            shown = str(pin.default).lower()
        elif abs(pin.default) >= HUGE:
            shown = "unlimited"
        else:
            shown = f"{pin.default:g}"
        text += f" = {shown}"
    return text


def block_types_markdown() -> str:
    """The table of control block types and their pins, from the block catalog (for the reference)."""
    from edged.control.blocks_catalog import BLOCK_TYPES

    rows = [BLOCKS_BEGIN, "", "| Type | Inputs (`= default`: optional) | Outputs | What it does |", "|---|---|---|---|"]
    for bt in BLOCK_TYPES.values():
        if bt.extensible:
            first, last = bt.inputs[0], bt.inputs[-1]
            ins = f"`{first.name}`..`{last.name}` {first.kind} (at least two)"
        else:
            ins = ", ".join(_pin_text(p) for p in bt.inputs)
        outs = ", ".join(f"`{p.name}` {p.kind}" for p in bt.outputs)
        rows.append(f"| `{bt.name}` | {ins} | {outs} | {bt.summary.replace('|', '&#124;')} |")
    rows += ["", BLOCKS_END]
    return "\n".join(rows)


def doc_block_types(text: str) -> str | None:
    """The block-type section of the reference, between its markers (None when missing)."""
    start, end = text.find(BLOCKS_BEGIN), text.find(BLOCKS_END)
    if start < 0 or end < start:
        return None
    return text[start:end + len(BLOCKS_END)]


def format_index(index: KeyIndex) -> str:
    """One line per table heading with its keys, sorted."""
    return "\n".join(f"### {t.heading()}: {', '.join(sorted(keys))}" for t, keys in sorted(index.items()))


def main(argv: Sequence[str] | None = None) -> int:
    """Print the keys the code reads for the given cells; with --doc, list the differences (exit 1 if any)."""
    p = argparse.ArgumentParser(prog="python -m edged.config_reference", description=__doc__)
    p.add_argument("files", nargs="*", metavar="CELL.toml", help="cell files that exercise the keys")
    p.add_argument("--doc", metavar="configuration.md", help="compare with this configuration reference")
    p.add_argument("--blocks", action="store_true", help="print the block-type table of the reference and exit")
    args = p.parse_args(argv)
    if args.blocks:
        print(block_types_markdown())
        return 0
    if not args.files:
        p.error("expected at least one cell file (or --blocks)")
    index, defaults, issues = collect_with_defaults(args.files)
    for issue in issues:
        print(str(issue), file=sys.stderr)
    print(format_index(index))
    if args.doc is None:
        return 2 if issues else 0
    text = Path(args.doc).read_text(encoding="utf-8")
    undocumented, stale = compare(index, parse_doc(text))
    rows = doc_rows(text)
    duplicates, wrong = duplicate_rows(rows), wrong_defaults(defaults, rows)
    for ref, key in undocumented:
        print(f"undocumented: {ref.heading()}: {key}")
    for ref, key in stale:
        print(f"stale (documented, never read): {ref.heading()}: {key}")
    for line in duplicates:
        print(f"duplicate: {line}")
    for line in wrong:
        print(f"wrong default: {line}")
    if undocumented:
        print("\nRows to fill in and add to the reference:")
        print(skeleton(undocumented))
    return 2 if issues else 1 if undocumented or stale or duplicates or wrong else 0


if __name__ == "__main__":
    sys.exit(main())
